"""Content hashes of files (weights, crops). Only regular files are read, never past their size when opened,
so a FIFO or a link to /dev/zero is an OSError rather than a hang or a memory blow-up."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cellsearch_gui.core.io.files import iter_regular_bytes


def content_key(path: Path) -> str:
    digest = hashlib.sha256()
    for block in iter_regular_bytes(Path(path)):
        digest.update(block)
    return digest.hexdigest()


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    for block in iter_regular_bytes(path, chunk):
        digest.update(block)
    return digest.hexdigest()
