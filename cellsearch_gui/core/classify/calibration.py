"""A calibrated confidence: the probability that a prediction is right, not a rule of thumb.

The score is the winning class's share of the weighted vote that decided. It is mapped to a probability
by isotonic regression (monotone: a larger share never means a lower confidence) fitted on predictions
whose truth is known without touching the query:
- the library's own cells, each classified with itself left out (``leave_one_out_shares``);
- once cells are labelled on the query device, those cells too (their leave-one-out vote as the
  classifier uses it), and the two sources weigh the same in total. The library alone is confident where
  the device differs (its leave-one-out accuracy is in-domain); the device's few cells carry the shift
  but are noisy. Equal weight halves the library's bias and keeps its resolution.

Measured on PBC -> BCCD (benchmarks/bench_calibration.py; mobilenetv2 + efficientnet_lite0): expected
calibration error 0.027 within PBC; on BCCD 0.15 with the library alone, 0.10 with 5 labelled cells per class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CALIBRATION_ROWS = 2000  # library cells used at most (a class-stratified sample beyond); a compute cap
ECE_BINS = 10


def winning_share(shares: np.ndarray) -> np.ndarray:
    """The largest class share of each row of a (Q, C) vote-share (or vote-score) matrix, rows normalised."""
    shares = np.asarray(shares, dtype=np.float64)
    return shares.max(axis=1) / np.maximum(shares.sum(axis=1), 1e-300)


@dataclass(frozen=True)
class Calibration:
    """A monotone map from the winning vote share to P(correct), as a piecewise-linear curve."""

    share: np.ndarray  # increasing knots
    probability: np.ndarray  # P(correct) at each knot
    n_library: int = 0
    n_device: int = 0

    def __call__(self, shares: np.ndarray) -> np.ndarray:
        return np.interp(winning_share(shares), self.share, self.probability)

    @property
    def source(self) -> str:
        lib = f"{self.n_library} library cells, each left out"
        return lib if not self.n_device else f"{lib} and {self.n_device} cells labelled on this device (equal weight)"

    def as_dict(self) -> dict:
        return {"score": "winning share of the weighted vote", "method": "isotonic regression",
                "source": self.source, "n_library": self.n_library, "n_device": self.n_device}


def fit_calibration(library_shares: np.ndarray, library_correct: np.ndarray,
                    device_shares: np.ndarray | None = None, device_correct: np.ndarray | None = None) -> Calibration:
    """Isotonic P(correct | winning share) from the library's leave-one-out votes and, when given, the
    device's labelled cells, the two sources weighing the same in total."""
    from sklearn.isotonic import IsotonicRegression

    x, y = [winning_share(library_shares)], [np.asarray(library_correct, dtype=np.float64)]
    weights = [np.ones(len(x[0]))]
    n_device = 0 if device_shares is None else len(device_shares)
    if n_device:
        x.append(winning_share(device_shares))
        y.append(np.asarray(device_correct, dtype=np.float64))
        weights = [np.full(len(x[0]), n_device / max(len(x[0]), 1)), np.ones(n_device)]
    xs, ys, ws = np.concatenate(x), np.concatenate(y), np.concatenate(weights)
    if len(xs) == 0:
        return Calibration(np.array([0.0, 1.0]), np.array([0.5, 0.5]))
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(xs, ys, sample_weight=ws)
    knots = np.unique(np.concatenate([[0.0, 1.0], xs]))
    return Calibration(knots, iso.predict(knots), len(x[0]), n_device)


def stratified_rows(labels: np.ndarray, cap: int = CALIBRATION_ROWS, seed: int = 0) -> list[int]:
    """All rows when there are at most ``cap``, else a class-stratified random sample of about ``cap``."""
    labels = np.asarray(labels)
    if len(labels) <= cap:
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    rows = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = max(1, round(cap * len(members) / len(labels)))
        rows += rng.choice(members, size=min(take, len(members)), replace=False).tolist()
    return sorted(rows)


def calibration_report(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> dict:
    """How far the confidence can be trusted on cells whose truth is known: expected calibration error,
    Brier score, a reliability table, and the accuracy of the cells at or above a few confidence levels."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if len(confidence) == 0:
        return {"n_cells": 0}
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        members = which == b
        if not members.any():
            continue
        conf, acc = float(confidence[members].mean()), float(correct[members].mean())
        ece += members.mean() * abs(conf - acc)
        table.append({"from": float(edges[b]), "to": float(edges[b + 1]), "n_cells": int(members.sum()),
                      "mean_confidence": conf, "accuracy": acc})
    at_least = {}
    for level in (0.5, 0.7, 0.9):
        kept = confidence >= level
        at_least[f"{level:.1f}"] = {"share": float(kept.mean()),
                                    "accuracy": float(correct[kept].mean()) if kept.any() else 0.0}
    return {"n_cells": len(confidence), "ece": float(ece), "brier": float(((confidence - correct) ** 2).mean()),
            "mean_confidence": float(confidence.mean()), "accuracy": float(correct.mean()),
            "reliability": table, "at_least": at_least}
