"""ProjectStore: the project's SQLite database (WAL, one transaction per step) with clear errors."""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from cellsearch_gui import __version__
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.project.lock import ProjectLock
from cellsearch_gui.core.project.schema import SCHEMA_VERSION, migrate
from cellsearch_gui.core.types import Cell

DB_NAME = "project.sqlite"
LEGACY_FILE = "project.json"


class ProjectError(CellSearchError):
    pass


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


class ProjectStore:
    """Open with ``open_project``. Writers hold the project lock; read-only stores never write."""

    def __init__(self, folder: Path, db: sqlite3.Connection, readonly: bool, lock: ProjectLock | None):
        self.folder, self.db, self.readonly, self._lock = folder, db, readonly, lock

    # --- transactions with clear errors --------------------------------------------------------------
    @contextmanager
    def write(self, what: str):
        if self.readonly:
            raise ProjectError(f"{self.folder}: opened read-only, cannot {what}")
        try:
            with self.db:
                yield self.db
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if "full" in text:
                raise ProjectError(f"{self.folder}: the disk is full while trying to {what}; nothing of it was "
                                   "saved and the project keeps its last saved state. Free some space and "
                                   "try again") from None
            if "readonly" in text or "read-only" in text:
                raise ProjectError(f"{self.folder}: the folder is read-only, cannot {what}") from None
            raise ProjectError(f"{self.folder}: could not {what} ({exc}); the last saved state is kept") from None

    def close(self) -> None:
        self.db.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> "ProjectStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- settings and sources -----------------------------------------------------------------------
    def get_meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value) -> None:
        with self.write(f"save {key}") as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def add_source(self, role: str, path, pixel_size_um: float | None = None, device: str | None = None) -> None:
        with self.write(f"add {path}") as db:
            db.execute("INSERT INTO sources (role, path, pixel_size_um, device, added_at) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (role, path) DO UPDATE SET pixel_size_um=excluded.pixel_size_um, "
                       "device=excluded.device", (role, str(path), pixel_size_um, device, now()))

    def sources(self, role: str) -> list[dict]:
        rows = self.db.execute("SELECT path, pixel_size_um, device FROM sources WHERE role=? ORDER BY id", (role,))
        return [{"path": p, "pixel_size_um": px, "device": d} for p, px, d in rows]

    # --- cells, labels, runs, predictions ------------------------------------------------------------
    def put_cells(self, cells: list[Cell]) -> None:
        """Cells by id (a cell already stored keeps its row); how a segmented cell was cut stays in cells.csv."""
        rows = [(c.cell_id, c.source_image, c.crop_path, *(c.bbox or (None,) * 4), *(c.centroid or (None, None)),
                 c.area_px, c.mask_rle, c.true_label) for c in cells]
        with self.write(f"save {len(rows)} cells") as db:
            db.executemany("INSERT INTO cells (uid, image_path, crop_path, bbox_x0, bbox_y0, bbox_x1, bbox_y1, "
                           "centroid_x, centroid_y, area_px, mask_rle, folder_label) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uid) DO NOTHING", rows)

    def cells(self) -> list[Cell]:
        out = []
        for row in self.db.execute("SELECT uid, crop_path, image_path, bbox_x0, bbox_y0, bbox_x1, bbox_y1, "
                                   "centroid_x, centroid_y, area_px, mask_rle, folder_label FROM cells ORDER BY id"):
            bbox = None if row[3] is None else tuple(row[3:7])
            centroid = None if row[7] is None else (row[7], row[8])
            out.append(Cell(row[0], row[1], row[2], bbox, centroid, row[9], row[10], row[11]))
        return out

    def set_labels(self, labels: dict[str, str | None], who: str | None = None) -> None:
        stamp, who = now(), who or user()
        with self.write(f"save {len(labels)} label(s)") as db:
            db.executemany("INSERT INTO labels (cell_uid, label, who, at) VALUES (?, ?, ?, ?)",
                           [(uid, label, who, stamp) for uid, label in labels.items()])

    def labels(self) -> dict[str, str]:
        """The latest label of each cell (a cleared label removes it); the history stays in the table."""
        rows = self.db.execute("SELECT cell_uid, label FROM labels WHERE id IN "
                               "(SELECT MAX(id) FROM labels GROUP BY cell_uid)")
        return {uid: label for uid, label in rows if label}

    def label_history(self, uid: str) -> list[tuple[str | None, str, str]]:
        return list(self.db.execute("SELECT label, who, at FROM labels WHERE cell_uid=? ORDER BY id", (uid,)))

    def start_run(self, kind: str, settings: dict) -> int:
        with self.write(f"record the {kind} run") as db:
            cur = db.execute("INSERT INTO runs (kind, started_at, status, settings, app_version) "
                             "VALUES (?, ?, 'running', ?, ?)", (kind, now(), json.dumps(settings), __version__))
            return cur.lastrowid

    def finish_run(self, run_id: int, status: str, provenance: dict | None = None, notes=None,
                   predictions=None) -> None:
        with self.write("save the predictions") as db:
            if predictions:
                db.executemany("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?)",
                               [(run_id, *p) for p in predictions])
            db.execute("UPDATE runs SET finished_at=?, status=?, provenance=?, notes=? WHERE id=?",
                       (now(), status, json.dumps(provenance or {}, default=str), json.dumps(notes or []), run_id))

    def runs(self) -> list[dict]:
        keys = ["id", "kind", "started_at", "finished_at", "status", "app_version"]
        return [dict(zip(keys, r)) for r in self.db.execute(f"SELECT {', '.join(keys)} FROM runs ORDER BY id")]

    def last_finished_run(self, kind: str | None = None) -> dict | None:
        row = self.db.execute("SELECT id, settings, provenance FROM runs WHERE status='finished' "
                              "AND (? IS NULL OR kind=?) ORDER BY id DESC LIMIT 1", (kind, kind)).fetchone()
        if row is None:
            return None
        return {"id": row[0], "settings": json.loads(row[1] or "{}"), "provenance": json.loads(row[2] or "{}")}

    def predictions(self, run_id: int) -> dict[str, tuple[str, float, int]]:
        rows = self.db.execute("SELECT cell_uid, label, entropy, k_used FROM predictions WHERE run_id=?", (run_id,))
        return {uid: (label, entropy, k) for uid, label, entropy, k in rows}

    def counts(self) -> dict:
        one = lambda sql: self.db.execute(sql).fetchone()[0]  # noqa: E731
        return {"schema": one("PRAGMA user_version"), "reference_sources": one(
                    "SELECT COUNT(*) FROM sources WHERE role='reference'"),
                "query_sources": one("SELECT COUNT(*) FROM sources WHERE role='query'"),
                "cells": one("SELECT COUNT(*) FROM cells"), "labelled": len(self.labels()),
                "runs": one("SELECT COUNT(*) FROM runs")}

    def integrity(self) -> str:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro&immutable=1" if readonly else f"file:{path}"
    db = sqlite3.connect(uri, uri=True, timeout=10, check_same_thread=False, isolation_level=None)
    db.isolation_level = ""  # "with db:" commits or rolls back
    try:
        db.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        db.close()
        raise ProjectError(f"{path}: not a readable CellSearch project database ({exc}); it may be damaged. "
                           "Restore it from a backup or start a new project") from None
    if not readonly:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
    return db


def open_project(folder, create: bool = False, readonly: bool = False, purpose: str = "CellSearch",
                 lock: bool = True) -> ProjectStore:
    """Open (or create) a project folder. A writer takes the project lock (``lock=False``: a second
    connection of the process that holds it, e.g. its worker thread); a read-only folder opens read-only."""
    folder = Path(folder)
    path = folder / DB_NAME
    if not path.is_file():
        if not create:
            what = "holds an older project.json: open it in the app to convert it" if (folder / LEGACY_FILE).is_file() \
                else "is not a CellSearch project"
            raise ProjectError(f"{folder}: {what} (no {DB_NAME}); create one with 'cellsearch project new'")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"{folder}: cannot create the project folder ({exc.strerror})") from None
    if not readonly and path.is_file() and not os.access(folder, os.W_OK):
        readonly = True  # a read-only folder (or medium) can still be looked at
    take_lock, lock = lock, None
    if not readonly:
        if not os.access(folder, os.W_OK):
            raise ProjectError(f"{folder}: the folder is read-only; cannot create a project there")
        if take_lock:
            lock = ProjectLock(folder)
            lock.acquire(purpose)
    try:
        db = _connect(path, readonly)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            db.close()
            raise ProjectError(f"{folder}: made by a newer CellSearch (project schema {version}; this version "
                               f"reads up to {SCHEMA_VERSION}). Update CellSearch to open it; the file was not "
                               "changed")
        if version < SCHEMA_VERSION:
            if readonly:
                db.close()
                raise ProjectError(f"{folder}: needs an upgrade of its schema ({version} -> {SCHEMA_VERSION}) "
                                   "but is read-only")
            migrate(db)
        if lock is not None:  # the only writer: a run still marked running was killed
            with db:
                db.execute("UPDATE runs SET status='interrupted' WHERE status='running'")
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return ProjectStore(folder, db, readonly, lock)
