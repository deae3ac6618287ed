"""Accuracy against coverage: keep the most confident fraction of cells (lowest entropy) and score only those,
so a user can see how far the confident part of the predictions can be trusted."""

from __future__ import annotations

import numpy as np

from cellsearch_gui.core.classify.evaluation import evaluate_predictions

COVERAGES = (1.0, 0.8, 0.6, 0.4)


def accuracy_by_coverage(truth: list[str], predicted: list[str], entropy: np.ndarray,
                         coverages: tuple[float, ...] = COVERAGES) -> dict[str, dict[str, float]]:
    """{"1.0": {...}, "0.8": {...}}: accuracy and macro accuracy of the ceil(x * n) lowest-entropy cells
    (ties keep the original order), with the entropy of the last cell kept (the confidence cut-off)."""
    order = np.argsort(np.asarray(entropy, dtype=np.float64), kind="stable")
    out = {}
    for coverage in coverages:
        n = int(np.ceil(coverage * len(order)))
        kept = order[:n]
        if n == 0:
            out[f"{coverage:.1f}"] = {"n_cells": 0, "accuracy": 0.0, "balanced_accuracy": 0.0, "max_entropy": 0.0}
            continue
        scores = evaluate_predictions([truth[i] for i in kept], [predicted[i] for i in kept])
        out[f"{coverage:.1f}"] = {"n_cells": n, "accuracy": scores["accuracy"],
                                  "balanced_accuracy": scores["balanced_accuracy"],
                                  "max_entropy": float(np.asarray(entropy)[kept[-1]])}
    return out


def mean_coverage(tables: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Field-wise mean of several ``accuracy_by_coverage`` tables (one per seed)."""
    return {key: {f: float(np.mean([t[key][f] for t in tables])) for f in tables[0][key]} for key in tables[0]}
