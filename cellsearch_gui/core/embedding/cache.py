"""On-disk embedding cache: one SQLite file (WAL), keyed by model fingerprint and crop content hash.

Only a cache: a damaged file (integrity check fails, not a database, tables of another shape) is set aside as
``.damaged-N`` and a fresh one started; a full, read-only or unreachable disk is not damage, so the file is
left alone and the work goes on without the cache, saying so in ``notes``."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
import urllib.parse
from pathlib import Path

import numpy as np

from cellsearch_gui.core.io.atomic import disk_problem
from cellsearch_gui.core.io.user_dirs import user_dir

CACHE_ENV = "CELLSEARCH_CACHE_DIR"
CACHE_FILE = "embeddings.sqlite"
TABLES = {"emb": "(model TEXT NOT NULL, content TEXT NOT NULL, dim INTEGER NOT NULL, vec BLOB NOT NULL, sum BLOB, "
                 "PRIMARY KEY (model, content))",
          "meta": "(kind TEXT NOT NULL, content TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, content))"}
COLUMNS = {"emb": ["model", "content", "dim", "vec", "sum"], "meta": ["kind", "content", "value"]}
OLD_EMB_COLUMNS = ["model", "content", "dim", "vec"]  # caches before vectors carried a checksum
IO_WORDS = ("full", "readonly", "read-only", "disk i/o", "unable to open", "permission", "locked", "no space")
CHECKSUM_BYTES = 8
log = logging.getLogger("cellsearch")


def default_cache_dir() -> Path:
    return user_dir(CACHE_ENV, "cache")


def is_io_error(exc: BaseException) -> bool:
    """A full, read-only or unreachable disk (as opposed to a damaged file)."""
    if isinstance(exc, OSError):
        return True
    return any(word in str(exc).lower() for word in IO_WORDS)


def checksum_of(vector: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(vector, np.float32).tobytes(), digest_size=CHECKSUM_BYTES).digest()


def vector_of(blob, dim, checksum) -> np.ndarray | None:
    """The vector of a stored row; None when the row is damaged (rows of older caches carry no checksum)."""
    if not isinstance(blob, bytes) or not isinstance(dim, int) or len(blob) != 4 * dim:
        return None
    vector = np.frombuffer(blob, dtype=np.float32)
    if checksum is not None and checksum != checksum_of(vector):
        return None
    return vector


class WrongSchema(sqlite3.DatabaseError):
    pass


class EmbeddingCache:
    """Maps (model fingerprint, content sha256) to a float32 vector. ``path=None`` keeps it in memory."""

    def __init__(self, path: str | Path | None = None):
        self.recovered_from: Path | None = None
        self.notes: list[str] = []
        self._writable = True
        self._read_only = False  # the file is read but not written (a read-only disk)
        self._sum = "sum"  # the checksum column ("NULL" for an older cache read where it cannot be upgraded)
        self.target = ":memory:" if path is None else str(Path(path) / CACHE_FILE)
        if path is None:
            self._db = self._connect(self.target)
            return
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
            self._db = self._connect(self.target)
        except (sqlite3.DatabaseError, OSError) as exc:
            if is_io_error(exc):
                self._without_cache(exc, "opened", read_only_ok=True)
            else:
                self._set_aside(exc)

    def _connect(self, target: str) -> sqlite3.Connection:
        db = sqlite3.connect(target, timeout=30, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for table, columns in TABLES.items():
                db.execute(f"CREATE TABLE IF NOT EXISTS {table} {columns}")
                found = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
                if table == "emb" and found == OLD_EMB_COLUMNS:
                    db.execute("ALTER TABLE emb ADD COLUMN sum BLOB")
                    found = COLUMNS["emb"]
                if found != COLUMNS[table]:
                    raise WrongSchema(f"table {table} has columns {found}, not {COLUMNS[table]}")
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            log.warning("%s", text)

    def _without_cache(self, exc: BaseException, what: str, read_only_ok: bool = False) -> None:
        """The disk, not the file: keep the file as it is; read it if that still works (a read-only disk),
        else work from memory."""
        problem = disk_problem(exc, self.target, "use the embedding cache") if isinstance(exc, OSError) else None
        self._writable = False
        if read_only_ok and self._open_read_only():
            self._note(f"the embedding cache {self.target} could not be {what} ({problem or exc}); it is read "
                       "but nothing computed now is kept for next time")
            return
        self._note(f"the embedding cache {self.target} could not be {what} ({problem or exc}); working without "
                   "it, so nothing computed now is kept for next time. The file was left as it is")
        self._read_only, self._sum = False, "sum"
        self._db = self._connect(":memory:")

    def _open_read_only(self) -> bool:
        """Read the file where it cannot be written (honouring its WAL; a snapshot only when there is none)."""
        wal = Path(self.target + "-wal")
        modes = ["mode=ro"] + ([] if wal.is_file() and wal.stat().st_size else ["mode=ro&immutable=1"])
        for mode in modes:
            db = None
            try:
                db = sqlite3.connect(f"file:{urllib.parse.quote(self.target)}?{mode}", uri=True, timeout=30,
                                     check_same_thread=False)
                if [row[1] for row in db.execute("PRAGMA table_info(emb)")] in (COLUMNS["emb"], OLD_EMB_COLUMNS) and \
                        [row[1] for row in db.execute("PRAGMA table_info(meta)")] == COLUMNS["meta"]:
                    self._db, self._read_only = db, True
                    names = [row[1] for row in db.execute("PRAGMA table_info(emb)")]
                    self._sum = "sum" if "sum" in names else "NULL"
                    return True
            except sqlite3.DatabaseError:
                pass
            if db is not None:
                db.close()
        return False

    def _set_aside(self, exc: BaseException) -> None:
        """A damaged cache is only a cache: keep it aside for inspection and start an empty one."""
        damaged = Path(self.target)
        self.recovered_from = damaged.with_name(f"{damaged.name}.damaged-{int(time.time())}")
        try:
            damaged.replace(self.recovered_from)
            for suffix in ("-wal", "-shm"):
                Path(self.target + suffix).unlink(missing_ok=True)
            self._db = self._connect(self.target)
        except (sqlite3.DatabaseError, OSError) as again:
            self.recovered_from = None
            self._without_cache(again, "replaced")
            return
        self._note(f"the embedding cache was damaged ({exc}); it was set aside as {self.recovered_from.name} "
                   "and a new one started")

    def _failed(self, exc: sqlite3.DatabaseError, what: str) -> None:
        """A database error while using the cache: the disk (work on without it) or damage (set it aside)."""
        if self.target == ":memory:":
            raise exc
        self._db.close()
        if not self._writable or is_io_error(exc):
            self._without_cache(exc, what)
        else:
            self._set_aside(exc)

    def get_meta(self, kind: str, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        try:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                rows = self._db.execute(
                    f"SELECT content, value FROM meta WHERE kind=? AND content IN ({','.join('?' * len(chunk))})",
                    [kind, *chunk])
                found.update(dict(rows))
        except sqlite3.DatabaseError as exc:
            self._failed(exc, "read")
        return found

    def put_meta(self, kind: str, items: dict[str, str]) -> None:
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?, ?)", [(kind, k, v) for k, v in items.items()])

    def get_many(self, model: str, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        try:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT content, dim, vec, {self._sum} FROM emb WHERE model=? "
                                        f"AND content IN ({marks})",
                                        [model, *chunk])
                for content, dim, blob, checksum in rows:
                    vec = vector_of(blob, dim, checksum)
                    if vec is not None:  # a damaged row is treated as missing and recomputed
                        found[content] = vec
        except sqlite3.DatabaseError as exc:
            self._failed(exc, "read")
            return {}
        return found

    def put_many(self, model: str, items: dict[str, np.ndarray]) -> None:
        rows = [(model, key, int(v.size), np.ascontiguousarray(v, np.float32).tobytes(), checksum_of(v))
                for key, v in items.items()]
        self._write("INSERT OR REPLACE INTO emb (model, content, dim, vec, sum) VALUES (?, ?, ?, ?, ?)", rows)

    def _write(self, sql: str, rows: list) -> None:
        """One transaction: all rows or none (a full disk rolls it back and the cache stays as it was)."""
        if self._read_only:
            return
        try:
            with self._db:
                self._db.executemany(sql, rows)
        except sqlite3.DatabaseError as exc:
            self._failed(exc, "written")

    def count(self, model: str | None = None) -> int:
        if model is None:
            return self._db.execute("SELECT COUNT(*) FROM emb").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM emb WHERE model=?", (model,)).fetchone()[0]

    def integrity(self) -> str:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    def close(self) -> None:
        self._db.close()
