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
from cellsearch_gui.core.io.atomic import disk_problem
from cellsearch_gui.core.project.database import (
    DB_NAME,
    ProjectError,
    check_schema,
    connect,
    explain,
    integrity_of,
    set_writer_pragmas,
)
from cellsearch_gui.core.project.lock import ProjectLock
from cellsearch_gui.core.project.paths import PATHS_META, PROJECT_RELATIVE, ProjectPaths
from cellsearch_gui.core.project.schema import SCHEMA_VERSION, migrate
from cellsearch_gui.core.types import Cell

LEGACY_FILE = "project.json"
__all__ = ["DB_NAME", "LEGACY_FILE", "ProjectError", "ProjectStore", "open_project"]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


class ProjectStore:
    """Open with ``open_project``. Writers hold the project lock; read-only stores never write."""

    def __init__(self, folder: Path, db: sqlite3.Connection, readonly: bool, lock: ProjectLock | None,
                 note: str | None = None):
        self.folder, self.db, self.readonly, self._lock = folder, db, readonly, lock
        self.note = note  # how the project was opened, when the user should know (a read-only snapshot)
        self.paths = ProjectPaths(folder, self._get_meta(PATHS_META) == PROJECT_RELATIVE)

    def _read(self, sql: str, params=(), what: str = "read the project") -> list:
        """All rows of a query; a database error becomes one clear message."""
        try:
            return self.db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise explain(self.folder, exc, what, self.db) from None

    # --- transactions with clear errors --------------------------------------------------------------
    @contextmanager
    def write(self, what: str):
        if self.readonly:
            raise ProjectError(f"{self.folder}: opened read-only, cannot {what}")
        try:
            with self.db:
                yield self.db
        except sqlite3.DatabaseError as exc:
            raise explain(self.folder, exc, what, self.db) from None

    def close(self) -> None:
        self.db.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> "ProjectStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- settings and sources -----------------------------------------------------------------------
    def _get_meta(self, key: str, default=None):
        rows = self._read("SELECT value FROM meta WHERE key=?", (key,))
        try:
            return json.loads(rows[0][0]) if rows else default
        except (TypeError, ValueError):
            return default  # a value changed outside CellSearch: as if unset

    def get_meta(self, key: str, default=None):
        return self._get_meta(key, default)

    def set_meta(self, key: str, value) -> None:
        with self.write(f"save {key}") as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def add_source(self, role: str, path, pixel_size_um: float | None = None, device: str | None = None) -> None:
        """Add a source, or update its device and pixel size where new ones are given (None keeps them)."""
        with self.write(f"add {path}") as db:
            db.execute("INSERT INTO sources (role, path, pixel_size_um, device, added_at) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (role, path) DO UPDATE SET "
                       "pixel_size_um=COALESCE(excluded.pixel_size_um, pixel_size_um), "
                       "device=COALESCE(excluded.device, device)",
                       (role, self.paths.to_stored(path), pixel_size_um, device, now()))

    def sources(self, role: str) -> list[dict]:
        rows = self._read("SELECT path, pixel_size_um, device FROM sources WHERE role=? ORDER BY id", (role,))
        return [{"path": self.paths.from_stored(p), "pixel_size_um": px, "device": d} for p, px, d in rows]

    # --- cells, labels, runs, predictions ------------------------------------------------------------
    def put_cells(self, cells: list[Cell]) -> None:
        """Cells by id (a cell already stored keeps its row); how a segmented cell was cut stays in cells.csv."""
        to_stored = self.paths.to_stored
        rows = [(c.cell_id, to_stored(c.source_image), to_stored(c.crop_path), *(c.bbox or (None,) * 4),
                 *(c.centroid or (None, None)), c.area_px, c.mask_rle, c.true_label,
                 None if c.touches_border is None else int(c.touches_border)) for c in cells]
        with self.write(f"save {len(rows)} cells") as db:
            db.executemany("INSERT INTO cells (uid, image_path, crop_path, bbox_x0, bbox_y0, bbox_x1, bbox_y1, "
                           "centroid_x, centroid_y, area_px, mask_rle, folder_label, touches_border) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uid) DO NOTHING", rows)

    def cells(self) -> list[Cell]:
        out = []
        from_stored = self.paths.from_stored
        for row in self._read("SELECT uid, crop_path, image_path, bbox_x0, bbox_y0, bbox_x1, bbox_y1, centroid_x, "
                              "centroid_y, area_px, mask_rle, folder_label, touches_border FROM cells ORDER BY id"):
            bbox = None if None in row[3:7] else tuple(row[3:7])
            centroid = None if None in row[7:9] else (row[7], row[8])
            out.append(Cell(row[0], from_stored(row[1]), from_stored(row[2]), bbox, centroid, row[9], row[10],
                            row[11], touches_border=None if row[12] is None else bool(row[12])))
        return out

    def set_labels(self, labels: dict[str, str | None], who: str | None = None) -> None:
        stamp, who = now(), who or user()
        with self.write(f"save {len(labels)} label(s)") as db:
            db.executemany("INSERT INTO labels (cell_uid, label, who, at) VALUES (?, ?, ?, ?)",
                           [(uid, label, who, stamp) for uid, label in labels.items()])

    def labels(self) -> dict[str, str]:
        """The latest label of each cell (a cleared label removes it); the history stays in the table."""
        rows = self._read("SELECT cell_uid, label FROM labels WHERE id IN "
                          "(SELECT MAX(id) FROM labels GROUP BY cell_uid)")
        return {uid: label for uid, label in rows if label}

    def label_history(self, uid: str) -> list[tuple[str | None, str, str]]:
        return self._read("SELECT label, who, at FROM labels WHERE cell_uid=? ORDER BY id", (uid,))

    def start_run(self, kind: str, settings: dict) -> int:
        with self.write(f"record the {kind} run") as db:
            cur = db.execute("INSERT INTO runs (kind, started_at, status, settings, app_version) "
                             "VALUES (?, ?, 'running', ?, ?)", (kind, now(), json.dumps(settings), __version__))
            return cur.lastrowid

    def finish_run(self, run_id: int, status: str, provenance: dict | None = None, notes=None,
                   predictions=None) -> None:
        with self.write("save the predictions") as db:
            if predictions:
                db.executemany("INSERT OR REPLACE INTO predictions (run_id, cell_uid, label, entropy, k_used, "
                               "confidence) VALUES (?, ?, ?, ?, ?, ?)",
                               [(run_id, *p, None)[:6] for p in predictions])  # confidence: optional
            db.execute("UPDATE runs SET finished_at=?, status=?, provenance=?, notes=? WHERE id=?",
                       (now(), status, json.dumps(provenance or {}, default=str), json.dumps(notes or []), run_id))

    def runs(self) -> list[dict]:
        keys = ["id", "kind", "started_at", "finished_at", "status", "app_version"]
        return [dict(zip(keys, r)) for r in self._read(f"SELECT {', '.join(keys)} FROM runs ORDER BY id")]

    def last_finished_run(self, kind: str | None = None) -> dict | None:
        rows = self._read("SELECT id, settings, provenance FROM runs WHERE status='finished' "
                          "AND (? IS NULL OR kind=?) ORDER BY id DESC LIMIT 1", (kind, kind))
        if not rows:
            return None
        row = rows[0]
        try:
            settings, provenance = json.loads(row[1] or "{}"), json.loads(row[2] or "{}")
        except ValueError as exc:
            raise ProjectError(f"{self.folder}: run {row[0]} has unreadable settings ({exc})") from None
        return {"id": row[0], "settings": settings if isinstance(settings, dict) else {},
                "provenance": provenance if isinstance(provenance, dict) else {}}

    def predictions(self, run_id: int) -> dict[str, tuple[str, float, int]]:
        rows = self._read("SELECT cell_uid, label, entropy, k_used FROM predictions WHERE run_id=?", (run_id,))
        return {uid: (label, entropy, k) for uid, label, entropy, k in rows}

    def confidences(self, run_id: int) -> dict[str, float]:
        """{cell id: calibrated confidence} of a run's predictions (runs saved before it was kept: none)."""
        rows = self._read("SELECT cell_uid, confidence FROM predictions WHERE run_id=? AND confidence IS NOT NULL",
                          (run_id,))
        return dict(rows)

    def counts(self) -> dict:
        one = lambda sql: self._read(sql)[0][0]  # noqa: E731
        return {"schema": one("PRAGMA user_version"), "reference_sources": one(
                    "SELECT COUNT(*) FROM sources WHERE role='reference'"),
                "query_sources": one("SELECT COUNT(*) FROM sources WHERE role='query'"),
                "cells": one("SELECT COUNT(*) FROM cells"), "labelled": len(self.labels()),
                "runs": one("SELECT COUNT(*) FROM runs")}

    def integrity(self) -> str:
        return integrity_of(self.db)

    def migrate_paths(self) -> None:
        """Rewrite paths of a project written before they were project-relative (once, by a writer)."""
        if self.paths.relative:
            return
        old, new = self.paths, ProjectPaths(self.folder, relative=True)
        convert = lambda text: new.to_stored(old.from_stored(text))  # noqa: E731
        with self.write("convert the stored paths") as db:
            seen = set()
            for row_id, role, path in db.execute("SELECT id, role, path FROM sources ORDER BY id").fetchall():
                key = (role, convert(path))
                if key in seen:  # two spellings of one folder: keep the first
                    db.execute("DELETE FROM sources WHERE id=?", (row_id,))
                    continue
                seen.add(key)
                db.execute("UPDATE sources SET path=? WHERE id=?", (key[1], row_id))
            rows = db.execute("SELECT id, crop_path, image_path FROM cells").fetchall()
            db.executemany("UPDATE cells SET crop_path=?, image_path=? WHERE id=?",
                           [(convert(crop), convert(image), row_id) for row_id, crop, image in rows])
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (PATHS_META, json.dumps(PROJECT_RELATIVE)))
        self.paths = new


EMPTY_NOTE = f"{DB_NAME} was empty (0 bytes): a new, empty project was created in it"


def _refuse_non_project(folder: Path, path: Path, create: bool, readonly: bool) -> None:
    """A missing or 0-byte database is a project only for a writer (which creates it, saying so)."""
    if path.is_file() and (not readonly or path.stat().st_size > 0):
        return
    if path.exists() and not path.is_file():
        raise ProjectError(f"{path}: not a file; this folder is not a CellSearch project")
    if path.is_file():
        raise ProjectError(f"{folder}: {DB_NAME} is empty (0 bytes), so this is not a CellSearch project; the "
                           "file was not changed. Create a project with 'cellsearch project new'")
    if not create:
        what = "holds an older project.json: open it in the app to convert it" if (folder / LEGACY_FILE).is_file() \
            else "is not a CellSearch project"
        raise ProjectError(f"{folder}: {what} (no {DB_NAME}); create one with 'cellsearch project new'")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_problem(exc, folder, "create the project folder") or ProjectError(
            f"{folder}: cannot create the project folder ({exc.strerror})") from None


def _prepare(db: sqlite3.Connection, folder: Path, readonly: bool, fresh: bool) -> None:
    """Check the schema version and tables; bring a writable project up to date."""
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        check_schema(db, folder, version)
        if not readonly:
            set_writer_pragmas(db)
    except sqlite3.DatabaseError as exc:
        raise explain(folder, exc, "open the project", db) from None
    if version > SCHEMA_VERSION:
        raise ProjectError(f"{folder}: made by a newer CellSearch (project schema {version}; this version "
                           f"reads up to {SCHEMA_VERSION}). Update CellSearch to open it; the file was not changed")
    if version < SCHEMA_VERSION:
        if readonly:
            raise ProjectError(f"{folder}: needs an upgrade of its schema ({version} -> {SCHEMA_VERSION}) "
                               "but is read-only")
        try:
            migrate(db)
            if fresh:  # a new project stores project-relative paths from the start
                with db:
                    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                               (PATHS_META, json.dumps(PROJECT_RELATIVE)))
        except sqlite3.DatabaseError as exc:
            raise explain(folder, exc, "create the project database", db) from None


def open_project(folder, create: bool = False, readonly: bool = False, purpose: str = "CellSearch",
                 lock: bool = True) -> ProjectStore:
    """Open (or create) a project folder. A writer takes the project lock (``lock=False``: a second
    connection of the process that holds it, e.g. its worker thread); a read-only folder opens read-only."""
    folder = Path(folder)
    path = folder / DB_NAME
    _refuse_non_project(folder, path, create, readonly)
    fresh = not path.is_file() or path.stat().st_size == 0
    empty_file = path.is_file() and fresh
    if not readonly and not fresh and not os.access(folder, os.W_OK):
        readonly = True  # a read-only folder (or medium) can still be looked at
    take_lock, lock = lock, None
    if not readonly:
        if not os.access(folder, os.W_OK):
            raise ProjectError(f"{folder}: the folder is read-only; cannot create a project there")
        if take_lock:
            lock = ProjectLock(folder)
            lock.acquire(purpose)
    db = None
    try:
        db, note = connect(path, readonly)
        _prepare(db, folder, readonly, fresh)
        if lock is not None:  # the only writer: a run still marked running was killed
            with db:
                db.execute("UPDATE runs SET status='interrupted' WHERE status='running'")
        store = ProjectStore(folder, db, readonly, lock, EMPTY_NOTE if empty_file else note)
        if not readonly:
            store.migrate_paths()
    except sqlite3.DatabaseError as exc:
        error = explain(folder, exc, "open the project", db)
        _abandon(db, lock)
        raise error from None
    except BaseException:
        _abandon(db, lock)
        raise
    return store


def _abandon(db: sqlite3.Connection | None, lock: ProjectLock | None) -> None:
    if db is not None:
        db.close()
    if lock is not None:
        lock.release()
