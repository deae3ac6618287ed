"""Shards on disk: a folder of ``.npy`` arrays per shard and one ``manifest.json`` that records, for every
finished shard, its files with their SHA-256 and a small JSON record. A shard is written file by file
(each atomically) and enters the manifest last, so a job stopped at any point leaves only whole shards
behind; a re-run skips them. A shard whose file is missing or fails its checksum is dropped from the
manifest with a note and computed again; the other shards stay."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.io.atomic import atomic_open, disk_errors, write_text_atomic

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class ShardError(CellSearchError):
    """A shard folder that cannot be used (another job's shards, an unreadable manifest)."""


class ShardDamaged(ShardError):
    """A finished shard whose file is missing or no longer matches its checksum."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


@dataclass
class ShardStore:
    """The shards of one job under ``root``. ``job`` describes what the shards hold (inputs, models,
    settings); a folder holding another job's shards is refused rather than mixed in."""

    root: Path
    job: dict
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.job = json.loads(json.dumps(self.job, default=str))  # as it reads back from the manifest
        self.shards: dict[str, dict] = {}
        self.written: set[str] = set()  # shards written by this process (the others were found finished)
        path = self.root / MANIFEST
        if not path.exists():
            return
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            shards, job = dict(manifest["shards"]), manifest["job"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ShardError(f"{path}: unreadable shard manifest ({exc}); delete the folder or choose another "
                             "work folder") from None
        if job != self.job:
            raise ShardError(f"{self.root} holds the shards of another job (other inputs, models or settings); "
                             "choose another work folder or delete this one")
        self.shards = shards

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def _save_manifest(self) -> None:
        manifest = {"version": MANIFEST_VERSION, "job": self.job, "shards": self.shards}
        write_text_atomic(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True))

    def done(self, name: str) -> bool:
        return name in self.shards

    def write(self, name: str, arrays: dict[str, np.ndarray], record: dict | None = None,
              blobs: dict[str, bytes] | None = None) -> None:
        """Store one finished shard: its arrays (``.npy``) and raw files (``blobs``), then its manifest entry."""
        folder = self.root / name
        files = {}
        with disk_errors(folder, "write the shard"):
            folder.mkdir(parents=True, exist_ok=True)
            contents = {f"{key}.npy": _npy_bytes(a) for key, a in arrays.items()} | dict(blobs or {})
            for file_name, data in contents.items():
                with atomic_open(folder / file_name, "wb") as handle:
                    handle.write(data)
                files[file_name] = hashlib.sha256(data).hexdigest()
        self.shards[name] = {"files": files, "record": json.loads(json.dumps(record or {}, default=str))}
        self.written.add(name)
        self._save_manifest()

    def record(self, name: str) -> dict:
        return self.shards[name]["record"]

    def _checked(self, name: str, file_name: str) -> Path:
        path = self.root / name / file_name
        expected = self.shards[name]["files"].get(file_name)
        if expected is None:
            raise ShardDamaged(f"shard {name} has no file {file_name}")
        if not path.is_file():
            raise ShardDamaged(f"shard {name}: {path} is missing")
        if sha256_of(path) != expected:
            raise ShardDamaged(f"shard {name}: {path} is damaged (its checksum no longer matches)")
        return path

    def read(self, name: str, key: str, mmap: bool = False, verify: bool = True) -> np.ndarray:
        """One array of a finished shard, checked against its checksum unless ``verify`` is False
        (ShardDamaged when it fails)."""
        path = self._checked(name, f"{key}.npy") if verify else self.root / name / f"{key}.npy"
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ShardDamaged(f"shard {name}: {path} cannot be read ({exc})") from None

    def blob_path(self, name: str, file_name: str) -> Path:
        return self._checked(name, file_name)

    def check(self, names: list[str] | None = None) -> list[str]:
        """Verify finished shards; damaged ones leave the manifest (to be computed again), with a note each."""
        damaged = []
        for name in list(names if names is not None else self.shards):
            if name not in self.shards:
                continue
            try:
                for file_name in self.shards[name]["files"]:
                    self._checked(name, file_name)
            except ShardDamaged as exc:
                damaged.append(name)
                self.notes.append(f"{exc}; it is computed again")
                del self.shards[name]
        if damaged:
            self._save_manifest()
        return damaged
