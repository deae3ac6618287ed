"""Opening the project database: readers see committed data (the WAL too), damage is told from a full or
read-only disk, and a file that is not a CellSearch project is refused without being changed."""

from __future__ import annotations

import shutil
import sqlite3
import urllib.parse
from pathlib import Path

from cellsearch_gui.core.errors import CellSearchError

DB_NAME = "project.sqlite"

# the tables and columns every reader relies on (schema 1)
REQUIRED_COLUMNS = {
    "meta": {"key", "value"},
    "sources": {"role", "path", "pixel_size_um", "device"},
    "cells": {"uid", "image_path", "crop_path", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "centroid_x",
              "centroid_y", "area_px", "mask_rle", "folder_label"},
    "labels": {"cell_uid", "label", "who", "at"},
    "runs": {"kind", "started_at", "finished_at", "status", "settings", "provenance", "app_version", "notes"},
    "predictions": {"run_id", "cell_uid", "label", "entropy", "k_used"},
}
SNAPSHOT_NOTE = ("the project is on a read-only medium without its WAL index: it was opened as a snapshot of "
                 "project.sqlite alone, so changes saved since the last checkpoint may be missing")


class ProjectError(CellSearchError):
    pass


def is_io_problem(exc: BaseException) -> bool:
    """A full, read-only or unreachable disk rather than a damaged file."""
    text = str(exc).lower()
    return any(word in text for word in ("full", "readonly", "read-only", "disk i/o", "unable to open",
                                         "permission", "locked", "no space"))


def nearly_full(folder: Path, margin: int = 256 * 1024) -> bool:
    """Whether the disk holding ``folder`` is (all but) full: SQLite reports some writes there as I/O errors."""
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def integrity_of(db: sqlite3.Connection) -> str:
    """'ok', or what PRAGMA integrity_check found (or why it could not run)."""
    try:
        rows = db.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return "; ".join(str(r[0]) for r in rows[:3]) or "ok"


def explain(folder: Path, exc: sqlite3.DatabaseError, what: str, db: sqlite3.Connection | None = None
            ) -> ProjectError:
    """One clear message for a database error while trying to ``what``."""
    text = str(exc).lower()
    if "full" in text or "no space" in text or ("disk i/o" in text and nearly_full(folder)):
        return ProjectError(f"{folder}: the disk is full while trying to {what}; nothing of it was saved and the "
                            "project keeps its last saved state. Free some space and try again")
    if "readonly" in text or "read-only" in text:
        return ProjectError(f"{folder}: the folder is read-only, cannot {what}")
    if is_io_problem(exc):
        return ProjectError(f"{folder}: could not {what} ({exc}); the project file itself was not changed")
    found = integrity_of(db) if db is not None else str(exc)
    if found == "ok":
        return ProjectError(f"{folder}: could not {what} ({exc}); the database passes its integrity check")
    if "no such table" in text or "no such column" in text:
        return ProjectError(f"{folder}: the project database lacks part of its schema ({exc}); it was changed "
                            "outside CellSearch. Restore it from a backup or start a new project")
    return ProjectError(f"{folder / DB_NAME}: the project database is damaged ({found}). Restore it from a backup or "
                        "start a new project")


def _uri(path: Path, immutable: bool) -> str:
    quoted = urllib.parse.quote(str(Path(path).absolute()))
    return f"file:{quoted}?mode=ro" + ("&immutable=1" if immutable else "")


def _probe(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA schema_version").fetchone()
    db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()


def _open(target: str, uri: bool) -> sqlite3.Connection:
    db = sqlite3.connect(target, uri=uri, timeout=10, check_same_thread=False, isolation_level=None)
    db.isolation_level = ""  # "with db:" commits or rolls back
    return db


def connect(path: Path, readonly: bool) -> tuple[sqlite3.Connection, str | None]:
    """(connection, note). A reader opens read-only but honours the WAL; only where that cannot work (a
    read-only medium lacking the WAL index) is the file opened as an immutable snapshot, and the note says so."""
    folder = Path(path).parent
    attempts = [(_uri(path, False), True, None), (_uri(path, True), True, SNAPSHOT_NOTE)] if readonly \
        else [(str(path), False, None)]
    for number, (target, uri, note) in enumerate(attempts):
        db = None
        try:
            db = _open(target, uri)
            _probe(db)
            wal = Path(f"{path}-wal")
            return db, note if wal.is_file() and wal.stat().st_size > 0 else None
        except sqlite3.DatabaseError as exc:
            last_try = number == len(attempts) - 1
            damaged = not is_io_problem(exc)
            error = explain(folder, exc, "open the project", db if damaged else None)
            if db is not None:
                db.close()
            if last_try or damaged:
                if "not a database" in str(exc).lower():
                    raise ProjectError(f"{path}: not a CellSearch project database ({exc}); it may be damaged. "
                                       "Restore it from a backup or start a new project") from None
                raise error from None
    raise AssertionError("unreachable")


def set_writer_pragmas(db: sqlite3.Connection) -> None:
    """WAL, durable commits: only once the file is known to be a CellSearch project (or a new one)."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")


def check_schema(db: sqlite3.Connection, folder: Path, version: int) -> None:
    """Refuse a foreign SQLite file (tables of another program, no CellSearch version) and a project whose
    tables were dropped or changed; the file is left as it is."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                             "AND name NOT LIKE 'sqlite_%'")}
    if version == 0:
        if tables:
            shown = ", ".join(sorted(tables)[:5])
            raise ProjectError(f"{folder / DB_NAME}: an SQLite database of another program (tables {shown}), "
                               "not a CellSearch project; it was not changed. Choose another folder")
        return
    for table, columns in REQUIRED_COLUMNS.items():
        if table not in tables:
            raise ProjectError(f"{folder}: the project database has no '{table}' table (changed outside "
                               "CellSearch?). Restore it from a backup or start a new project")
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if not columns <= present:
            missing = ", ".join(sorted(columns - present))
            raise ProjectError(f"{folder}: the project table '{table}' lacks column(s) {missing} (changed "
                               "outside CellSearch?). Restore it from a backup or start a new project")
