"""Cells labelled on the query device as that device's own evidence.

Today's rule (``library``) adds them to the reference library, where a handful is outvoted by thousands of
foreign cells. ``loo_mix`` also votes among the device's labelled cells alone and mixes the two class
distributions, p = a * p_library + (1 - a) * p_device. The weight a is not a tuned constant: it is the one of
MIX_WEIGHTS whose leave-one-out macro accuracy on the device's own labelled cells is highest (ties go to the
library), so the device's cells decide how far the library can be trusted on this device."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cellsearch_gui.core.classify.calibration import Calibration, fit_calibration, stratified_rows
from cellsearch_gui.core.classify.evaluation import evaluate_predictions
from cellsearch_gui.core.classify.ewc import (
    EWCClassifier,
    EWCParams,
    Predictions,
    adaptive_vote,
    class_weights,
)
from cellsearch_gui.core.options import DeviceVote

MIX_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the library's share of the vote, searched by leave-one-out


def vote_shares(preds: Predictions, classes: list[str]) -> np.ndarray:
    """(Q, len(classes)) weighted vote shares of ``preds``, columns in the order of ``classes``."""
    shares = np.zeros((len(preds.labels), len(classes)))
    for j, name in enumerate(preds.classes):
        shares[:, classes.index(name)] = preds.scores[:, j]
    return shares / np.maximum(shares.sum(axis=1, keepdims=True), 1e-300)


def leave_one_out_shares(clf: EWCClassifier, rows: list[int], row_features: np.ndarray,
                         classes: list[str]) -> np.ndarray:
    """Vote shares of each library row in ``rows`` (its features ``row_features``) of the fitted ``clf`` with
    that row left out: its own neighbour is dropped and the class weights are those of the library without it
    (the same for every row of a class, so each class votes in one batch)."""
    out = np.zeros((len(rows), len(classes)))
    if clf.index.size < 2 or not len(rows):
        return out
    p = clf.params
    width = min(p.k_max, clf.index.size - 1)
    _, ids = clf.kneighbors(row_features, min(p.k_max + 1, clf.index.size))
    others = np.stack([neighbours[neighbours != row][:width] for row, neighbours in zip(rows, ids)])
    own = clf.label_ids[np.asarray(rows, dtype=np.int64)]
    columns = [classes.index(name) for name in clf.classes]
    for label in np.unique(own):
        members = np.flatnonzero(own == label)
        kept = np.delete(clf.label_ids, rows[members[0]])
        vote = adaptive_vote(clf.label_ids[others[members]], class_weights(kept, len(clf.classes)), p.k_min,
                             p.k_max, p.entropy_threshold, p.growth, p.entropy_norm, p.stopping)
        out[np.ix_(members, columns)] = vote.scores
    return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-300)


def _votes_right(clf: EWCClassifier, shares: np.ndarray, rows: list[int]) -> np.ndarray:
    """Whether the vote of each library row (``shares``, columns in ``clf.classes`` order) names its label."""
    names = np.asarray(clf.classes)
    return names[shares.argmax(1)] == names[clf.label_ids[np.asarray(rows, dtype=np.int64)]]


def library_calibration(clf: EWCClassifier, features_of: Callable[[np.ndarray], np.ndarray]) -> Calibration:
    """P(correct | winning vote share) of a fitted library classifier: up to CALIBRATION_ROWS of its own cells
    (``features_of(rows)`` gives their features), each voted with itself left out."""
    rows = stratified_rows(clf.label_ids)
    shares = leave_one_out_shares(clf, rows, features_of(np.asarray(rows, dtype=np.int64)), list(clf.classes))
    return fit_calibration(shares, _votes_right(clf, shares, rows))


def _leave_one_out_pair(library: EWCClassifier, device: EWCClassifier, device_rows: list[int],
                        device_features: np.ndarray, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out vote shares of the device's labelled cells: in the library (which holds them at
    ``device_rows``), and among themselves alone."""
    return (leave_one_out_shares(library, device_rows, device_features, classes),
            leave_one_out_shares(device, list(range(len(device_rows))), device_features, classes))


@dataclass
class DeviceFit:
    alpha: float  # the library's share of the vote; 1 - alpha: the device's labelled cells alone
    loo_accuracy: dict[str, float] = field(default_factory=dict)  # leave-one-out macro accuracy per weight
    n_labelled: int = 0
    note: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class DeviceAwareClassifier:
    """The library, in which the device's labelled cells are rows like any other, and (``loo_mix``) those
    cells voting on their own. Reads like an EWCClassifier (classes, params, index, kneighbors)."""

    def __init__(self, params: EWCParams, rule: str = DeviceVote.LIBRARY.value):
        self.params, self.rule = params.validate(), DeviceVote(rule).value
        self.library = EWCClassifier(params)
        self.device: EWCClassifier | None = None
        self.device_rows: list[int] = []
        self.fit_record = DeviceFit(alpha=1.0)
        self._device_loo: np.ndarray | None = None  # the device cells' leave-one-out shares as they are voted
        self._calibration: Calibration | None = None

    def __getattr__(self, name: str):  # classes, index, label_ids, weights, storage: the library's
        if name in ("classes", "index", "label_ids", "weights", "storage", "kneighbors"):
            return getattr(self.library, name)
        raise AttributeError(name)

    def fit(self, features: np.ndarray, labels: list[str], device_rows=(), index=None) -> DeviceAwareClassifier:
        """``features``/``labels``: the whole library; ``device_rows``: which of its rows were labelled on the
        query device. ``index``: one already built over exactly these features."""
        self.library.fit(features, list(labels), index)
        self._features, self._labels = features, list(labels)
        self.device_rows = sorted(int(r) for r in device_rows)
        return self._refresh()

    def add(self, features: np.ndarray, labels: list[str]) -> None:
        """Cells labelled on the query device join the library and the device's own vote."""
        start = len(self._labels)
        self.library.add(features, labels)
        self._features = np.concatenate([self._features, features])
        self._labels += list(labels)
        self.device_rows += list(range(start, start + len(labels)))
        self._refresh()

    def _refresh(self) -> DeviceAwareClassifier:
        rows, n = self.device_rows, len(self.device_rows)
        self.device, self.fit_record = None, DeviceFit(alpha=1.0, n_labelled=n)
        self._device_loo, self._calibration = None, None
        if self.rule == DeviceVote.LIBRARY or n < 2:
            if self.rule != DeviceVote.LIBRARY and n == 1:
                self.fit_record.note = "fewer than 2 labelled device cells: the library alone votes"
            return self
        truth = [self._labels[i] for i in rows]
        self.device = EWCClassifier(self.params).fit(self._features[rows], truth)
        classes = list(self.library.classes)
        joint, alone = _leave_one_out_pair(self.library, self.device, rows, self._features[rows], classes)
        scores = {}
        for alpha in MIX_WEIGHTS:
            mixed = alpha * joint + (1 - alpha) * alone
            scores[alpha] = evaluate_predictions(truth, [classes[i] for i in mixed.argmax(1)])["balanced_accuracy"]
        best = max(MIX_WEIGHTS, key=lambda a: (round(scores[a], 9), a))  # ties: towards the library
        self.fit_record = DeviceFit(best, {f"{a:.2f}": s for a, s in scores.items()}, n)
        self._device_loo = best * joint + (1 - best) * alone
        return self

    def calibration(self) -> Calibration:
        """P(correct | winning vote share), fitted on the library's cells left out one at a time and on the
        device's labelled cells as they are voted (classify.calibration); computed once per refresh."""
        if self._calibration is None:
            classes = list(self.library.classes)
            device = set(self.device_rows)
            library_rows = [r for r in stratified_rows(self._labels) if r not in device]
            lib = leave_one_out_shares(self.library, library_rows, self._features[library_rows], classes)
            dev = self._device_loo
            if dev is None and self.device_rows:
                dev = leave_one_out_shares(self.library, self.device_rows, self._features[self.device_rows], classes)
            dev_ok = None if dev is None else _votes_right(self.library, dev, self.device_rows)
            self._calibration = fit_calibration(lib, _votes_right(self.library, lib, library_rows), dev, dev_ok)
        return self._calibration

    def predict(self, features: np.ndarray, keep_neighbours: int | None = None) -> Predictions:
        """The library's predictions (neighbours, k, entropy), with labels and scores from the mixed vote."""
        preds = self.library.predict(features, keep_neighbours)
        alpha = self.fit_record.alpha
        if self.device is not None and alpha < 1.0:
            classes = list(preds.classes)
            mixed = alpha * vote_shares(preds, classes) + (1 - alpha) * vote_shares(self.device.predict(features),
                                                                                   classes)
            preds = dataclasses.replace(preds, labels=[classes[i] for i in mixed.argmax(1)], scores=mixed)
        return dataclasses.replace(preds, confidence=self.calibration()(preds.scores))


def device_learning_curve(ref_features: np.ndarray, ref_labels: list[str], dev_features: np.ndarray,
                          dev_labels: list[str], params: EWCParams) -> list[dict]:
    """How well the library knows this device, as the user labels: after each of the first n labelled cells
    (in the order labelled), the leave-one-out accuracy on them of the library with them in it, and of the
    device's labelled cells alone. n runs over the Fibonacci numbers 2, 3, 5, 8, 13... and the last."""
    sizes, n, step = [], 2, 1
    while n < len(dev_labels):
        sizes.append(n)
        n, step = n + step, n
    if len(dev_labels) >= 2:
        sizes.append(len(dev_labels))
    points = []
    exact = dataclasses.replace(params, index="flat")
    for n in sizes:
        truth = list(dev_labels[:n])
        library = EWCClassifier(exact).fit(np.concatenate([ref_features, dev_features[:n]]), list(ref_labels) + truth)
        device = EWCClassifier(exact).fit(dev_features[:n], truth)
        classes = list(library.classes)
        joint, alone = _leave_one_out_pair(library, device, list(range(len(ref_labels), len(ref_labels) + n)),
                                           dev_features[:n], classes)
        points.append({"n_labelled": n,
                       "library": evaluate_predictions(truth, [classes[i] for i in joint.argmax(1)])["accuracy"],
                       "device_alone": evaluate_predictions(truth, [classes[i] for i in alone.argmax(1)])["accuracy"]})
    return points
