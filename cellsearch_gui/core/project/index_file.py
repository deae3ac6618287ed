"""The built search index as a file beside a run's feature arrays: a cache that is rebuilt whenever it is
missing, damaged or made for other settings (a big IVF library takes minutes to build, a read seconds)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from cellsearch_gui.core.errors import FeatureError
from cellsearch_gui.core.index.knn import KnnIndex, Storage
from cellsearch_gui.core.io.atomic import write_text_atomic

INDEX_FILE, META_FILE = "index.faiss", "index.json"


def _key(knn: KnnIndex, kind: str, features: np.ndarray) -> dict:
    """What the saved index was made from: its settings, and the library (size, width, a sample of rows)."""
    step = max(1, len(features) // 1000)  # a sample of the rows: a changed library changes the key
    sample = hashlib.sha1(np.ascontiguousarray(features[::step], np.float32).tobytes()).hexdigest()
    return {"metric": knn.metric, "kind": kind, "storage": knn.storage, "hnsw_m": knn.hnsw_m,
            "n": len(features), "dim": features.shape[1], "sample": sample}


def save_index(folder: Path, knn: KnnIndex, features: np.ndarray) -> None:
    folder = Path(folder)
    knn.save(folder / INDEX_FILE)
    extra = {"pca": True} if Storage.parse(knn.storage).pca else {}  # kept for older readers
    # the description last: an index without it is never used
    write_text_atomic(folder / META_FILE, json.dumps({**_key(knn, knn.resolved_kind, features), **extra}))


def load_index(folder: Path, template: KnnIndex, features: np.ndarray) -> tuple[KnnIndex | None, str]:
    """(index, note). None, with the reason, when the file cannot serve ``features`` as ``template`` would."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except FileNotFoundError:
        return None, "no saved index"
    except (OSError, ValueError):
        return None, "saved index description unreadable: rebuilt"
    key = _key(template, template.kind_for(len(features), features.shape[1]), features)
    if {k: meta.get(k) for k in key} != key:
        return None, "saved index made for other settings: rebuilt"
    try:
        knn = dataclasses.replace(template).load(folder / INDEX_FILE, refs=features)
    except FeatureError as exc:
        return None, f"saved index damaged ({exc}): rebuilt"
    if knn.size != len(features) or knn.dim != features.shape[1]:
        return None, "saved index incomplete: rebuilt"
    return knn, "index read from the project"
