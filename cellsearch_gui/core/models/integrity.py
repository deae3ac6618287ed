"""Weights are checked before use: the file is hashed at load and compared with the sha256 it must have.

Hashing a 300 MB checkpoint takes about a second, so the hash is remembered in a small table in the weights
folder (``sha256-table.json``), keyed by the resolved path and the file's size, mtime_ns, ctime_ns and
inode: rewriting, replacing or copying a file over it changes at least one of them (the ctime cannot be set
back with ``touch``), and the file is hashed again. The limit: damage below the file system (a failing disk
returning other bytes under unchanged metadata) is not seen by the cached check; ``cellsearch models verify``
always re-reads every byte.

Only regular files are read (a FIFO, a device such as /dev/zero or a folder is refused before it is
opened), in chunks, and never past the size the file had when it was opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

from cellsearch_gui.core.errors import CellSearchError, ChecksumMismatchError

HASH_TABLE = "sha256-table.json"
CHUNK = 1 << 20
MAX_ENTRIES = 256  # the table holds a few dozen checkpoints; older entries are dropped past this


def regular_file_size(path: Path, what: str = "weights file") -> int:
    """The size of ``path``, which must be a readable regular file (symlinks followed); else a clear error."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CellSearchError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise CellSearchError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise CellSearchError(f"{path}: is a folder, not a {what}")
    if not stat.S_ISREG(info.st_mode):
        raise CellSearchError(f"{path}: is not a regular file (a device, pipe or socket); not a {what}")
    return info.st_size


def _signature(path: Path) -> list[int]:
    info = os.stat(path)
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]


def hash_file(path: Path, what: str = "weights file") -> str:
    """sha256 of every byte of a regular file, read in chunks; refuses special files and files that grow
    while being read (no unbounded read)."""
    size = regular_file_size(path, what)
    digest = hashlib.sha256()
    done = 0
    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # replaced between stat and open
                raise CellSearchError(f"{path}: is not a regular file; not a {what}")
            while block := handle.read(min(CHUNK, size + 1 - done)):
                done += len(block)
                if done > size:
                    raise CellSearchError(f"{path}: the {what} grew while it was read; is something writing it?")
                digest.update(block)
    except OSError as exc:
        raise CellSearchError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if done != size:
        raise CellSearchError(f"{path}: the {what} shrank while it was read ({done} of {size} bytes)")
    return digest.hexdigest()


def _read_table(folder: Path) -> dict:
    try:
        table = json.loads((folder / HASH_TABLE).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return table if isinstance(table, dict) else {}


def _write_table(folder: Path, table: dict) -> None:
    """Atomic replace; a folder that cannot be written only means hashing again next time."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".sha256-table.", suffix=".part")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(table, out)
        os.replace(tmp, folder / HASH_TABLE)
    except OSError:
        pass
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def file_sha256(path: Path, table_dir: Path | None, refresh: bool = False) -> str:
    """The sha256 of ``path`` as it is now: from the table in ``table_dir`` when the file's signature is
    unchanged (``refresh``: always read again), else hashed and remembered (``table_dir=None``: no table)."""
    regular_file_size(path)
    table = _read_table(table_dir) if table_dir is not None else {}
    entry = table.get(str(Path(path).resolve()))
    before = _signature(path)
    if (not refresh and isinstance(entry, dict) and entry.get("signature") == before
            and isinstance(entry.get("sha256"), str)):
        return entry["sha256"]
    digest = hash_file(path)
    if _signature(path) != before:
        raise CellSearchError(f"{path}: the weights file changed while it was checked; run it again")
    if table_dir is not None:
        _store_entry(table_dir, table, path, before, digest)
    return digest


def remember_sha256(path: Path, digest: str, table_dir: Path) -> None:
    """Record the hash of a file just written and checked (an import), so its first use does not re-read it."""
    _store_entry(table_dir, _read_table(table_dir), path, _signature(path), digest)


def _store_entry(table_dir: Path, table: dict, path: Path, signature: list[int], digest: str) -> None:
    key = str(Path(path).resolve())
    table.pop(key, None)
    table[key] = {"signature": signature, "sha256": digest}
    while len(table) > MAX_ENTRIES:
        table.pop(next(iter(table)))
    _write_table(table_dir, table)


def damaged_weights_error(path: Path, model_id: str, actual: str, expected: str, downloadable: bool,
                          in_hub_cache: bool = False) -> ChecksumMismatchError:
    """The error for weights whose content is not what was pinned, recorded or downloaded."""
    delete = f"delete {Path(path).resolve()}, then " if in_hub_cache else ""
    download = f"'cellsearch models download {model_id}' or " if downloadable else ""
    return ChecksumMismatchError(
        f"{path}: the weights of '{model_id}' are damaged or were replaced (sha256 {actual[:16]}..., expected "
        f"{expected[:16]}...); nothing was computed with them. Restore them: {delete}run {download}"
        f"'cellsearch models import {model_id} FILE'.")
