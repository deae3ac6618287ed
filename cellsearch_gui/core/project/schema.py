"""Project database schema and its migrations; ``PRAGMA user_version`` holds the schema version."""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 3

V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sources (
    id INTEGER PRIMARY KEY, role TEXT NOT NULL CHECK (role IN ('reference', 'query')), path TEXT NOT NULL,
    pixel_size_um REAL, device TEXT, added_at TEXT NOT NULL, UNIQUE (role, path));
CREATE TABLE images (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, pixel_size_um REAL, pixel_size_source TEXT,
    segmented_at TEXT, cells INTEGER, problem TEXT);
CREATE TABLE cells (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, image_path TEXT, crop_path TEXT NOT NULL,
    bbox_x0 INTEGER, bbox_y0 INTEGER, bbox_x1 INTEGER, bbox_y1 INTEGER, centroid_x REAL, centroid_y REAL,
    area_px INTEGER, mask_rle TEXT, folder_label TEXT);
CREATE TABLE labels (
    id INTEGER PRIMARY KEY, cell_uid TEXT NOT NULL, label TEXT, who TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX labels_by_cell ON labels (cell_uid, id);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
    status TEXT NOT NULL, settings TEXT, provenance TEXT, app_version TEXT NOT NULL, notes TEXT);
CREATE TABLE predictions (
    run_id INTEGER NOT NULL REFERENCES runs (id), cell_uid TEXT NOT NULL, label TEXT NOT NULL,
    entropy REAL NOT NULL, k_used INTEGER NOT NULL, PRIMARY KEY (run_id, cell_uid));
"""


# v2: whether the cell touches its image's border (kept and flagged, issue 17); NULL for cells saved before
V2 = "ALTER TABLE cells ADD COLUMN touches_border INTEGER;"

# v3: the calibrated confidence of each prediction (classify.calibration); NULL for runs saved before
V3 = "ALTER TABLE predictions ADD COLUMN confidence REAL;"

MIGRATIONS = {0: V1, 1: V2, 2: V3}  # from version -> SQL bringing the database to version + 1


def migrate(db: sqlite3.Connection) -> int:
    """Bring the database up to SCHEMA_VERSION, each step in its own transaction; returns the old version."""
    old = version = db.execute("PRAGMA user_version").fetchone()[0]
    while version < SCHEMA_VERSION:
        try:
            db.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[version]}\nPRAGMA user_version = {version + 1};\nCOMMIT;")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        version += 1
    return old
