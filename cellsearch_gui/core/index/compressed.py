"""A library larger than memory: PCA + IVF-PQ (FAISS), trained on a sample and filled shard by shard.

Each reference is kept as ``pq_bytes`` bytes of product-quantizer code (plus its 8-byte id) in one of
``nlist`` inverted lists over PCA-``pca`` space, so 10^7 cells at 64 bytes take ~0.7 GiB and 10^8 ~7 GiB
whatever the embedding width; the fp32 vectors stay in their shards on disk. FAISS runs on the GPUs when
the installed FAISS has them. Search returns approximate neighbours; benchmarks/ray_library_scale.py
measures recall@k_max and EWC agreement against exact search at 1M cells. ``search`` can re-rank a few k
candidates by their exact fp32 distance, read from the shards (memory-mapped): codes in RAM, vectors on disk."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from cellsearch_gui.core.errors import FeatureError
from cellsearch_gui.core.index.knn import _pca_fit, check_features

TRAIN_PER_LIST = 40  # k-means sample rows per inverted list
MAX_TRAIN = 100_000
PQ_CODES = 256  # 8-bit codes: each sub-quantizer's k-means needs at least this many training rows
MIN_TRAIN = 4 * PQ_CODES
PCA_SAMPLE = 16_384
DEFAULT_RERANK = 4  # candidates re-ranked exactly: this many x k (classify --rerank; 0: the codes only)


def _exact_rerank(queries: np.ndarray, ids: np.ndarray, vectors, k: int, metric: str):
    """Squared L2 distances to each query's candidates from their fp32 rows, the k smallest, nearest first."""
    out_d, out_i = np.empty((len(ids), k), np.float32), np.empty((len(ids), k), np.int64)
    for row, (q, cand) in enumerate(zip(queries, ids)):
        x = np.asarray(vectors(cand), dtype=np.float32)
        if metric == "cosine":
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        d = ((x - q) ** 2).sum(1)
        top = np.argsort(d, kind="stable")[:k]
        out_d[row], out_i[row] = d[top], cand[top]
    return out_d, out_i


def auto_nlist(n: int) -> int:
    """About 2 sqrt(N) lists, at least 1, at most N / 39."""
    return int(max(1, min(max(1, n // 39), round(2 * np.sqrt(max(n, 1))))))


def memory_plan(n: int, dim: int, pca: int = 256, pq_bytes: int = 64, nlist: int = 0) -> dict:
    """Bytes the compressed index and the fp32 shards take for ``n`` references of ``dim`` dimensions."""
    nlist = nlist or auto_nlist(n)
    index = n * (pq_bytes + 8) + nlist * pca * 4 + pca * 256 * 4 + dim * pca * 4
    return {"n": n, "dim": dim, "pca": pca, "pq_bytes": pq_bytes, "nlist": nlist,
            "index_gib": index / 2**30, "fp32_shards_gib": n * dim * 4 / 2**30,
            "flat_fp32_in_ram_gib": n * dim * 4 / 2**30}


@dataclass
class CompressedIndex:
    """PCA-``pca`` + IVF(``nlist``)-PQ(``pq_bytes`` x 8 bit) over L2 (cosine: unit vectors first)."""

    metric: str = "l2"
    pca: int = 256
    pq_bytes: int = 64
    nlist: int = 0  # 0: auto_nlist(expected size)
    nprobe: int = 0  # 0: enough lists for ~8 k_max candidates, at least nlist / 16
    use_gpu: bool = True  # when FAISS has GPUs

    def __post_init__(self) -> None:
        if self.metric not in ("l2", "cosine"):
            raise FeatureError(f"the compressed index serves l2 and cosine, not '{self.metric}'")
        if self.pca % self.pq_bytes:
            raise FeatureError(f"pca ({self.pca}) must be a multiple of pq_bytes ({self.pq_bytes})")
        self._index = None
        self._n = 0
        self._dim = 0

    @property
    def size(self) -> int:
        return self._n

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        x = check_features(x, "features")
        if self.metric == "cosine":
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(x, dtype=np.float32)

    def train(self, sample: np.ndarray, expected_size: int) -> "CompressedIndex":
        """PCA (randomized, on up to PCA_SAMPLE rows), then the IVF lists and PQ codebooks in PCA space."""
        import faiss

        sample = self._prepare(sample)
        dim = sample.shape[1]
        if self.pca > dim:
            raise FeatureError(f"{self.pca} PCA components for {dim}-d features")
        rng = np.random.default_rng(0)
        self._pca = _pca_fit(sample[np.sort(rng.permutation(len(sample))[:PCA_SAMPLE])], self.pca)
        nlist = self.nlist or auto_nlist(expected_size)
        quantizer = faiss.IndexFlatL2(self.pca)
        index = faiss.IndexIVFPQ(quantizer, self.pca, nlist, self.pq_bytes, 8)
        index.own_fields = True
        quantizer.this.disown()
        index.cp.niter = 10
        index.cp.min_points_per_centroid = index.pq.cp.min_points_per_centroid = 1  # small libraries: no warnings
        if len(sample) < PQ_CODES:
            raise FeatureError(f"a compressed index needs at least {PQ_CODES} training rows, got {len(sample)}")
        rows = np.sort(rng.permutation(len(sample))[:max(MIN_TRAIN, min(MAX_TRAIN, TRAIN_PER_LIST * nlist))])
        index.train(self._project(sample[rows]))
        self._dim = dim
        self._index = self._on_gpu(index)
        self._n = 0
        return self

    def _project(self, x: np.ndarray) -> np.ndarray:
        mean, proj = self._pca
        return np.ascontiguousarray((x - mean) @ proj, dtype=np.float32)

    def _on_gpu(self, index):
        import faiss

        if self.use_gpu and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
            return faiss.index_cpu_to_all_gpus(index)  # pragma: no cover - GPU machines only
        return index

    def add(self, x: np.ndarray) -> None:
        if self._index is None:
            raise FeatureError("train the compressed index before adding references")
        self._index.add(self._project(self._prepare(x)))
        self._n += len(x)

    def add_shards(self, shards: Iterable[np.ndarray]) -> None:
        for x in shards:
            self.add(x)

    def lists(self) -> int:
        import faiss

        return int(faiss.extract_index_ivf(self._index).nlist)

    def probes(self, k: int) -> int:
        nlist = self.lists()
        if self.nprobe:
            return min(self.nprobe, nlist)
        per_list = max(1.0, self._n / nlist)
        return int(min(nlist, max(nlist // 16, int(np.ceil(8 * k / per_list)), 1)))

    def search(self, queries: np.ndarray, k: int, vectors: Callable[[np.ndarray], np.ndarray] | None = None,
               rerank: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """(L2 distances, ids) of the k nearest references, nearest first. With ``vectors`` (ids -> their fp32
        rows, e.g. read from the shards on disk), ``rerank`` x k candidates are re-ranked by exact distance;
        without, the distances are the PQ approximations."""
        import faiss

        if self._index is None or self._n == 0:
            raise FeatureError("the compressed index is empty")
        k = max(1, min(int(k), self._n))
        fetch = min(self._n, k * rerank) if vectors is not None else k
        faiss.extract_index_ivf(self._index).nprobe = self.probes(fetch)
        queries = self._prepare(queries)
        dist, ids = self._index.search(self._project(queries), fetch)
        if (ids < 0).any():
            raise FeatureError("the probed lists held fewer than k references; raise nprobe")
        if vectors is not None:
            dist, ids = _exact_rerank(queries, ids, vectors, k, self.metric)
        return np.sqrt(np.maximum(dist, 0)).astype(np.float32), ids.astype(np.int64)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The trained, filled index as arrays: FAISS's own serialisation (what write_index writes) and the PCA."""
        import faiss

        index = self._index
        if self.use_gpu and hasattr(faiss, "index_gpu_to_cpu") and faiss.get_num_gpus() > 0:
            index = faiss.index_gpu_to_cpu(index)  # pragma: no cover - GPU machines only
        mean, proj = self._pca
        return {"faiss": faiss.serialize_index(index), "pca_mean": np.asarray(mean), "pca_proj": np.asarray(proj)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], metric: str = "l2", use_gpu: bool = True) -> "CompressedIndex":
        """The index ``to_arrays`` gave (FeatureError when FAISS cannot read it)."""
        import faiss

        try:
            index = faiss.deserialize_index(np.ascontiguousarray(arrays["faiss"], dtype=np.uint8))
            ivf = faiss.extract_index_ivf(index)
            pq_bytes = int(faiss.downcast_index(index).pq.M)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise FeatureError(f"not a FAISS IVF-PQ index ({str(exc).strip().splitlines()[-1]})") from None
        proj = np.asarray(arrays["pca_proj"], dtype=np.float32)
        out = cls(metric=metric, pca=proj.shape[1], pq_bytes=pq_bytes, nlist=int(ivf.nlist), use_gpu=use_gpu)
        out._pca = (np.asarray(arrays["pca_mean"]), proj)
        out._dim, out._n = proj.shape[0], int(index.ntotal)
        out._index = out._on_gpu(index)
        return out

    def memory_bytes(self) -> int:
        return int(memory_plan(self._n, self._dim, self.pca,
                               self.pq_bytes, self.lists() if self._index is not None else 1)["index_gib"] * 2**30)
