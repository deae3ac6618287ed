"""Calibrated confidence for predictions made by a plain library classifier (``classify_job``, local or on a
cluster): the calibration is fitted on the reference features alone (classify.calibration)."""

from __future__ import annotations

import dataclasses

import numpy as np

from cellsearch_gui.core.classify.calibration import Calibration, calibration_report
from cellsearch_gui.core.classify.device_vote import library_calibration
from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams, Predictions
from cellsearch_gui.core.types import FeatureSet


def with_confidence(params: EWCParams, ref: FeatureSet, preds: Predictions) -> tuple[Predictions, Calibration]:
    """``preds`` with ``confidence`` filled in, and the calibration that gave it (the classifier's own when
    it set one: a compressed library index has no fp32 reference features here)."""
    calibration = preds.calibration or library_calibration(EWCClassifier(params).fit(ref.features, ref.labels),
                                                            ref.features.__getitem__)
    return dataclasses.replace(preds, confidence=calibration(preds.scores)), calibration


def confidence_summary(preds: Predictions, truth: list[str], calibration: Calibration | None = None) -> dict:
    """The calibration report of ``preds`` against ``truth``, with where the calibration came from."""
    correct = np.asarray(preds.labels) == np.asarray(truth)
    report = calibration_report(preds.confidence, correct)
    return {**report, **(calibration.as_dict() if calibration is not None else {})}
