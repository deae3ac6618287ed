"""Paths a project stores: inside the project folder relative to it, outside it absolute, so a project folder
can be moved, copied and opened from any working directory. Projects written before this kept paths as
typed (relative to the working directory of the day, or absolute): those are found again on read."""

from __future__ import annotations

import os
from pathlib import Path

PATHS_META = "paths"  # meta key; PROJECT_RELATIVE once the stored paths follow the rule above
PROJECT_RELATIVE = "project-relative"


def absolute(path: str | Path) -> Path:
    """Absolute and normalised, without following links (so it compares with what the user typed)."""
    return Path(os.path.abspath(os.fspath(path)))


class ProjectPaths:
    """Converts between paths as the app uses them and as the project stores them."""

    def __init__(self, folder: str | Path, relative: bool):
        self.root = absolute(folder)
        self.relative = relative  # False: a project written before paths were project-relative

    def to_stored(self, path: str | Path | None) -> str | None:
        if path is None or path == "":
            return path
        full = absolute(path)
        try:
            return full.relative_to(self.root).as_posix()
        except ValueError:
            return str(full)

    def from_stored(self, text: str | None) -> str | None:
        if text is None or text == "":
            return text
        stored = Path(text)
        if stored.is_absolute():
            if self.relative or stored.exists():
                return text
            return str(self._relocated(stored) or stored)
        if self.relative:
            return str(self.root / stored)
        typed = absolute(stored)  # an older project: relative to the working directory it was used from
        if typed.exists():
            return str(typed)
        return str(self._relocated(stored) or typed)

    def _relocated(self, stored: Path) -> Path | None:
        """An older path into a project folder that has since moved (or is opened from elsewhere): the
        longest tail of it (two parts at least, e.g. crops/x.png) that exists under the project folder."""
        parts = [p for p in stored.parts if p not in ("/", "\\") and not p.endswith((":\\", ":/"))]
        for start in range(len(parts) - 1):
            candidate = self.root.joinpath(*parts[start:])
            if candidate.exists():
                return candidate
        return None
