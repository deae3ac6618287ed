"""One rule for every file the app writes from data (cell ids, labels, file names): the text becomes a safe
file-name component, and the target is resolved inside its folder or refused. Names already used in one
write get a suffix, and a file is replaced only by an atomic rename, never written through a link."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path

from cellsearch_gui.core.errors import CellSearchError

MAX_COMPONENT_BYTES = 120  # well under the 255-byte limit, leaving room for a suffix and an extension
RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                  *(f"LPT{i}" for i in range(1, 10))}
_UNSAFE_CHARACTERS = set('/\\<>:"|?*')
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}  # controls, format, surrogates, unassigned


class UnsafePathError(CellSearchError):
    """A target that would land outside its folder."""


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def _truncate_utf8(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def safe_component(text, fallback: str = "unnamed", max_bytes: int = MAX_COMPONENT_BYTES) -> str:
    """``text`` as one file-name component: NFC, no separators, controls, leading dots or underscores (hidden
    or skipped names), no ``.``/``..`` or reserved device names, at most ``max_bytes`` UTF-8 bytes. Text that
    had to change in more than its Unicode form gets a short hash of the original, so two different labels
    never share a component."""
    original = unicodedata.normalize("NFC", str(text))
    cleaned = "".join("_" if c in _UNSAFE_CHARACTERS or unicodedata.category(c) in _UNSAFE_CATEGORIES else c
                      for c in original)
    cleaned = cleaned.lstrip(" ._").rstrip(" .")
    if cleaned.split(".")[0].upper() in RESERVED_NAMES:
        cleaned = "reserved_" + cleaned
    budget = max(8, max_bytes - 9)
    if cleaned and cleaned == original and len(cleaned.encode("utf-8")) <= max_bytes:
        return cleaned
    stem = _truncate_utf8(cleaned, budget).rstrip(" .") or fallback
    return f"{stem}-{short_hash(original)}"


def inside(folder: str | Path, *parts: str) -> Path:
    """``folder/part/...`` with each part made safe, checked to resolve inside ``folder`` (links included)."""
    root = Path(folder).resolve()
    target = Path(folder).joinpath(*(safe_component(p) for p in parts))
    if not target.resolve().is_relative_to(root):
        raise UnsafePathError(f"{target}: refused, it leads outside {root}")
    return target


class SafeWriter:
    """Files written from data into one folder: each name once per writer (a repeat gets ``-2``, ``-3``...),
    parent folders checked to stay inside, and each file placed by an atomic rename, so an existing link at
    the target is replaced, never followed."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.root = self.folder.resolve()
        self._used: set[str] = set()

    def target(self, subfolders: tuple[str, ...], name: str, suffix: str = "") -> Path:
        folder = inside(self.folder, *subfolders)
        suffix = suffix if _SUFFIX.fullmatch(suffix) else ""
        stem = safe_component(name)
        candidate, number = folder / f"{stem}{suffix}", 1
        while str(candidate).casefold() in self._used:  # casefold: case-insensitive file systems too
            number += 1
            candidate = folder / f"{stem}-{number}{suffix}"
        self._used.add(str(candidate).casefold())
        return candidate

    def _place(self, target: Path, write) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(self.root):
            raise UnsafePathError(f"{target}: refused, it leads outside {self.root}")
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=f".part{target.suffix}")
        os.close(handle)
        tmp = Path(name)
        try:
            write(tmp)
            os.replace(tmp, target)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        return target

    def copy(self, src: str | Path, subfolders: tuple[str, ...], name: str, suffix: str = "") -> Path:
        return self._place(self.target(subfolders, name, suffix), lambda tmp: shutil.copy2(src, tmp))

    def save(self, write, subfolders: tuple[str, ...], name: str, suffix: str = "") -> Path:
        """``write(path)`` fills a temporary file that then takes the target's place."""
        return self._place(self.target(subfolders, name, suffix), write)
