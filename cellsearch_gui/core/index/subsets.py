"""Exact k-nearest-neighbour search for every subset of a model combination, sharing per-model work.

The three metrics decompose over the models of a concatenation [x_1 | x_2 | ... ]:

* l2:       |a - b|^2 = sum_m (|a_m|^2 + |b_m|^2 - 2 a_m.b_m)
* cosine:   cos(a, b) = sum_m a_m.b_m / sqrt(sum_m |a_m|^2 * sum_m |b_m|^2)   (blocks as given, normalised
            per model beforehand only when the feature set says so)
* canberra: sum over dimensions, so the sum of the per-model Canberra distances

So for a chunk of validation rows the per-model dot products (one BLAS GEMM per model, shared by l2
and cosine) and per-model Canberra matrices are computed once, and each subset's distance matrix is
its parent subset's plus one model's (a depth-first walk over the subsets keeps one partial sum per
depth). The top k of every (subset, metric) then comes from ``torch.topk``. The validation rows are
processed in chunks sized so that the matrices held at once stay under ``max_bytes``.

Results equal a FAISS ``IndexFlat`` search of each concatenation (``KnnIndex(kind='flat')``): same
distances to float32 rounding, same neighbours except where two distances tie to within rounding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from cellsearch_gui.core.errors import FeatureError
from cellsearch_gui.core.index.canberra import canberra_matrix
from cellsearch_gui.core.index.knn import METRICS, check_features

DEFAULT_MAX_BYTES = 768 << 20


@dataclass
class SubsetHits:
    """The k nearest references of validation rows ``rows`` for one (subset, metric)."""

    rows: slice
    subset: tuple[int, ...]
    metric: str
    distances: np.ndarray  # (len(rows), k) float32, nearest first; same units as KnnIndex.search
    ids: np.ndarray  # (len(rows), k) int64


def _check_blocks(ref_blocks, val_blocks):
    if len(ref_blocks) != len(val_blocks) or not ref_blocks:
        raise FeatureError(f"{len(ref_blocks)} reference blocks but {len(val_blocks)} validation blocks")
    refs = [check_features(b, "reference features") for b in ref_blocks]
    vals = [check_features(b, "validation features") for b in val_blocks]
    n_ref, n_val = len(refs[0]), len(vals[0])
    for m, (r, v) in enumerate(zip(refs, vals)):
        if len(r) != n_ref or len(v) != n_val:
            raise FeatureError(f"model block {m} has {len(r)} reference / {len(v)} validation rows, "
                               f"expected {n_ref} / {n_val}")
        if r.shape[1] != v.shape[1]:
            raise FeatureError(f"model block {m}: reference and validation dimensions differ "
                               f"({r.shape[1]} vs {v.shape[1]})")
    return refs, vals


def chunk_rows(n_ref: int, n_models: int, metrics: Sequence[str], max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """Validation rows per chunk so that the (rows x n_ref) float32 matrices held at once fit max_bytes."""
    dots = any(m in ("l2", "cosine") for m in metrics)
    canb = "canberra" in metrics
    # per-model matrices + one partial sum per depth (for each kind) + ~3 temporaries
    mats = (2 * n_models) * (int(dots) + int(canb)) + 3
    return max(1, int(max_bytes // (mats * 4 * max(1, n_ref))))


def _ordered(subsets: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Lexicographic order (depth-first over the subset tree) so each subset extends the one before."""
    return sorted({tuple(sorted(s)) for s in subsets})


def subset_neighbours(ref_blocks: Sequence[np.ndarray], val_blocks: Sequence[np.ndarray],
                      subsets: Sequence[tuple[int, ...]], metrics: Sequence[str], k: int,
                      max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[SubsetHits]:
    """Yield the exact k nearest references of every (chunk of validation rows, subset, metric).

    ``ref_blocks[m]`` / ``val_blocks[m]`` are model m's features, already normalised per model if the
    feature set asks for it (what ``FeatureSet.select([m])`` returns). ``subsets`` hold block indices.
    """
    import torch


    for metric in metrics:
        if metric not in METRICS:
            raise FeatureError(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")
    refs, vals = _check_blocks(ref_blocks, val_blocks)
    n_ref, n_val = len(refs[0]), len(vals[0])
    k = max(1, min(int(k), n_ref))
    order = _ordered(subsets)
    for s in order:
        if not s or s[0] < 0 or s[-1] >= len(refs):
            raise FeatureError(f"subset {s} does not index the {len(refs)} model blocks")
    want_dot = any(m in ("l2", "cosine") for m in metrics)
    want_canb = "canberra" in metrics
    ref_sq = [np.einsum("ij,ij->i", r, r, dtype=np.float64) for r in refs] if want_dot else None
    step = chunk_rows(n_ref, len(refs), metrics, max_bytes)
    for start in range(0, n_val, step):
        rows = slice(start, min(n_val, start + step))
        chunk = [v[rows] for v in vals]
        dots = [c @ r.T for c, r in zip(chunk, refs)] if want_dot else None  # BLAS reads r transposed
        val_sq = [np.einsum("ij,ij->i", c, c, dtype=np.float64) for c in chunk] if want_dot else None
        canb = [canberra_matrix(c, r) for c, r in zip(chunk, refs)] if want_canb else None
        stack: list[tuple[tuple[int, ...], dict]] = []  # (prefix, partial sums) per depth
        for subset in order:
            while stack and stack[-1][0] != subset[:len(stack[-1][0])]:
                stack.pop()
            prefix = stack[-1][0] if stack else ()
            for m in subset[len(prefix):]:
                prev = stack[-1][1] if stack else None
                sums = {}
                if want_dot:
                    sums["dot"] = dots[m] if prev is None else prev["dot"] + dots[m]
                    sums["vsq"] = val_sq[m] if prev is None else prev["vsq"] + val_sq[m]
                    sums["rsq"] = ref_sq[m] if prev is None else prev["rsq"] + ref_sq[m]
                if want_canb:
                    sums["canb"] = canb[m] if prev is None else prev["canb"] + canb[m]
                prefix = prefix + (m,)
                stack.append((prefix, sums))
            sums = stack[-1][1]
            for metric in metrics:
                if metric == "l2":
                    d2 = sums["dot"] * np.float32(-2.0)
                    d2 += sums["vsq"].astype(np.float32)[:, None]
                    d2 += sums["rsq"].astype(np.float32)[None, :]
                    val, ids = torch.topk(torch.from_numpy(d2), k, dim=1, largest=False, sorted=True)
                    dist = np.sqrt(np.maximum(val.numpy(), 0))
                elif metric == "cosine":
                    vn = np.maximum(np.sqrt(sums["vsq"]), 1e-12).astype(np.float32)
                    rn = np.maximum(np.sqrt(sums["rsq"]), 1e-12).astype(np.float32)
                    sim = sums["dot"] / vn[:, None]
                    sim /= rn[None, :]
                    val, ids = torch.topk(torch.from_numpy(sim), k, dim=1, largest=True, sorted=True)
                    dist = 1.0 - val.numpy()
                else:
                    val, ids = torch.topk(torch.from_numpy(sums["canb"]), k, dim=1, largest=False,
                                          sorted=True)
                    dist = val.numpy()
                yield SubsetHits(rows, subset, metric, dist.astype(np.float32),
                                 ids.numpy().astype(np.int64))


def subset_search(ref_blocks, val_blocks, subsets, metric: str, k: int,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]]:
    """All rows at once: {subset: (distances, ids)} for one metric (convenience for tests, benchmarks)."""
    n_val = len(val_blocks[0])
    out: dict = {}
    for hit in subset_neighbours(ref_blocks, val_blocks, subsets, [metric], k, max_bytes):
        if hit.subset not in out:
            kk = hit.ids.shape[1]
            out[hit.subset] = (np.zeros((n_val, kk), np.float32), np.zeros((n_val, kk), np.int64))
        out[hit.subset][0][hit.rows] = hit.distances
        out[hit.subset][1][hit.rows] = hit.ids
    return out
