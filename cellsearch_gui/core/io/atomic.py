"""Files that are either complete or absent: written beside the target as NAME.part, flushed to disk, then
renamed over it. A crash or an error leaves the previous file (or none), never a half-written one. A full or
read-only disk is one clear message (``DiskError``), not a traceback."""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.io.files import DISPLAY_ERRORS

DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.EIO: "the disk reported an I/O error"}


class DiskError(CellSearchError):
    """A write failed because of the disk (full, read-only, no permission), not because of the data."""


def disk_problem(exc: BaseException, path, what: str) -> DiskError | None:
    """A ``DiskError`` for an OSError caused by the disk; None for other errors."""
    reason = DISK_ERRNOS.get(getattr(exc, "errno", None)) if isinstance(exc, OSError) else None
    if reason is None:
        return None
    advice = "free some space and try again" if exc.errno in (errno.ENOSPC, errno.EDQUOT) \
        else "choose a writable folder"
    return DiskError(f"{path}: cannot {what}: {reason}; nothing half-written was left. {advice[0].upper()}"
                     f"{advice[1:]}")


@contextmanager
def disk_errors(path, what: str):
    """Turn an OSError caused by the disk into one clear ``DiskError``."""
    try:
        yield
    except OSError as exc:
        problem = disk_problem(exc, path, what)
        if problem is None:
            raise
        raise problem from None


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs):
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("errors", DISPLAY_ERRORS)  # a file name that is not UTF-8 is written escaped
    with disk_errors(path, "write the file"):
        path.parent.mkdir(parents=True, exist_ok=True)
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
