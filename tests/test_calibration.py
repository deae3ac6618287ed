"""Calibrated confidence (issue 15): P(correct) from the winning vote share, fitted by isotonic regression on
the library left out one cell at a time and on the device's labelled cells."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cellsearch_gui.cli import main
from cellsearch_gui.core.classify.calibration import (
    calibration_report,
    fit_calibration,
    stratified_rows,
    winning_share,
)
from cellsearch_gui.core.classify.device_vote import DeviceAwareClassifier, leave_one_out_shares, library_calibration
from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams, adaptive_vote, class_weights
from tests.conftest import colour_class_folders


def _clusters(rng, centres: dict[str, tuple[float, float]], n: int, spread: float):
    feats = np.concatenate([rng.normal(c, spread, size=(n, 2)) for c in centres.values()]).astype(np.float32)
    return feats, [name for name in centres for _ in range(n)]


def _row_by_row(clf: EWCClassifier, rows, feats, classes):
    """The leave-one-out vote written the slow, obvious way: one row, one vote."""
    p = clf.params
    _, ids = clf.kneighbors(feats, min(p.k_max + 1, clf.index.size))
    out = np.zeros((len(rows), len(classes)))
    for n, (row, neighbours) in enumerate(zip(rows, ids)):
        others = neighbours[neighbours != row][: min(p.k_max, clf.index.size - 1)][None, :]
        weights = class_weights(np.delete(clf.label_ids, row), len(clf.classes))
        vote = adaptive_vote(clf.label_ids[others], weights, p.k_min, p.k_max, p.entropy_threshold, p.growth,
                             p.entropy_norm, p.stopping)
        out[n, [classes.index(c) for c in clf.classes]] = vote.scores[0]
    return out / out.sum(1, keepdims=True)


@pytest.mark.parametrize("stopping", ["paper", "lowest_entropy"])
def test_leave_one_out_by_class_batches_equals_one_row_at_a_time(stopping):
    rng = np.random.default_rng(0)
    feats, labels = _clusters(rng, {"a": (0, 0), "b": (1, 0), "c": (0, 1)}, 30, 0.8)
    labels = labels[:55]  # two classes, 30 and 25 cells: unequal class weights
    clf = EWCClassifier(EWCParams(k_min=3, k_max=32, stopping=stopping)).fit(feats[:55], labels)
    rows = list(range(0, 55, 2))
    classes = list(clf.classes)
    assert leave_one_out_shares(clf, rows, feats[rows], classes) == pytest.approx(
        _row_by_row(clf, rows, feats[rows], classes))


@pytest.mark.parametrize("per_class", [30, 700])  # 2,100 cells: above CALIBRATION_ROWS, a stratified sample
def test_a_plain_classifier_calibrates_like_the_device_aware_one_without_device_cells(per_class):
    """classify_job calibrates from its own classifier instead of fitting a second one; same curve."""
    rng = np.random.default_rng(4)
    feats, labels = _clusters(rng, {"b": (0, 0), "a": (1, 0), "c": (0, 1)}, per_class, 0.7)
    params = EWCParams(k_min=3, k_max=32)
    plain = library_calibration(EWCClassifier(params).fit(feats, labels), feats.__getitem__)
    aware = DeviceAwareClassifier(params).fit(feats, labels).calibration()
    assert plain.n_library == aware.n_library == len(stratified_rows(np.asarray(labels)))
    assert plain.share == pytest.approx(aware.share) and plain.probability == pytest.approx(aware.probability)


def test_confidence_is_monotone_in_the_vote_share_and_matches_its_training_accuracy():
    rng = np.random.default_rng(1)
    share = rng.uniform(0.5, 1.0, 4000)  # the winning share of two classes
    correct = rng.uniform(size=4000) < share  # truly P(correct) = share
    cal = fit_calibration(np.c_[share, 1 - share], correct)
    grid = np.linspace(0.5, 1, 101)
    probs = cal(np.c_[grid, 1 - grid])
    assert np.all(np.diff(probs) >= -1e-12)
    test = rng.uniform(0.5, 1.0, 4000)
    report = calibration_report(cal(np.c_[test, 1 - test]), rng.uniform(size=4000) < test)
    assert report["ece"] < 0.04  # a calibrated map on fresh cells of the same kind
    assert report["reliability"] and sum(b["n_cells"] for b in report["reliability"]) == 4000


def test_device_cells_weigh_as_much_as_the_whole_library():
    lib = np.tile([[0.9, 0.1]], (1000, 1))
    dev = np.tile([[0.9, 0.1]], (10, 1))
    cal = fit_calibration(lib, np.ones(1000, bool), dev, np.zeros(10, bool))
    assert cal(np.array([[0.9, 0.1]]))[0] == pytest.approx(0.5)  # 1000 right, 10 wrong, equal total weight
    assert cal.n_library == 1000 and cal.n_device == 10 and "equal weight" in cal.source
    alone = fit_calibration(lib, np.ones(1000, bool))
    assert alone(np.array([[0.9, 0.1]]))[0] == pytest.approx(1.0) and alone.n_device == 0


def test_report_counts_and_levels():
    conf = np.array([0.95, 0.95, 0.6, 0.2])
    correct = np.array([1, 0, 1, 0], bool)
    r = calibration_report(conf, correct)
    assert r["at_least"]["0.9"] == {"share": 0.5, "accuracy": 0.5}
    assert r["ece"] == pytest.approx(0.25 * 0.2 + 0.25 * 0.4 + 0.5 * 0.45)
    assert r["brier"] == pytest.approx((0.05 ** 2 + 0.95 ** 2 + 0.4 ** 2 + 0.2 ** 2) / 4)
    assert calibration_report(np.zeros(0), np.zeros(0, bool)) == {"n_cells": 0}


def test_stratified_rows_keep_every_class():
    labels = np.array(["a"] * 5000 + ["b"] * 30)
    rows = stratified_rows(labels, cap=500)
    assert set(labels[rows]) == {"a", "b"} and 480 <= len(rows) <= 520
    assert stratified_rows(labels[:100], cap=500) == list(range(100))
    assert winning_share(np.array([[3.0, 1.0]])) == pytest.approx([0.75])


def test_separable_classes_get_high_confidence_and_overlapping_ones_do_not():
    rng = np.random.default_rng(2)
    params = EWCParams(k_min=3, k_max=32, stopping="lowest_entropy")
    apart, labels = _clusters(rng, {"a": (0, 0), "b": (10, 0)}, 60, 0.5)
    clear = DeviceAwareClassifier(params).fit(apart, labels).predict(apart[::7])
    assert clear.confidence.min() > 0.9
    mixed, labels = _clusters(rng, {"a": (0, 0), "b": (0.1, 0)}, 60, 1.0)
    muddled = DeviceAwareClassifier(params).fit(mixed, labels).predict(mixed[::7])
    assert 0.2 < muddled.confidence.mean() < 0.8


def test_labelled_device_cells_join_the_calibration():
    rng = np.random.default_rng(3)
    params = EWCParams(k_min=3, k_max=32, stopping="lowest_entropy")
    ref, ref_labels = _clusters(rng, {"a": (0, 0), "b": (3, 0)}, 40, 0.3)
    dev, dev_labels = _clusters(rng, {"a": (3, 0), "b": (0, 0)}, 4, 0.3)  # swapped on the device
    clf = DeviceAwareClassifier(params, "library").fit(ref, ref_labels)
    before = clf.predict(dev).confidence
    clf.add(dev, dev_labels)
    assert clf.calibration().n_device == 8
    assert clf.predict(dev).confidence.mean() < before.mean()  # the device's cells show the library fails


def test_classify_writes_a_confidence_column_and_evaluate_a_calibration_report(tmp_path, monkeypatch):
    fits = []
    original_fit = EWCClassifier.fit
    monkeypatch.setattr(EWCClassifier, "fit", lambda self, *a, **k: fits.append(1) or original_fit(self, *a, **k))
    classes = {"red": (200, 40, 40), "blue": (40, 40, 200)}
    ref = colour_class_folders(tmp_path / "ref", classes, 6, seed=0)
    query = colour_class_folders(tmp_path / "query", classes, 3, seed=1)
    common = ["--models", "mobilenetv2", "--random-init", "--no-cache", "--quiet"]
    out = tmp_path / "pred.csv"
    assert main(["classify", "--reference", str(ref), "--query", str(query), "--out", str(out), *common]) == 0
    rows = list(csv.DictReader(out.open()))
    assert rows and all(0.0 <= float(r["confidence"]) <= 1.0 for r in rows)
    assert len(fits) == 1  # the confidence is calibrated on the classifier that voted, not on a second index
    js = tmp_path / "eval.json"
    assert main(["evaluate", "--reference", str(ref), "--query", str(query), "--json", str(js), *common]) == 0
    cal = json.loads(js.read_text())["calibration"]
    assert cal["n_cells"] == 6 and cal["n_library"] == 12 and 0.0 <= cal["ece"] <= 1.0
    assert cal["method"] == "isotonic regression"
