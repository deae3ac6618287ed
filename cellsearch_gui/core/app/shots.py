"""The few-shot protocol of a new device: N labelled cells per class of the query set join the library as
the device's labelled cells (as the app's *Add labelled cells to reference* does: the classifier's ``add``
and ``FeatureSet.append_rows``), and the remaining query cells are scored; repeated over several seeds."""

from __future__ import annotations

import dataclasses

import numpy as np

from cellsearch_gui.core.app.confidence import confidence_summary
from cellsearch_gui.core.classify.baselines import run_baselines
from cellsearch_gui.core.classify.calibration import Calibration
from cellsearch_gui.core.classify.coverage import (
    accuracy_by_certainty,
    accuracy_by_coverage,
    mean_over_seeds,
)
from cellsearch_gui.core.classify.evaluation import evaluate_predictions
from cellsearch_gui.core.classify.device_vote import DeviceAwareClassifier
from cellsearch_gui.core.classify.ewc import EWCParams, Predictions
from cellsearch_gui.core.errors import DatasetError
from cellsearch_gui.core.options import DeviceVote
from cellsearch_gui.core.types import FeatureSet

SEED_CALIBRATION = ("ece", "brier", "mean_confidence", "accuracy", "at_least")  # averaged over the seeds


def shot_split(labels: list[str], shots: int, seed: int) -> tuple[list[int], list[int], list[str]]:
    """(labelled rows, scored rows, notes): ``shots`` random cells of each class are labelled. A class with
    fewer than shots + 1 cells gives all but one (at least one cell of each class is scored); a class with a
    single cell gives none."""
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    labelled, notes = [], []
    for label in sorted(set(labels)):
        rows = np.flatnonzero(labels_arr == label)
        take = min(shots, len(rows) - 1)
        if take < shots:
            notes.append(f"query class '{label}' has {len(rows)} cell(s): {take} labelled instead of {shots}, "
                         f"the rest scored")
        labelled += rng.permutation(rows)[:take].tolist()
    labelled.sort()
    chosen = set(labelled)
    return labelled, [i for i in range(len(labels)) if i not in chosen], notes


def library_with(ref: FeatureSet, query: FeatureSet, params: EWCParams, rows: list[int],
                 device_vote: str = DeviceVote.LIBRARY.value, known_rows=()) -> tuple[DeviceAwareClassifier, FeatureSet]:
    """A classifier over ``ref`` with the query cells at ``rows`` as the device's labelled cells (with the
    library's own cells of that device, ``known_rows``), and the grown library; ``ref`` is left as it was."""
    library = dataclasses.replace(ref, paths=list(ref.paths), labels=list(ref.labels),
                                  cell_ids=list(ref.cell_ids), per_model=dict(ref.per_model))
    labels = [query.labels[i] for i in rows]
    if rows:
        library.append_rows(query, rows, labels)
    clf = DeviceAwareClassifier(params, device_vote).fit(
        library.features, library.labels, [*known_rows, *range(len(ref.labels), len(library.labels))])
    return clf, library


def score_zero_shot(ref: FeatureSet, query: FeatureSet, params: EWCParams, known_rows: list[int],
                    device_vote: str, baselines: bool = False) -> dict:
    """Fields of an EvaluateResult for the whole query set, the library's cells of the query device
    (``known_rows``) voting as that device's labelled cells."""
    clf = DeviceAwareClassifier(params, device_vote).fit(ref.features, ref.labels, known_rows)
    preds = clf.predict(query.features)
    return {**prediction_scores(preds, ref, query, baselines, clf.calibration()),
            "device_vote": device_vote, "shot_notes": []}


def prediction_scores(preds: Predictions, ref: FeatureSet, query: FeatureSet, baselines: bool,
                      calibration: Calibration | None) -> dict:
    """Fields of an EvaluateResult scoring ``preds`` of every query cell against its label."""
    truth = list(query.labels)
    return {**evaluate_predictions(truth, preds.labels), "mean_k": float(preds.k_used.mean()),
            "mean_entropy": float(preds.entropy.mean()), "index_kind": preds.index_kind,
            "baselines": run_baselines(ref.features, ref.labels, query.features, truth) if baselines else None,
            "coverage": accuracy_by_coverage(truth, preds.labels, preds.entropy),
            "certainty": accuracy_by_certainty(truth, preds.labels, preds.uncertain),
            "calibration": confidence_summary(preds, truth, calibration)}


def _cell_key(query: FeatureSet, row: int) -> str:
    return query.cell_ids[row] if query.cell_ids else str(query.paths[row])


def _one_seed(ref: FeatureSet, query: FeatureSet, params: EWCParams, shots: int, seed: int,
              baselines: bool, device_vote: str, known_rows=()) -> tuple[dict, Predictions, list[int], list[str], dict | None]:
    labelled, scored, notes = shot_split(query.labels, shots, seed)
    if not scored:
        raise DatasetError("no query cells left to score after taking the labelled ones")
    clf, library = library_with(ref, query, params, labelled, device_vote, known_rows)
    preds = clf.predict(query.features[scored])
    truth = [query.labels[i] for i in scored]
    scores = evaluate_predictions(truth, preds.labels)
    base = (run_baselines(library.features, library.labels, query.features[scored], truth)
            if baselines else None)
    row = {"seed": seed, "balanced_accuracy": scores["balanced_accuracy"],
           "macro_precision": scores["macro_precision"], "accuracy": scores["accuracy"],
           "n_labelled": len(labelled), "n_scored": len(scored), "device_vote": clf.fit_record.as_dict(),
           "coverage": accuracy_by_coverage(truth, preds.labels, preds.entropy),
           "certainty": accuracy_by_certainty(truth, preds.labels, preds.uncertain),
           "calibration": {k: v for k, v in confidence_summary(preds, truth).items() if k in SEED_CALIBRATION},
           "labelled_cells": [_cell_key(query, i) for i in labelled],
           "scored_cells": [_cell_key(query, i) for i in scored]}
    return row, preds, scored, notes, base


def score_with_shots(ref: FeatureSet, query: FeatureSet, params: EWCParams, shots: int, seeds: list[int],
                     baselines: bool = False, device_vote: str = DeviceVote.LIBRARY.value, known_rows=()) -> dict:
    """Fields of an EvaluateResult for the protocol: the scores are means over seeds (``per_seed`` holds each
    seed's, with the cells it labelled and scored); classes, confusion and per_class pool every seed's
    scored cells; ``n_query`` is the number of cells scored per seed."""
    if shots < 1 or not seeds:
        raise DatasetError(f"the few-shot protocol needs shots >= 1 and at least one seed, got {shots}, {seeds}")
    per_seed, truth, predicted, k_used, entropy, base_runs, notes = [], [], [], [], [], [], []
    preds = None
    for seed in seeds:
        row, preds, scored, seed_notes, base = _one_seed(ref, query, params, shots, seed, baselines, device_vote,
                                                            known_rows)
        per_seed.append(row)
        truth += [query.labels[i] for i in scored]
        predicted += preds.labels
        k_used.append(preds.k_used)
        entropy.append(preds.entropy)
        base_runs.append(base)
        notes = notes or seed_notes
    notes += [f"query class '{c}' has no reference cells: its labelled cells join the library as a new class"
              for c in sorted(set(query.labels) - set(ref.labels))]
    pooled = evaluate_predictions(truth, predicted)
    means = {key: float(np.mean([r[key] for r in per_seed])) for key in ("balanced_accuracy", "macro_precision",
                                                                         "accuracy")}
    return {**pooled, **means, "n_query": per_seed[0]["n_scored"], "mean_k": float(np.concatenate(k_used).mean()),
            "mean_entropy": float(np.concatenate(entropy).mean()), "index_kind": preds.index_kind,
            "coverage": mean_over_seeds([r["coverage"] for r in per_seed]),
            "certainty": mean_over_seeds([r["certainty"] for r in per_seed]),
            "calibration": mean_over_seeds([r["calibration"] for r in per_seed]),
            "baselines": _mean_baselines(base_runs) if baselines else None,
            "shots": shots, "shot_seeds": list(seeds), "device_vote": device_vote, "per_seed": per_seed, "shot_notes": notes}


def _mean_baselines(runs: list[dict]) -> dict:
    return {name: {key: float(np.mean([run[name][key] for run in runs]))
                   for key, value in runs[0][name].items() if isinstance(value, (int, float))}
            for name in runs[0]}
