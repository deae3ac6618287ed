"""Input files from a hostile world: only regular files are read (never a FIFO, a device or a socket), reads
are bounded by the size the file had when opened, and paths that are not valid UTF-8 can always be shown."""

from __future__ import annotations

import codecs
import errno
import os
import stat
import unicodedata
from pathlib import Path

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


DISPLAY_ERRORS = "cellsearch-display"  # codec error handler for text files the app writes


def _escape_unencodable(exc: UnicodeError) -> tuple[str, int]:
    """Lone surrogates (bytes of a file name that is not UTF-8) written as \\xNN, any other as \\uXXXX."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    bad = exc.object[exc.start:exc.end]
    text = "".join(f"\\x{ord(ch) - 0xDC00:02x}" if 0xDC80 <= ord(ch) <= 0xDCFF else f"\\u{ord(ch):04x}"
                   for ch in bad)
    return text, exc.end


codecs.register_error(DISPLAY_ERRORS, _escape_unencodable)


def display_path(path: str | os.PathLike | bytes) -> str:
    """The path as printable text: bytes that are not UTF-8 (surrogate-escaped by Python) shown as \\xNN."""
    return display_text(os.fsdecode(path))


def display_text(text: str) -> str:
    """Any text made safe to print or write as UTF-8 (lone surrogates from odd file names escaped)."""
    return text.encode("utf-8", DISPLAY_ERRORS).decode("utf-8")


def nfc(name: str) -> str:
    """One spelling for one name: NFC and NFD forms of a class name are the same class."""
    return unicodedata.normalize("NFC", name)


def file_kind(mode: int) -> str:
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def regular_file_problem(path: str | os.PathLike) -> str | None:
    """None for a regular file (after following links), else why it is not one, for a message."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if os.path.islink(path):
            if exc.errno == errno.ELOOP:
                return "a symbolic link loop"
            return "a broken symbolic link (its target does not exist)"
        return f"cannot open ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    return f"{file_kind(mode)}, not a regular file"


def open_regular(path: str | os.PathLike) -> tuple[int, int]:
    """(descriptor, size) of a regular file opened for reading; never blocks on a FIFO. Raises OSError
    with a readable strerror for anything else."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"{file_kind(info.st_mode)}, not a regular file", os.fsdecode(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return fd, info.st_size
    except BaseException:
        os.close(fd)
        raise


def iter_regular_bytes(path: str | os.PathLike, chunk: int = 1 << 20):
    """The bytes of a regular file in chunks, never more than the size it had when opened."""
    fd, size = open_regular(path)
    with os.fdopen(fd, "rb") as handle:
        left = size
        while left > 0:
            block = handle.read(min(chunk, left))
            if not block:
                break
            left -= len(block)
            yield block


def read_regular_bytes(path: str | os.PathLike) -> bytes:
    return b"".join(iter_regular_bytes(path))


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (links resolved) lies inside ``root`` (links resolved)."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(Path(os.path.realpath(root)))
    except (OSError, ValueError):
        return False
