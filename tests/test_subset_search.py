"""The shared-work power-set search equals one exact FAISS search per subset, for every metric."""

import numpy as np
import pytest

from cellsearch_gui.core.classify.combinations import (
    Grid,
    power_set,
    search_combinations,
    search_combinations_faiss,
)
from cellsearch_gui.core.classify.ewc import adaptive_vote, adaptive_vote_many
from cellsearch_gui.core.index import canberra
from cellsearch_gui.core.index.knn import KnnIndex
from cellsearch_gui.core.index.subsets import chunk_rows, subset_search
from cellsearch_gui.core.jobs import run_job
from cellsearch_gui.core.types import FeatureSet

DIMS = {"a": 6, "b": 9, "c": 4}


def _blocks(rng, n, n_classes=4, relu=True, y=None):
    y = rng.integers(0, n_classes, n) if y is None else y
    out = {}
    for m, d in DIMS.items():
        centres = rng.normal(size=(n_classes, d)) * 1.5
        x = centres[y] + rng.normal(size=(n, d)) * (1 + rng.random())
        out[m] = (np.maximum(x, 0) if relu else x).astype(np.float32) * rng.uniform(0.5, 3)
    return out, [f"class{v}" for v in y]


def _featureset(blocks, labels, per_model_l2):
    models = list(blocks)
    return FeatureSet(paths=[f"{i}.png" for i in range(len(labels))], labels=labels,
                      features=np.concatenate([blocks[m] for m in models], axis=1), model_ids=models,
                      dims=[DIMS[m] for m in models], per_model_l2=per_model_l2, fingerprints={},
                      per_model=blocks)


def _exact(val, ref, metric):
    """float64 distances with KnnIndex's conventions (a zero vector's cosine similarity is 0)."""
    from scipy.spatial.distance import cdist

    val, ref = val.astype(np.float64), ref.astype(np.float64)
    if metric == "cosine":
        unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return 1.0 - unit(val) @ unit(ref).T
    return cdist(val, ref, "euclidean" if metric == "l2" else "canberra")


def _check_same_neighbours(metric, exact, scale, d_fast, i_fast, d_ref, i_ref):
    """Distances equal to float32 rounding, and at every rank a neighbour exactly as near as FAISS's
    (ids may differ only among references whose distances tie)."""
    square = (lambda d: d.astype(np.float64) ** 2) if metric == "l2" else (lambda d: d.astype(np.float64))
    tol = 1e-5 * scale  # float32 rounding of |a|^2 + |b|^2 - 2ab (l2), of 1 - cos, of a Canberra sum
    assert np.abs(square(d_fast) - square(d_ref)).max() <= tol
    near_fast = np.take_along_axis(exact, i_fast, axis=1)
    near_ref = np.take_along_axis(exact, i_ref, axis=1)
    assert np.abs(square(near_fast) - square(near_ref)).max() <= tol
    assert (i_fast == i_ref).mean() > 0.5  # mostly the very same ids; the rest are ties


@pytest.mark.parametrize("per_model_l2", [False, True])
@pytest.mark.parametrize("metric", ["l2", "cosine", "canberra"])
def test_subset_distances_equal_flat_faiss_per_subset(rng, metric, per_model_l2):
    ref_b, ref_y = _blocks(rng, 300)
    val_b, _ = _blocks(rng, 45)
    ref, val = _featureset(ref_b, ref_y, per_model_l2), _featureset(val_b, ref_y[:45], per_model_l2)
    models = list(DIMS)
    subsets = [tuple(models.index(m) for m in s) for s in power_set(models)]
    # a tiny memory budget forces several validation chunks
    fast = subset_search([ref.select([m]) for m in models], [val.select([m]) for m in models], subsets,
                         metric, 60, max_bytes=40_000)
    assert chunk_rows(300, 3, [metric], 40_000) < 45
    for s in power_set(models):
        d_ref, i_ref = KnnIndex(metric=metric, kind="flat").build(ref.select(list(s))).search(
            val.select(list(s)), 60)
        d_fast, i_fast = fast[tuple(models.index(m) for m in s)]
        xv, xr = val.select(list(s)), ref.select(list(s))
        scale = {"l2": float((xr ** 2).sum(1).max() + (xv ** 2).sum(1).max()), "cosine": 2.0,
                 "canberra": float(xr.shape[1])}[metric]
        _check_same_neighbours(metric, _exact(xv, xr, metric), scale, d_fast, i_fast, d_ref, i_ref)


@pytest.mark.parametrize("per_model_l2", [False, True])
def test_search_combinations_rows_equal_the_faiss_path(rng, per_model_l2):
    # signed features (no exact zeros), so distance ties have probability zero and the rankings,
    # hence every vote, must come out identical
    y_ref = rng.choice(4, 400, p=[0.5, 0.3, 0.15, 0.05])
    ref_b, ref_y = _blocks(rng, 400, y=y_ref, relu=False)
    val_b, val_y = _blocks(rng, 80, relu=False)
    ref, val = _featureset(ref_b, ref_y, per_model_l2), _featureset(val_b, val_y, per_model_l2)
    grid = Grid(metrics=["l2", "cosine", "canberra"], k_mins=[1, 3], k_maxs=[10, 400],
                thresholds=[0.1, 0.3, 0.6], entropy_norms=["log_k", "log_min_kc"])
    fast = run_job(search_combinations(ref, val, list(DIMS), grid, max_bytes=300_000))
    slow = run_job(search_combinations_faiss(ref, val, list(DIMS), grid))
    assert len(fast) == len(slow) == 7 * 3 * 2 * 2 * 3 * 2
    keys = ("models", "metric", "k_min", "k_max", "entropy_threshold", "entropy_norm",
            "balanced_accuracy", "macro_precision", "mean_k")
    assert [{k: r[k] for k in keys} for r in fast] == [{k: r[k] for k in keys} for r in slow]
    assert all(r["search_s"] >= 0 for r in fast)


def test_search_combinations_engine_names(rng):
    ref_b, ref_y = _blocks(rng, 50)
    ref = _featureset(ref_b, ref_y, False)
    with pytest.raises(ValueError, match="unknown search engine"):
        run_job(search_combinations(ref, ref, list(DIMS), Grid(), engine="nope"))
    rows = run_job(search_combinations(ref, ref, list(DIMS), Grid(metrics=["l2"]), engine="faiss"))
    assert len(rows) == 7 * 3


@pytest.mark.parametrize("norm", ["log_k", "log_min_kc"])
def test_vote_many_equals_one_threshold_at_a_time(rng, norm):
    labels = rng.choice(5, size=(3000, 200), p=[0.4, 0.3, 0.15, 0.1, 0.05])
    labels[:1000] = np.where(rng.random((1000, 200)) < 0.8, 2, labels[:1000])
    weights = np.array([0.5, 0.7, 1.3, 2.0, 4.0])
    thresholds = [0.0, 0.1, 0.3, 0.5, 1.0]
    many = adaptive_vote_many(labels, weights, 1, 150, thresholds, 2.0, norm)
    for thr, got in zip(thresholds, many):
        one = adaptive_vote(labels, weights, 1, 150, thr, 2.0, norm)
        for field in ("label_ids", "k_used", "entropy", "scores"):
            assert np.array_equal(getattr(got, field), getattr(one, field))


def test_vote_ties_go_to_the_class_seen_first(rng):
    # equal weights, k=4 with two classes holding two votes each: the nearest neighbour's class wins
    labels = np.array([[1, 0, 0, 1, 2], [0, 1, 1, 0, 2], [2, 2, 1, 1, 0]])
    vote = adaptive_vote(labels, np.ones(3), 4, 4, 0.0)
    assert vote.label_ids.tolist() == [1, 0, 2]


@pytest.mark.parametrize("use_numba", [True, False])
def test_canberra_matrix_matches_scipy(rng, monkeypatch, use_numba):
    if use_numba and not canberra.HAVE_NUMBA:
        pytest.skip("numba not installed")
    monkeypatch.setattr(canberra, "HAVE_NUMBA", use_numba)
    from scipy.spatial.distance import cdist

    a = np.maximum(rng.normal(size=(13, 37)), 0).astype(np.float32)
    b = np.maximum(rng.normal(size=(21, 37)), 0).astype(np.float32)
    b[3] = 0  # an all-zero row: every 0/0 term counts 0
    a[:, 5] = -a[:, 5]  # signs matter: |a - b| / (|a| + |b|)
    got = canberra.canberra_matrix(a, b)
    assert got == pytest.approx(cdist(a.astype(np.float64), b.astype(np.float64), "canberra"), rel=1e-5)
    acc = canberra.canberra_matrix(a, b, out=np.ones_like(got), accumulate=True)
    assert acc == pytest.approx(got + 1, rel=1e-5)
