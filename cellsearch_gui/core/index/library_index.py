"""A compressed index saved next to its library (``LIBRARY/_index/compressed-<key>/``), for libraries larger
than memory: ``index.faiss`` (FAISS's IVF-PQ, as write_index writes it), ``pca.npz`` (the PCA in front of
it), ``index.json`` (models and their fingerprints, metric, pca, pq_bytes, nlist, the number of cells, the
class of each id, the library listing it was built from, and the SHA-256 of both files) and ``vectors/``
(the cells' fp32 features in shards, memory-mapped for the exact re-rank). ``key`` follows the model
fingerprints, per-model L2 and metric, so one library can hold an index per model set.

``LibraryIndex`` is the opened folder; ``payload()`` is what a Ray worker needs to rebuild it (the index
bytes and the labels, shipped once; the vectors folder by path, on storage every node sees)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.index.compressed import CompressedIndex
from cellsearch_gui.core.io.atomic import atomic_open, write_text_atomic
from cellsearch_gui.core.io.shards import ShardError, ShardStore, sha256_of

INDEX_DIR = "_index"  # starts with '_': never read as a class
INDEX_FILE, PCA_FILE, META_FILE, VECTORS_DIR = "index.faiss", "pca.npz", "index.json", "vectors"
FORMAT = 1


class LibraryIndexError(CellSearchError):
    """A compressed library index that is missing, damaged or made for other models or another library."""


def index_key(fingerprints: dict[str, str], per_model_l2: bool, metric: str) -> str:
    text = json.dumps({"fingerprints": fingerprints, "per_model_l2": per_model_l2, "metric": metric},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def index_folder(library: str | Path, key: str) -> Path:
    return Path(library) / INDEX_DIR / f"compressed-{key}"


def listing_digest(library: str | Path, paths: list[Path], labels: list) -> str:
    """The library's cells as scanned (paths relative to the library, labels), as one SHA-256."""
    root = Path(library)
    text = "\n".join(f"{Path(p).relative_to(root).as_posix()}\t{label}" for p, label in zip(paths, labels))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def vectors_store(folder: Path, meta: dict) -> ShardStore:
    return ShardStore(folder / VECTORS_DIR, {"kind": "compressed library vectors", "key": meta["key"],
                                             "listing": meta["listing"], "models": meta["models"]})


def save_index(folder: Path, index: CompressedIndex, meta: dict) -> dict:
    """Write the index files, then the JSON naming their checksums (last: a half-written index has none)."""
    arrays = index.to_arrays()
    with atomic_open(folder / INDEX_FILE, "wb") as handle:
        handle.write(arrays["faiss"].tobytes())
    with atomic_open(folder / PCA_FILE, "wb") as handle:
        np.savez(handle, mean=arrays["pca_mean"], proj=arrays["pca_proj"])
    meta = {**meta, "format": FORMAT, "pca": index.pca, "pq_bytes": index.pq_bytes, "nlist": index.lists(),
            "n_cells": index.size, "files": {name: sha256_of(folder / name) for name in (INDEX_FILE, PCA_FILE)}}
    write_text_atomic(folder / META_FILE, json.dumps(meta, indent=1))
    return meta


def read_meta(folder: Path) -> dict:
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or len(meta["label_ids"]) != meta["n_cells"]:
            raise ValueError(f"format {meta.get('format')}, {len(meta['label_ids'])} labels for "
                             f"{meta['n_cells']} cells")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LibraryIndexError(f"{path}: unreadable compressed index description ({exc}); build it again with "
                                "'cellsearch library compress'") from None
    return meta


def _read_arrays(folder: Path, meta: dict) -> dict[str, np.ndarray]:
    for name, expected in meta["files"].items():
        path = folder / name
        if not path.is_file():
            raise LibraryIndexError(f"{path} is missing; build the index again with 'cellsearch library compress'")
        if sha256_of(path) != expected:
            raise LibraryIndexError(f"{path} is damaged (its checksum no longer matches); build the index again "
                                    "with 'cellsearch library compress'")
    with np.load(folder / PCA_FILE, allow_pickle=False) as pca:
        return {"faiss": np.fromfile(folder / INDEX_FILE, dtype=np.uint8), "pca_mean": pca["mean"],
                "pca_proj": pca["proj"]}


@dataclass
class LibraryIndex:
    """An opened compressed library index: the FAISS index, the class of each id, the fp32 vectors on disk."""

    folder: Path
    meta: dict
    index: CompressedIndex

    @classmethod
    def open(cls, folder: str | Path) -> "LibraryIndex":
        folder = Path(folder)
        meta = read_meta(folder)
        arrays = _read_arrays(folder, meta)
        return cls.from_payload({"folder": str(folder), "meta": meta, "arrays": arrays})

    @classmethod
    def from_payload(cls, payload: dict) -> "LibraryIndex":
        meta = payload["meta"]
        try:
            index = CompressedIndex.from_arrays(payload["arrays"], meta["metric"])
        except CellSearchError as exc:
            raise LibraryIndexError(f"{Path(payload['folder']) / INDEX_FILE}: {exc}; build the index again with "
                                    "'cellsearch library compress'") from None
        if index.size != meta["n_cells"]:
            raise LibraryIndexError(f"{Path(payload['folder']) / INDEX_FILE} holds {index.size} cells, its "
                                    f"description {meta['n_cells']}; build the index again")
        return cls(Path(payload["folder"]), meta, index)

    def payload(self) -> dict:
        """What a worker rebuilds this index from (shipped once per job, through Ray's object store)."""
        return {"folder": str(self.folder), "meta": self.meta, "arrays": self.index.to_arrays()}

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def label_ids(self) -> np.ndarray:
        return np.asarray(self.meta["label_ids"], dtype=np.int64)

    def vectors(self):
        """ids -> their fp32 rows, read from the memory-mapped shards in ``vectors/``."""
        try:
            store = vectors_store(self.folder, self.meta)
        except ShardError as exc:
            raise LibraryIndexError(f"{exc}; build the index again with 'cellsearch library compress'") from None
        names = self.meta["vector_shards"]
        offsets = np.asarray(self.meta["shard_offsets"], dtype=np.int64)
        missing = [name for name in names if not store.done(name)]
        if missing:
            raise LibraryIndexError(f"{self.folder / VECTORS_DIR} lacks the shard {missing[0]}; build the index "
                                    "again with 'cellsearch library compress'")
        maps = [store.read(name, "features", mmap=True, verify=False) for name in names]

        def rows(ids: np.ndarray) -> np.ndarray:
            ids = np.asarray(ids, dtype=np.int64)
            out = np.empty((len(ids), maps[0].shape[1]), np.float32)
            shard = np.searchsorted(offsets, ids, side="right") - 1
            for s in np.unique(shard):
                at = np.flatnonzero(shard == s)
                local = ids[at] - offsets[s]
                order = np.argsort(local, kind="stable")
                out[at[order]] = maps[s][local[order]]  # rows read in file order
            return out

        return rows
