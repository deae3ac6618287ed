"""Power-set search over model combinations and a small hyper-parameter grid, ranked by macro accuracy.

Each (subset, metric) pair builds one index and fetches the neighbours once, for the largest k_max;
every (k_min, k_max, threshold) is then evaluated on that neighbour list.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np

from cellsearch_gui.core.embedding import FeatureSet
from cellsearch_gui.core.evaluation import evaluate_predictions
from cellsearch_gui.core.ewc import adaptive_vote, class_weights
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.knn_index import KnnIndex


@dataclass
class Grid:
    metrics: list[str] = field(default_factory=lambda: ["l2", "cosine", "canberra"])
    k_mins: list[int] = field(default_factory=lambda: [3])
    k_maxs: list[int] = field(default_factory=lambda: [1000])
    thresholds: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5])
    entropy_norms: list[str] = field(default_factory=lambda: ["log_k"])
    growth: float = 2.0

    def size(self) -> int:
        return (len(self.metrics) * len(self.k_mins) * len(self.k_maxs) * len(self.thresholds)
                * len(self.entropy_norms))


def power_set(items: list[str]) -> list[tuple[str, ...]]:
    return [c for r in range(1, len(items) + 1) for c in itertools.combinations(items, r)]


def search_combinations(ref: FeatureSet, val: FeatureSet, model_ids: list[str], grid: Grid,
                        token: CancelToken | None = None) -> Job[list[dict]]:
    token = token or CancelToken()
    classes = sorted(set(ref.labels))
    lookup = {c: i for i, c in enumerate(classes)}
    ref_ids = np.array([lookup[c] for c in ref.labels], dtype=np.int64)
    weights = class_weights(ref_ids, len(classes))
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
            _, nn = KnnIndex(metric=metric).build(ref_x).search(val_x, k_fetch)
            labels = ref_ids[nn]
            for k_min, k_max, thr, norm in itertools.product(grid.k_mins, grid.k_maxs, grid.thresholds,
                                                             grid.entropy_norms):
                if k_min > k_max:
                    continue
                vote = adaptive_vote(labels, weights, k_min, k_max, thr, grid.growth, norm)
                scores = evaluate_predictions(val.labels, [classes[i] for i in vote.label_ids])
                rows.append({
                    "models": list(subset), "metric": metric, "k_min": k_min, "k_max": k_max,
                    "entropy_threshold": thr, "entropy_norm": norm,
                    "balanced_accuracy": scores["balanced_accuracy"],
                    "macro_precision": scores["macro_precision"],
                    "mean_k": float(vote.k_used.mean()),
                    "search_s": time.perf_counter() - t0,
                })
            step += 1
    yield Progress("searching combinations", steps, steps)
    rows.sort(key=lambda r: (-r["balanced_accuracy"], -r["macro_precision"], len(r["models"])))
    return rows
