"""Nearest-neighbour search over reference embeddings: exact (flat) or HNSW, for l2, cosine and canberra.

Distances returned: Euclidean for ``l2``, 1 - cosine similarity for ``cosine``, and the Canberra
distance sum |a-b| / (|a|+|b|) with 0/0 terms counted as 0 (scipy's convention) for ``canberra``.
FAISS's own Canberra gives NaN-poisoned distances whenever both vectors have a zero in the same
component (every ReLU network's features do); exact zeros are therefore stored as 1e-30, which makes
FAISS compute the scipy definition for both exact and HNSW search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellsearch_gui.core.errors import FeatureError

METRICS = ("l2", "cosine", "canberra")
INDEX_KINDS = ("auto", "flat", "hnsw")
AUTO_FLAT_MAX = 20_000
CANBERRA_ZERO = 1e-30  # batched exact search beats HNSW build + search below this size (stack notes)


def check_features(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise FeatureError(f"{what}: expected a non-empty 2-D feature matrix, got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise FeatureError(f"{what}: {len(rows)} feature vector(s) contain NaN or infinite values "
                           f"(rows {rows[:10].tolist()}{'...' if len(rows) > 10 else ''})")
    return x


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _canberra_safe(x: np.ndarray) -> np.ndarray:
    """Replace exact zeros by 1e-30: a 0/0 term becomes 0/2e-30 = 0 and a 0-vs-x term stays 1,
    so FAISS's Canberra then equals scipy's definition (to float32 rounding)."""
    return np.where(x == 0, np.float32(CANBERRA_ZERO), x).astype(np.float32)


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        return _unit(x)
    if metric == "canberra":
        return _canberra_safe(x)
    return x


@dataclass
class KnnIndex:
    """Reference vectors plus the search structure for one metric."""

    metric: str = "l2"
    kind: str = "auto"
    hnsw_m: int = 32
    ef_search: int = 0  # 0: max(k, 64)

    def __post_init__(self):
        if self.metric not in METRICS:
            raise FeatureError(f"unknown metric '{self.metric}'; choose one of {', '.join(METRICS)}")
        if self.kind not in INDEX_KINDS:
            raise FeatureError(f"unknown index kind '{self.kind}'; choose one of {', '.join(INDEX_KINDS)}")
        self._index = None
        self.refs = None

    @property
    def size(self) -> int:
        return 0 if self.refs is None else len(self.refs)

    @property
    def dim(self) -> int:
        return 0 if self.refs is None else self.refs.shape[1]

    @property
    def resolved_kind(self) -> str:
        if self.kind != "auto":
            return self.kind
        return "flat" if self.size <= AUTO_FLAT_MAX else "hnsw"

    def build(self, refs: np.ndarray) -> "KnnIndex":
        import faiss

        refs = check_features(refs, "reference features")
        self.refs = refs
        vecs = _prepare(refs, self.metric)
        faiss_metric = {"l2": faiss.METRIC_L2, "cosine": faiss.METRIC_INNER_PRODUCT,
                        "canberra": faiss.METRIC_Canberra}[self.metric]
        dim = refs.shape[1]
        if self.resolved_kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss_metric)
        else:
            index = faiss.IndexFlat(dim, faiss_metric)
        index.add(vecs)
        self._index = index
        return self

    def add(self, refs: np.ndarray) -> None:
        """Append reference vectors without rebuilding (labelling loop)."""
        refs = check_features(refs, "new reference features")
        self._check_dim(refs, "new reference features")
        self.refs = np.concatenate([self.refs, refs])
        self._index.add(_prepare(refs, self.metric))

    def _check_dim(self, x: np.ndarray, what: str) -> None:
        if x.shape[1] != self.dim:
            raise FeatureError(f"{what} have {x.shape[1]} dimensions but the reference index has "
                               f"{self.dim}; they were made with a different model combination")

    def _faiss_search(self, queries: np.ndarray, k: int):
        import faiss

        params = None
        if isinstance(self._index, faiss.IndexHNSWFlat):
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search or 64, k))
        dist, ids = self._index.search(queries, k, params=params)
        return dist, ids

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, ids) of the k nearest references, nearest first; k is capped at the library size."""
        if self._index is None:
            raise FeatureError("the reference index is empty; build it first")
        queries = check_features(queries, "query features")
        self._check_dim(queries, "query features")
        k = max(1, min(int(k), self.size))
        dist, ids = self._faiss_search(_prepare(queries, self.metric), k)
        if self.metric == "cosine":
            dist = 1.0 - dist
        elif self.metric == "l2":
            dist = np.sqrt(np.maximum(dist, 0))
        if (ids < 0).any():
            raise FeatureError("the HNSW search returned fewer neighbours than asked; raise ef_search")
        return dist.astype(np.float32), ids.astype(np.int64)
