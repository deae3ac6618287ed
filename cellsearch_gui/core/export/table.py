"""The cells every export writes: one row per query cell with its sample, prediction and label, the run's
provenance and (when the run's arrays are there) its features. Built from the window's live result or from
a project's last run, so the CLI and the window export the same thing."""

from __future__ import annotations

import errno
import json
import os
from functools import cached_property
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellsearch_gui.core.classify.differential import CellCall, SampleDifferential, differential
from cellsearch_gui.core.export.samples import assign_samples, named_samples, sample_order
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.io.atomic import disk_problem
from cellsearch_gui.core.project.arrays import ARRAYS_DIR, load_run_arrays
from cellsearch_gui.core.project.store import ProjectError
from cellsearch_gui.core.types import Cell

DEFAULT_THRESHOLD = 0.3  # EWCParams.entropy_threshold's default, for a run that did not record one


class ExportError(CellSearchError, ValueError):
    """Nothing to export, or an export that cannot be made from what the project holds."""


@dataclass
class CellRow:
    cell: Cell
    sample: str
    predicted: str | None
    entropy: float | None
    k_used: int | None
    user_label: str | None
    confidence: float | None = None  # calibrated P(correct) of the prediction; None: not kept for this run

    @property
    def final(self) -> str | None:
        return self.user_label or self.predicted


@dataclass
class ExportTable:
    rows: list[CellRow]
    provenance: dict
    classes: list[str]
    samples: list[str]  # in the order dropped; samples without cells included
    features: np.ndarray | None = None  # (len(rows), D) query features, when the run's arrays are there
    model_ids: list[str] = field(default_factory=list)
    dims: list[int] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    origin: str = ""  # the project folder, or "the window"
    run_id: int | None = None

    @property
    def threshold(self) -> float:
        value = self.provenance.get("params", {}).get("entropy_threshold", DEFAULT_THRESHOLD)
        return float(value) if isinstance(value, (int, float)) else DEFAULT_THRESHOLD

    @cached_property
    def flagged_uncertain(self) -> set[str] | None:
        """Ids of the cells the classifier answered uncertain, as kept with the run; None for older runs."""
        flagged = self.provenance.get("uncertain_cells")
        return set(map(str, flagged)) if isinstance(flagged, list) else None

    def uncertain_rule(self) -> str:
        """What *uncertain* means for this table, in words."""
        if self.flagged_uncertain is not None:
            return f"not labelled, and the deciding weighted vote ambiguous (≥ {self.threshold:g})"
        return f"not labelled, and entropy ≥ {self.threshold:g}"

    def is_uncertain(self, row: CellRow) -> bool:
        """Not labelled by the user, and answered uncertain by the classifier (Predictions.uncertain, kept in
        the run's provenance); runs saved before that was kept: entropy at or above the threshold."""
        if row.user_label:
            return False
        if self.flagged_uncertain is not None:
            return row.cell.cell_id in self.flagged_uncertain
        return row.entropy is not None and abs(row.entropy) >= self.threshold

    def differential(self, method: str = "wilson") -> list[SampleDifferential]:
        calls = (CellCall(r.sample, r.predicted, r.entropy, r.user_label, self.is_uncertain(r) if r.predicted else None)
                 for r in self.rows)
        return differential(calls, self.classes, self.threshold, self.samples, method)


def _library_classes(store, predicted) -> list[str]:
    """The classes of the last classification's library (from its arrays' manifest), else those predicted."""
    classify = store.last_finished_run(kind="classify")
    try:
        manifest = Path(store.folder) / ARRAYS_DIR / f"run-{classify['id']}" / "manifest.json"
        labels = json.loads(manifest.read_text(encoding="utf-8"))["reference_labels"]
        return sorted({str(label) for label in labels if label})
    except (TypeError, OSError, ValueError, KeyError):
        return sorted({p for p in predicted if p})


def table_from_workspace(workspace) -> ExportTable:
    """The window's result, with the labels as they are now (duck-typed: core.app.session.Workspace)."""
    result = workspace.result
    if result is None:
        raise ExportError("nothing to export yet: run the analysis first")
    p = result.predictions
    cells = list(result.cells)
    named = named_samples(workspace.store)
    samples = assign_samples(cells, workspace.query_paths, named)
    rows = [CellRow(c, s, p.labels[i], float(p.entropy[i]), int(p.k_used[i]), workspace.label_of(i),
                    None if p.confidence is None else float(p.confidence[i]))
            for i, (c, s) in enumerate(zip(cells, samples))]
    query = result.query
    provenance = {**result.provenance, "uncertain_cells": p.uncertain_ids(cells)}
    return ExportTable(rows, provenance, list(p.classes),
                       sample_order(workspace.query_paths, named),
                       np.asarray(query.features) if len(query.features) == len(rows) else None,
                       list(query.model_ids), list(query.dims), workspace.settings.as_dict(),
                       str(workspace.folder or "the window"))


def table_from_project(store, with_features: bool = False) -> ExportTable:
    """The project's last finished run, with the labels as they are now; every stored cell appears (a cell
    the run did not classify has no prediction). ``with_features``: the query features of the last
    classification run, in row order (None when its arrays are gone)."""
    run = store.last_finished_run()
    if run is None:
        raise ProjectError(f"{store.folder}: no finished classification yet: run 'cellsearch project classify'")
    predictions, confidences = store.predictions(run["id"]), store.confidences(run["id"])
    labels = store.labels()
    cells = store.cells()
    sources = [s["path"] for s in store.sources("query")]
    named = named_samples(store)
    samples = assign_samples(cells, sources, named)
    rows = []
    for cell, sample in zip(cells, samples):
        label, entropy, k_used = predictions.get(cell.cell_id, (None, None, None))
        rows.append(CellRow(cell, sample, label, entropy, k_used, labels.get(cell.cell_id),
                            confidences.get(cell.cell_id)))
    table = ExportTable(rows, run["provenance"], _library_classes(store, (r.predicted for r in rows)),
                        sample_order(sources, named), settings=run["settings"], origin=str(store.folder),
                        run_id=run["id"])
    if with_features:
        _attach_features(store, table)
    return table


def _attach_features(store, table: ExportTable) -> None:
    """Rows without features (not in the classification run's arrays) are dropped from the table."""
    classify = store.last_finished_run(kind="classify")
    loaded = load_run_arrays(store.folder, classify["id"]) if classify else None
    if loaded is None:
        raise ProjectError(f"{store.folder}: the features of the last classification are missing; run "
                           "'cellsearch project classify' again")
    query = loaded[1]
    row_of = {uid: i for i, uid in enumerate(query.cell_ids)}
    table.rows = [r for r in table.rows if r.cell.cell_id in row_of]
    table.features = query.features[[row_of[r.cell.cell_id] for r in table.rows]]
    table.model_ids, table.dims = list(query.model_ids), list(query.dims)


@dataclass
class ExportSummary:
    """What an export wrote: its files, the cells in them and what the user should know."""

    files: list[Path] = field(default_factory=list)
    cells: int = 0
    notes: list[str] = field(default_factory=list)


def check_writable(folder: str | Path, what: str) -> None:
    """A read-only or missing-permission output folder as one clear DiskError before anything is written
    (some writers, e.g. HDF5's, report it without an errno)."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise disk_problem(PermissionError(errno.EACCES, "permission denied"), folder, what)
