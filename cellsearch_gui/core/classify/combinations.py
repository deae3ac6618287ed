"""Power-set search over model combinations and a small hyper-parameter grid, ranked by macro accuracy.

The neighbours of every (subset, metric) are fetched once, for the largest k_max, and every
(k_min, k_max, threshold, entropy rule) is evaluated on that list (the thresholds of one k rule share
their class counts). The default engine (``subset_search``) computes the per-model distance matrices
once per chunk of validation rows and sums them per subset instead of building an index per subset;
``engine="faiss"`` keeps the original one-exact-index-per-(subset, metric) path (same results up to
distance ties, far slower; kept for comparison).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np

from cellsearch_gui.core import validation
from cellsearch_gui.core.classify.evaluation import evaluate_predictions
from cellsearch_gui.core.classify.ewc import (
    adaptive_vote,
    adaptive_vote_many,
    encode_labels,
)
from cellsearch_gui.core.index.knn import KnnIndex
from cellsearch_gui.core.index.subsets import (
    DEFAULT_MAX_BYTES,
    chunk_rows,
    subset_neighbours,
)
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.options import StoppingRule
from cellsearch_gui.core.types import FeatureSet


@dataclass
class Grid:
    metrics: list[str] = field(default_factory=lambda: ["l2", "cosine", "canberra"])
    k_mins: list[int] = field(default_factory=lambda: [3])
    k_maxs: list[int] = field(default_factory=lambda: [1000])
    thresholds: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5])
    entropy_norms: list[str] = field(default_factory=lambda: ["log_k"])
    # the product's rule (app/defaults); the paper's is "paper"
    stoppings: list[str] = field(default_factory=lambda: [StoppingRule.LOWEST_ENTROPY.value])
    growth: float = 2.0

    def __post_init__(self) -> None:
        """Every value checked against its domain (core/validation.py), so every ranked row, and the
        suggestion made from the best one, is a valid setting; at least one k_min <= k_max pair must exist."""
        for name, values, domain in (("metrics", self.metrics, validation.METRIC),
                                     ("k_mins", self.k_mins, validation.K_MIN),
                                     ("k_maxs", self.k_maxs, validation.K_MAX),
                                     ("thresholds", self.thresholds, validation.ENTROPY_THRESHOLD),
                                     ("entropy_norms", self.entropy_norms, validation.ENTROPY_NORM),
                                     ("stoppings", self.stoppings, validation.STOPPING)):
            if isinstance(values, str) or not list(values):
                raise validation.InvalidSetting(f"the search grid needs at least one value in {name}")
            for value in values:
                domain.check(value)
        validation.GROWTH.check(self.growth)
        if not any(k_min <= k_max for k_min in self.k_mins for k_max in self.k_maxs):
            raise validation.InvalidSetting(
                f"no k_min <= k_max pair in the search grid: k_min {self.k_mins}, k_max {self.k_maxs}")

    def size(self) -> int:
        return (len(self.metrics) * len(self.k_mins) * len(self.k_maxs) * len(self.thresholds)
                * len(self.entropy_norms) * len(self.stoppings))


def power_set(items: list[str]) -> list[tuple[str, ...]]:
    return [c for r in range(1, len(items) + 1) for c in itertools.combinations(items, r)]


def _grid_points(grid: Grid) -> list[tuple[int, int, float, str, str]]:
    return [(k_min, k_max, thr, norm, stop) for k_min, k_max, thr, norm, stop in
            itertools.product(grid.k_mins, grid.k_maxs, grid.thresholds, grid.entropy_norms, grid.stoppings)
            if k_min <= k_max]


def _row(subset, metric, point, truth, predicted, mean_k, seconds) -> dict:
    k_min, k_max, thr, norm, stop = point
    scores = evaluate_predictions(truth, predicted)
    return {
        "models": list(subset), "metric": metric, "k_min": k_min, "k_max": k_max,
        "entropy_threshold": thr, "entropy_norm": norm, "stopping": stop,
        "balanced_accuracy": scores["balanced_accuracy"],
        "macro_precision": scores["macro_precision"],
        "mean_k": mean_k,
        "search_s": seconds,
    }


def _rank(rows: list[dict]) -> list[dict]:
    rows.sort(key=lambda r: (-r["balanced_accuracy"], -r["macro_precision"], len(r["models"])))
    return rows


def search_combinations(ref: FeatureSet, val: FeatureSet, model_ids: list[str], grid: Grid,
                        token: CancelToken | None = None, engine: str = "blocks",
                        max_bytes: int = DEFAULT_MAX_BYTES) -> Job[list[dict]]:
    """Rank every subset of ``model_ids`` x metric x grid point by balanced accuracy on ``val``.

    Rows (one per subset x metric x grid point): models, metric, k_min, k_max, entropy_threshold,
    entropy_norm, balanced_accuracy, macro_precision, mean_k, search_s (seconds spent on that
    subset and metric; a chunk's per-model distance work is counted with the first subset that
    needed it). ``max_bytes`` bounds the distance matrices held at once (validation rows are
    processed in chunks).
    """
    if engine == "faiss":
        return (yield from search_combinations_faiss(ref, val, model_ids, grid, token))
    if engine != "blocks":
        raise ValueError(f"unknown search engine '{engine}'; choose blocks or faiss")
    token = token or CancelToken()
    classes, ref_ids, weights = encode_labels(ref.labels)
    subsets = power_set(model_ids)
    points = _grid_points(grid)
    rules = sorted({(k_min, k_max, norm, stop) for k_min, k_max, _, norm, stop in points})
    k_fetch = min(max(grid.k_maxs), len(ref_ids))
    ref_blocks = [ref.select([m]) for m in model_ids]
    val_blocks = [val.select([m]) for m in model_ids]
    n_val = len(val_blocks[0])
    position = {m: i for i, m in enumerate(model_ids)}
    index_of = {s: tuple(position[m] for m in s) for s in subsets}
    predicted = {(s, metric): np.zeros((len(points), n_val), np.int64) for s in subsets for metric in grid.metrics}
    k_sum = {key: np.zeros(len(points)) for key in predicted}
    seconds = {key: 0.0 for key in predicted}
    step_rows = chunk_rows(len(ref_ids), len(model_ids), grid.metrics, max_bytes)
    n_chunks = -(-n_val // step_rows)
    steps = n_chunks * len(subsets) * len(grid.metrics)
    by_index = {v: s for s, v in index_of.items()}
    done = 0
    yield Progress("searching combinations", 0, steps, "per-model distances")
    t_mark = time.perf_counter()
    for hit in subset_neighbours(ref_blocks, val_blocks, list(index_of.values()), grid.metrics, k_fetch,
                                 max_bytes):
        subset = by_index[hit.subset]
        key = (subset, hit.metric)
        labels = ref_ids[hit.ids]
        for k_min, k_max, norm, stop in rules:
            where = [i for i, p in enumerate(points) if (p[0], p[1], p[3], p[4]) == (k_min, k_max, norm, stop)]
            votes = adaptive_vote_many(labels, weights, k_min, k_max, [points[i][2] for i in where], grid.growth,
                                       norm, stop)
            for i, vote in zip(where, votes):
                predicted[key][i, hit.rows] = vote.label_ids
                k_sum[key][i] += vote.k_used.sum()
        seconds[key] += time.perf_counter() - t_mark
        done += 1
        token.raise_if_cancelled()
        yield Progress("searching combinations", done, steps, f"{'+'.join(subset)} / {hit.metric}")
        t_mark = time.perf_counter()
    rows: list[dict] = []
    for subset in subsets:
        for metric in grid.metrics:
            key = (subset, metric)
            for i, point in enumerate(points):
                rows.append(_row(subset, metric, point, val.labels, [classes[j] for j in predicted[key][i]],
                                 float(k_sum[key][i] / max(1, n_val)), seconds[key]))
    yield Progress("searching combinations", steps, steps)
    return _rank(rows)


def search_combinations_faiss(ref: FeatureSet, val: FeatureSet, model_ids: list[str], grid: Grid,
                              token: CancelToken | None = None) -> Job[list[dict]]:
    """The original path: one exact FAISS index and search per (subset, metric)."""
    token = token or CancelToken()
    classes, ref_ids, weights = encode_labels(ref.labels)
    subsets = power_set(model_ids)
    steps = len(subsets) * len(grid.metrics)
    rows: list[dict] = []
    k_fetch = min(max(grid.k_maxs), len(ref_ids))
    step = 0
    for subset in subsets:
        ref_x, val_x = ref.select(list(subset)), val.select(list(subset))
        for metric in grid.metrics:
            token.raise_if_cancelled()
            yield Progress("searching combinations", step, steps, f"{'+'.join(subset)} / {metric}")
            t0 = time.perf_counter()
            _, nn = KnnIndex(metric=metric, kind="flat").build(ref_x).search(val_x, k_fetch)
            labels = ref_ids[nn]
            for point in _grid_points(grid):
                k_min, k_max, thr, norm, stop = point
                vote = adaptive_vote(labels, weights, k_min, k_max, thr, grid.growth, norm, stop)
                rows.append(_row(subset, metric, point, val.labels, [classes[i] for i in vote.label_ids],
                                 float(vote.k_used.mean()), time.perf_counter() - t0))
            step += 1
    yield Progress("searching combinations", steps, steps)
    return _rank(rows)
