"""The built search index as a file beside a run's feature arrays: a cache that is rebuilt whenever it is
missing, damaged or made for other settings (a big IVF library takes minutes to build, a read seconds)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from cellsearch_gui.core.index.knn import KnnIndex
from cellsearch_gui.core.io.atomic import write_text_atomic

INDEX_FILE, META_FILE = "index.faiss", "index.json"


def _key(knn: KnnIndex, features: np.ndarray) -> dict:

    step = max(1, len(features) // 1000)  # a sample of the rows: a changed library changes the key
    sample = hashlib.sha1(np.ascontiguousarray(features[::step], np.float32).tobytes()).hexdigest()
    return {"metric": knn.metric, "kind": knn.resolved_kind, "storage": knn.storage, "hnsw_m": knn.hnsw_m,
            "n": len(features), "dim": features.shape[1], "sample": sample}


def save_index(folder: Path, knn: KnnIndex, features: np.ndarray) -> None:
    import faiss

    folder = Path(folder)
    tmp = folder / (INDEX_FILE + ".part")
    faiss.write_index(knn._index, str(tmp))
    extra = {}
    if knn._pca is not None:
        np.save(folder / "index.pca_mean.npy", knn._pca[0])
        np.save(folder / "index.pca_proj.npy", knn._pca[1])
        extra["pca"] = True
    tmp.replace(folder / INDEX_FILE)
    write_text_atomic(folder / META_FILE, json.dumps({**_key(knn, features), **extra}))  # last: an index
    # without its description is never used


def load_index(folder: Path, template: KnnIndex, features: np.ndarray) -> tuple[KnnIndex | None, str]:
    """(index, note). None, with the reason, when the file cannot serve ``features`` as ``template`` would."""
    import faiss

    folder = Path(folder)
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except FileNotFoundError:
        return None, "no saved index"
    except (OSError, ValueError):
        return None, "saved index description unreadable: rebuilt"
    probe = KnnIndex(metric=template.metric, kind=template.kind, storage=template.storage, hnsw_m=template.hnsw_m)
    probe._dim, probe._expected = features.shape[1], len(features)
    key = _key(probe, features)
    if {k: meta.get(k) for k in key} != key:
        return None, "saved index made for other settings: rebuilt"
    try:
        probe._index = faiss.read_index(str(folder / INDEX_FILE))
    except (RuntimeError, OSError) as exc:
        return None, f"saved index damaged ({str(exc).splitlines()[0][:80]}): rebuilt"
    if probe._index.ntotal != len(features):
        return None, "saved index incomplete: rebuilt"
    if meta.get("pca"):
        probe._pca = (np.load(folder / "index.pca_mean.npy"), np.load(folder / "index.pca_proj.npy"))
    probe._n = len(features)
    if probe.storage == "fp32":
        probe.refs = features
    return probe, "index read from the project"
