"""One writer per project: a lock file naming who holds it, so a second app gets a clear message."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from filelock import FileLock, Timeout

from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.io.atomic import disk_problem


class ProjectLockedError(CellSearchError):
    pass


class ProjectLock:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._lock = FileLock(str(self.folder / ".cellsearch.lock"), timeout=0)
        self._info = self.folder / ".cellsearch.lock.json"

    def acquire(self, purpose: str) -> None:
        try:
            self._lock.acquire()
        except Timeout:
            try:
                holder = json.loads(self._info.read_text())
                who = f"{holder['purpose']} (process {holder['pid']} on {holder['host']})"
            except (OSError, ValueError, KeyError):
                who = "another CellSearch"
            raise ProjectLockedError(f"{self.folder}: the project is in use by {who}; close it there first "
                                     "or open this project read-only") from None
        try:  # only says who holds the lock: a full disk must not stop the work (the message says less)
            self._info.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose}))
        except OSError as exc:
            if disk_problem(exc, self._info, "") is None:
                self._lock.release()
                raise CellSearchError(f"{self.folder}: cannot open the project for writing ({exc})") from None

    def release(self) -> None:
        if self._lock.is_locked:
            self._info.unlink(missing_ok=True)
            self._lock.release()
