"""Files that are either complete or absent: written beside the target as NAME.part, flushed to disk, then
renamed over it. A crash or an error leaves the previous file (or none), never a half-written one."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from cellsearch_gui.core.io.files import DISPLAY_ERRORS


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("errors", DISPLAY_ERRORS)  # a file name that is not UTF-8 is written escaped
    try:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)
