"""Scores: balanced (macro) accuracy, macro precision, per-class recall/precision, confusion matrix.

Conventions follow scikit-learn: balanced accuracy averages recall over the classes present in the
truth; macro precision averages over every class that is true or predicted, a class never predicted
counting as precision 0.
"""

from __future__ import annotations

import numpy as np


def evaluate_predictions(truth: list[str], predicted: list[str]) -> dict:
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} true labels but {len(predicted)} predictions")
    classes = sorted(set(truth) | set(predicted))
    lookup = {c: i for i, c in enumerate(classes)}
    t = np.array([lookup[c] for c in truth], dtype=np.int64)
    p = np.array([lookup[c] for c in predicted], dtype=np.int64)
    n = len(classes)
    confusion = np.bincount(t * n + p, minlength=n * n).reshape(n, n)
    support = confusion.sum(axis=1)
    n_pred = confusion.sum(axis=0)
    tp = np.diag(confusion)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    precision = np.divide(tp, n_pred, out=np.zeros(n), where=n_pred > 0)
    present = support > 0
    return {
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_precision": float(precision.mean()) if n else 0.0,
        "accuracy": float(tp.sum() / max(1, len(t))),
        "classes": classes,
        "confusion": confusion.tolist(),
        "per_class": {
            c: {"recall": float(recall[i]), "precision": float(precision[i]),
                "support": int(support[i]), "predicted": int(n_pred[i])}
            for i, c in enumerate(classes)
        },
    }


def format_confusion(result: dict) -> str:
    classes = result["classes"]
    first = max(len("true \\ predicted"), *(len(c) for c in classes)) + 2
    width = max(6, *(min(len(c), 12) + 2 for c in classes))
    lines = ["true \\ predicted".ljust(first) + "".join(c[:12].rjust(width) for c in classes)]
    for c, row in zip(classes, result["confusion"]):
        lines.append(c.ljust(first) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)
