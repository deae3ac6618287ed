"""Which cell to label next: the one whose label teaches the most.

Information density (Settles & Craven, EMNLP 2008): a cell's score is the ambiguity of its weighted vote
times how typical it is of the cells still unlabelled, so a label is spent on a doubtful cell that stands for
many others, not on a lone outlier or debris. Typicality is the mean cosine similarity to every unlabelled
cell (features centred on their mean), mapped to 0..1; computed exactly in O(N d)."""

from __future__ import annotations

import numpy as np


def typicality(features: np.ndarray) -> np.ndarray:
    """Mean cosine similarity of each row to all rows (itself included), mapped from -1..1 to 0..1."""
    x = np.asarray(features, dtype=np.float64)
    if len(x) == 0:
        return np.zeros(0)
    x = x - x.mean(axis=0)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return (1.0 + unit @ unit.mean(axis=0)) / 2.0


def review_order(features: np.ndarray, ambiguity: np.ndarray, todo: list[int]) -> list[int]:
    """``todo`` (row indices) ordered by ambiguity x typicality among ``todo``, highest first; ties keep the
    lower index."""
    if not todo:
        return []
    rows = np.asarray(todo)
    score = np.asarray(ambiguity, dtype=np.float64)[rows] * typicality(np.asarray(features)[rows])
    return [int(rows[i]) for i in sorted(range(len(rows)), key=lambda i: (-round(float(score[i]), 12), rows[i]))]
