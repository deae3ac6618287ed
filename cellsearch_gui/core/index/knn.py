"""Nearest-neighbour search over reference embeddings: exact (flat) or HNSW, for l2, cosine and canberra.

Distances returned: Euclidean for ``l2``, 1 - cosine similarity for ``cosine``, and the Canberra
distance sum |a-b| / (|a|+|b|) with 0/0 terms counted as 0 (scipy's convention) for ``canberra``.
FAISS's own Canberra gives NaN-poisoned distances whenever both vectors have a zero in the same
component (every ReLU network's features do); exact zeros are therefore stored as 1e-30, which makes
FAISS compute the scipy definition for both exact and HNSW search.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellsearch_gui.core.errors import FeatureError
from cellsearch_gui.core.options import IndexKind, Metric

METRICS = tuple(Metric)
INDEX_KINDS = tuple(IndexKind)
CANBERRA_ZERO = 1e-30
# index="auto": exact flat search while the fp32 reference vectors take at most AUTO_FLAT_BYTES, an
# inverted file (IVF) above (HNSW for canberra, which IVF does not serve). Measured by
# benchmarks/bench_index.py on 2 cores, 4,352-d clustered embeddings, k = 1000: flat is "built" in well
# under a second (it copies the vectors) and is exact, and a batch of queries costs one GEMM (~4-9 ms
# per query at 100k); HNSW (M=32) took 84 s to build at 100k with recall@1000 0.96, and IVF must probe
# about half its lists for recall@1000 >= 0.99, where it is no faster than flat. So for batch
# classification flat wins at every size that fits in memory; the switch is a memory bound, not a speed
# crossover. (A lone query scans everything: ~120-220 ms at 100k, against ~16 ms for HNSW.)
AUTO_FLAT_BYTES = 4 << 30
STORAGE_HELP = "fp32, fp16, sq8, pcaN, pcaN+fp16 or pcaN+sq8 (N = kept PCA components, e.g. pca256)"
PCA_SAMPLE = 16_384  # rows used to fit the PCA
SMALL_QUERY_BATCH = 256  # up to this many rows, the PCA projection runs on one BLAS thread
IVF_TRAIN_PER_LIST = 40  # k-means sample: this many rows per inverted list (FAISS asks for >= 39)


@dataclass(frozen=True)
class Storage:
    """How reference vectors are held: optional PCA to ``pca`` dimensions, then fp32, fp16 or 8-bit."""

    pca: int = 0
    codec: str = "fp32"  # fp32 | fp16 | sq8

    @classmethod
    def parse(cls, text: str) -> "Storage":
        pca, codec = 0, "fp32"
        for part in str(text).lower().replace(" ", "").split("+"):
            if part in ("fp32", "fp16", "sq8"):
                codec = part
            elif part.startswith("pca") and part[3:].isdigit() and int(part[3:]) > 0:
                pca = int(part[3:])
            else:
                raise FeatureError(f"unknown storage '{text}'; choose {STORAGE_HELP}")
        return cls(pca, codec)

    def bytes_per_vector(self, dim: int) -> float:
        d = self.pca or dim
        return d * {"fp32": 4, "fp16": 2, "sq8": 1}[self.codec]


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


def _pca_fit(x: np.ndarray, n_components: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (dim, n_components) projection spanning the top principal components of ``x``.

    Covariance once (one GEMM), then a randomized subspace iteration on it: a few (dim x ~1.5n) products
    and small QRs instead of a full eigendecomposition (~45 s at 4,352 dims on 2 cores). The small
    LAPACK steps run on one BLAS thread: multi-threaded they stall for seconds on a busy machine."""
    x = np.asarray(x, dtype=np.float32)
    mean = x.mean(axis=0, dtype=np.float64)
    centred = x - mean.astype(np.float32)
    cov = (centred.T @ centred).astype(np.float64) / max(1, len(x) - 1)
    dim = cov.shape[0]
    width = min(dim, n_components + max(16, n_components // 2))
    basis = np.random.default_rng(seed).normal(size=(dim, width))
    with _one_blas_thread():
        for _ in range(4):
            basis = np.linalg.qr(cov @ basis)[0]
        vals, vecs = np.linalg.eigh(basis.T @ cov @ basis)
    top = np.argsort(vals)[::-1][:n_components]
    return mean.astype(np.float32), np.ascontiguousarray((basis @ vecs[:, top]).astype(np.float32))


@functools.lru_cache(maxsize=1)
def _blas_pools():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        return None
    return ThreadpoolController().select(user_api="blas")  # found once: a limit then costs microseconds


def _one_blas_thread():
    pools = _blas_pools()
    return pools.limit(limits=1) if pools is not None else contextlib.nullcontext()


def _pca_files(index_path: Path) -> tuple[Path, Path]:
    return (index_path.with_name(f"{index_path.stem}.pca_mean.npy"),
            index_path.with_name(f"{index_path.stem}.pca_proj.npy"))


@dataclass
class KnnIndex:
    """Reference vectors plus the search structure for one metric.

    kind: flat (exact), hnsw (graph), ivf (inverted file over k-means lists; ``nlist`` lists, ``nprobe``
    of them searched), or auto (flat while the stored vectors take <= AUTO_FLAT_BYTES, ivf above;
    hnsw for canberra).
    storage: fp32 (default, exact), fp16, sq8 (FAISS scalar quantizers), pcaN (PCA to N dimensions
    fitted on the references; cosine is then searched as L2 between the projected unit vectors, so
    1 - cos ~ d^2 / 2), or pcaN+fp16 / pcaN+sq8. Only fp32 serves canberra. Reduced storage trades
    memory for accuracy: benchmarks/bench_index.py reports recall and prediction agreement.
    """

    metric: str = "l2"
    kind: str = "auto"
    hnsw_m: int = 32
    ef_search: int = 0  # 0: max(k, 64)
    storage: str = "fp32"
    nlist: int = 0  # ivf lists; 0: about 2 sqrt(N)
    nprobe: int = 0  # ivf lists searched; 0: a quarter of the lists (see _nprobe)
    ef_construction: int = 40

    def __post_init__(self):
        if self.metric not in METRICS:
            raise FeatureError(f"unknown metric '{self.metric}'; choose one of {', '.join(METRICS)}")
        if self.kind not in INDEX_KINDS:
            raise FeatureError(f"unknown index kind '{self.kind}'; choose one of {', '.join(INDEX_KINDS)}")
        if self.kind == IndexKind.COMPRESSED:
            raise FeatureError("the compressed index is a library's saved index, built once with 'cellsearch "
                               "library compress' and searched by the compressed classifier, not built here")
        self._storage = Storage.parse(self.storage)
        if self.metric == "canberra" and self._storage != Storage():
            raise FeatureError(f"storage '{self.storage}' does not serve the canberra metric; use fp32")
        if self.metric == "canberra" and self.kind == "ivf":
            raise FeatureError("the ivf index does not serve the canberra metric; use flat or hnsw")
        self._index = None
        self._pca = None  # (mean, projection)
        self._n = 0
        self._dim = 0
        self._expected = 0
        self.refs = None  # the fp32 reference matrix (fp32 storage only)

    @property
    def size(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def resolved_kind(self) -> str:
        return self.kind_for(max(self._n, self._expected), self._dim)

    def kind_for(self, n: int, dim: int) -> str:
        """The index kind these settings give for ``n`` references of ``dim`` dimensions."""
        if self.kind != "auto":
            return self.kind
        if n * self._storage.bytes_per_vector(dim) <= AUTO_FLAT_BYTES:
            return "flat"
        return "hnsw" if self.metric == "canberra" else "ivf"

    @property
    def stored_dim(self) -> int:
        return self._storage.pca or self._dim

    def memory_bytes(self) -> int:
        """Approximate bytes held by the search structure (vectors, graph links, PCA matrix)."""
        if self._index is None:
            return 0
        total = int(self._n * self._storage.bytes_per_vector(self._dim))
        if self.resolved_kind == "hnsw":
            total += self._n * self.hnsw_m * 2 * 4
        elif self.resolved_kind == "ivf":
            total += self._n * 8 + self._faiss_nlist() * self.stored_dim * 4
        if self._pca is not None:
            total += self._pca[1].nbytes + self._pca[0].nbytes
        return total

    def _faiss_nlist(self) -> int:
        import faiss

        index = faiss.extract_index_ivf(self._index) if self._index is not None else None
        return int(index.nlist) if index is not None else 0

    def _auto_nlist(self, n: int) -> int:
        return self.nlist or int(max(1, min(n // 39, round(2 * np.sqrt(max(1, n))))))

    def _nprobe(self, k: int) -> int:
        """Lists to search: a quarter of them, and at least enough to hold ~8k candidates. On clustered
        4,352-d embeddings with k = 1000 (benchmarks/bench_scale.py) this keeps EWC predictions ~96-97 %
        equal to exact search at ~10-30 ms per lone query for 1M references; set ``nprobe`` to trade."""
        nlist = self._faiss_nlist()
        if self.nprobe:
            return min(self.nprobe, nlist)
        per_list = max(1.0, self._n / max(1, nlist))
        return int(min(nlist, max(nlist // 4, int(np.ceil(8 * max(k, 1000) / per_list)), 1)))

    def _faiss_metric(self):
        import faiss

        if self._storage.pca and self.metric == "cosine":
            return faiss.METRIC_L2  # 1 - cos = |a - b|^2 / 2 between unit vectors
        return {"l2": faiss.METRIC_L2, "cosine": faiss.METRIC_INNER_PRODUCT,
                "canberra": faiss.METRIC_Canberra}[self.metric]

    def _encode(self, x: np.ndarray) -> np.ndarray:
        """Checked fp32 features -> the vectors FAISS holds (normalised, zero-guarded, projected)."""
        x = _prepare(x, self.metric)
        if self._pca is not None:
            mean, proj = self._pca
            # a few queries: one BLAS thread, or its spinning idle threads hold up FAISS's OpenMP search
            # right after (measured on 2 cores: a lone pca256+fp16 query 8 ms instead of 0.1 ms)
            with _one_blas_thread() if len(x) <= SMALL_QUERY_BATCH else contextlib.nullcontext():
                x = np.ascontiguousarray((x - mean) @ proj, dtype=np.float32)
        return x

    def train(self, sample: np.ndarray, expected_size: int | None = None) -> "KnnIndex":
        """Fit what the storage and index need (PCA, scalar quantizer ranges, IVF lists) on ``sample``
        and create an empty index; ``add`` then streams the references in (a library too large to hold
        at fp32 never has to exist in memory at once)."""
        import faiss

        sample = check_features(sample, "reference features")
        self._dim = sample.shape[1]
        self._expected = int(expected_size or len(sample))
        self._n = 0
        self.refs = None
        st = self._storage
        if st.pca:
            if st.pca >= self._dim:
                raise FeatureError(f"storage {self.storage}: {st.pca} PCA components for {self._dim}-d features")
            rows = np.random.default_rng(0).permutation(len(sample))[:PCA_SAMPLE]
            self._pca = _pca_fit(_prepare(sample[np.sort(rows)], self.metric), st.pca)
        d, metric = self.stored_dim, self._faiss_metric()
        qtype = {"fp16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}.get(st.codec)
        kind = self.resolved_kind
        if kind == "hnsw":
            index = (faiss.IndexHNSWFlat(d, self.hnsw_m, metric) if qtype is None
                     else faiss.IndexHNSWSQ(d, qtype, self.hnsw_m, metric))
            index.hnsw.efConstruction = self.ef_construction
        elif kind == "ivf":
            nlist = self._auto_nlist(self._expected)
            quantizer = faiss.IndexFlat(d, metric)
            index = (faiss.IndexIVFFlat(quantizer, d, nlist, metric) if qtype is None
                     else faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, qtype, metric))
            index.own_fields = True
            quantizer.this.disown()
            index.cp.niter = 10  # k-means iterations (FAISS's default 25 buys little for search lists)
        else:
            index = faiss.IndexFlat(d, metric) if qtype is None else faiss.IndexScalarQuantizer(d, qtype, metric)
        if not index.is_trained:
            n_train = len(sample)
            if kind == "ivf":
                n_train = min(n_train, max(IVF_TRAIN_PER_LIST * nlist, 10_000))
            else:  # scalar quantizer ranges
                n_train = min(n_train, 65_536)
            rows = np.sort(np.random.default_rng(1).permutation(len(sample))[:n_train])
            index.train(self._encode(sample[rows]))
        self._index = index
        return self

    def build(self, refs: np.ndarray) -> "KnnIndex":
        refs = check_features(refs, "reference features")
        self.train(refs, len(refs))
        self._append(refs)
        return self

    def _append(self, refs: np.ndarray) -> None:
        self._index.add(self._encode(refs))
        if self._storage == Storage():
            self.refs = refs if self.refs is None else np.concatenate([self.refs, refs])
        self._n += len(refs)

    def add(self, refs: np.ndarray) -> None:
        """Append reference vectors without rebuilding (labelling loop, or streaming after ``train``)."""
        if self._index is None:
            raise FeatureError("the reference index is empty; build or train it first")
        refs = check_features(refs, "new reference features")
        self._check_dim(refs, "new reference features")
        self._append(refs)

    def save(self, path: Path | str) -> None:
        """Write the built search structure to ``path`` (a FAISS index file; complete or absent) and, with PCA
        storage, the projection beside it (``<stem>.pca_mean.npy``, ``<stem>.pca_proj.npy``). The settings
        are not written: ``load`` the file into a KnnIndex made with the same ones."""
        import faiss

        if self._index is None:
            raise FeatureError("the reference index is empty; build it before saving")
        path = Path(path)
        part = path.with_name(path.name + ".part")
        faiss.write_index(self._index, str(part))
        if self._pca is not None:
            for array, target in zip(self._pca, _pca_files(path)):
                np.save(target, array)
        part.replace(path)

    def load(self, path: Path | str, refs: np.ndarray | None = None) -> "KnnIndex":
        """Read a file written by ``save`` into this index (made with the same settings, not yet built).
        ``refs``: the fp32 reference matrix the file was built from, kept as ``refs`` for fp32 storage."""
        import faiss

        path = Path(path)
        try:
            index = faiss.read_index(str(path))
            pca = tuple(np.load(target) for target in _pca_files(path)) if self._storage.pca else None
        except (RuntimeError, OSError, ValueError) as exc:
            detail = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:80]
            raise FeatureError(f"{path.name}: {detail}") from None
        self._index, self._pca = index, pca
        self._n = self._expected = int(index.ntotal)
        self._dim = int(pca[0].shape[0]) if pca is not None else int(index.d)
        self.refs = refs if self._storage == Storage() else None
        return self

    def _check_dim(self, x: np.ndarray, what: str) -> None:
        if x.shape[1] != self.dim:
            raise FeatureError(f"{what} have {x.shape[1]} dimensions but the reference index has "
                               f"{self.dim}; they were made with a different model combination")

    def _faiss_search(self, queries: np.ndarray, k: int):
        import faiss

        params = None
        kind = self.resolved_kind
        if kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search or 64, k))
        elif kind == "ivf":
            nprobe, nlist = self._nprobe(k), self._faiss_nlist()
            dist, ids = self._index.search(queries, k, params=faiss.SearchParametersIVF(nprobe=nprobe))
            while (ids < 0).any() and nprobe < nlist:  # the probed lists held fewer than k vectors
                rows = np.flatnonzero((ids < 0).any(axis=1))
                nprobe = min(nlist, 2 * nprobe)
                dist[rows], ids[rows] = self._index.search(queries[rows], k,
                                                           params=faiss.SearchParametersIVF(nprobe=nprobe))
            return dist, ids
        dist, ids = self._index.search(queries, k, params=params)
        return dist, ids

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, ids) of the k nearest references, nearest first; k is capped at the library size."""
        if self._index is None or self._n == 0:
            raise FeatureError("the reference index is empty; build it first")
        queries = check_features(queries, "query features")
        self._check_dim(queries, "query features")
        k = max(1, min(int(k), self.size))
        dist, ids = self._faiss_search(self._encode(queries), k)
        if (ids < 0).any():
            raise FeatureError(f"the {self.resolved_kind} search returned fewer neighbours than asked; "
                               f"raise {'ef_search' if self.resolved_kind == 'hnsw' else 'nprobe'}")
        if self._storage.pca and self.metric == "cosine":
            dist = np.maximum(dist, 0) / 2.0
        elif self.metric == "cosine":
            dist = 1.0 - dist
        elif self.metric == "l2":
            dist = np.sqrt(np.maximum(dist, 0))
        return dist.astype(np.float32), ids.astype(np.int64)
