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


def mean_over_seeds(tables: list[dict]) -> dict:
    """Field-wise mean of several tables of the same shape (one per seed): ``accuracy_by_coverage`` or
    ``accuracy_by_certainty``; numbers are averaged, nested tables field by field."""
    first = tables[0]
    return {key: (mean_over_seeds([t[key] for t in tables]) if isinstance(value, dict)
                  else float(np.mean([t[key] for t in tables])))
            for key, value in first.items()}


def accuracy_by_certainty(truth: list[str], predicted: list[str], uncertain: np.ndarray) -> dict:
    """Share of cells answered *uncertain* (``Predictions.uncertain``) and the scores of the
    confident and the uncertain cells apart, so the confident part can be trusted on its own."""
    uncertain = np.asarray(uncertain, dtype=bool)
    out: dict = {"n_cells": len(truth), "n_uncertain": int(uncertain.sum()),
                 "share_uncertain": float(uncertain.mean()) if len(truth) else 0.0}
    for name, rows in (("confident", np.flatnonzero(~uncertain)), ("uncertain", np.flatnonzero(uncertain))):
        scores = evaluate_predictions([truth[i] for i in rows], [predicted[i] for i in rows]) if len(rows) else {}
        out[name] = {"accuracy": scores.get("accuracy", 0.0),
                     "balanced_accuracy": scores.get("balanced_accuracy", 0.0)}
    return out
