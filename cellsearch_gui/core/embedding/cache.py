"""On-disk embedding cache: one SQLite file (WAL), keyed by model fingerprint and crop content hash."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np

from cellsearch_gui.core.io.user_dirs import user_dir

CACHE_ENV = "CELLSEARCH_CACHE_DIR"


def default_cache_dir() -> Path:
    return user_dir(CACHE_ENV, "cache")


class EmbeddingCache:
    """Maps (model fingerprint, content sha256) to a float32 vector. ``path=None`` keeps it in memory."""

    def __init__(self, path: str | Path | None = None):
        if path is None:
            target = ":memory:"
        else:
            Path(path).mkdir(parents=True, exist_ok=True)
            target = str(Path(path) / "embeddings.sqlite")
        self.recovered_from: Path | None = None
        try:
            self._db = self._connect(target)
        except sqlite3.DatabaseError:
            if target == ":memory:":
                raise
            # a damaged cache is only a cache: keep it aside for inspection and start an empty one
            damaged = Path(target)
            self.recovered_from = damaged.with_name(f"{damaged.name}.damaged-{int(time.time())}")
            damaged.replace(self.recovered_from)
            for suffix in ("-wal", "-shm"):
                Path(target + suffix).unlink(missing_ok=True)
            self._db = self._connect(target)

    def _connect(self, target: str) -> sqlite3.Connection:
        db = sqlite3.connect(target, timeout=30, check_same_thread=False)
        self._db = db
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS emb (model TEXT NOT NULL, content TEXT NOT NULL, "
            "dim INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (model, content))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS meta (kind TEXT NOT NULL, content TEXT NOT NULL, "
            "value TEXT NOT NULL, PRIMARY KEY (kind, content))"
        )
        self._db.commit()
        return db

    def get_meta(self, kind: str, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"SELECT content, value FROM meta WHERE kind=? AND content IN ({','.join('?' * len(chunk))})",
                [kind, *chunk])
            found.update(dict(rows))
        return found

    def put_meta(self, kind: str, items: dict[str, str]) -> None:
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?, ?)",
                                 [(kind, k, v) for k, v in items.items()])

    def get_many(self, model: str, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT content, dim, vec FROM emb WHERE model=? AND content IN ({marks})",
                [model, *chunk],
            )
            for content, dim, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.size == dim:  # a damaged row is treated as missing and recomputed
                    found[content] = vec
        return found

    def put_many(self, model: str, items: dict[str, np.ndarray]) -> None:
        rows = [(model, key, int(v.size), np.ascontiguousarray(v, np.float32).tobytes())
                for key, v in items.items()]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?, ?)", rows)

    def count(self, model: str | None = None) -> int:
        if model is None:
            return self._db.execute("SELECT COUNT(*) FROM emb").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM emb WHERE model=?", (model,)).fetchone()[0]

    def close(self) -> None:
        self._db.close()
