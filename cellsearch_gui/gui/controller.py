"""The app's state and intents: owns the Workspace and the job runner; panels only talk to it."""

from __future__ import annotations

import traceback
from functools import partial
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from cellsearch_gui.core.app.run import AnalysisSettings, pipeline_job
from cellsearch_gui.core.app.session import Workspace
from cellsearch_gui.core.app.transfer import suggest_job, transfer_job
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.export import export_cells_csv
from cellsearch_gui.gui.workers import JobRunner


def whole_library_warning(result) -> str:
    """Cells whose vote needed the whole library: there the class weights make every class equal, so the
    prediction is only the tie-break. Common with a small library or one from another device."""
    n_ref = len(result.reference.labels)
    if not len(result.cells) or n_ref == 0:
        return ""
    share = float((result.predictions.k_used >= n_ref).mean())
    if share < 0.25:
        return ""
    return (f"{share:.0%} of the cells needed the whole library to vote (all classes equal there): add "
            "reference cells or try Analysis > Suggest a setting")


class Controller(QObject):
    inputs_changed = Signal()
    settings_changed = Signal()
    result_changed = Signal()
    predictions_changed = Signal()  # labels added to the reference: same cells, new votes
    selection_changed = Signal(int)
    labels_changed = Signal()
    busy_changed = Signal(bool)
    message = Signal(str)
    error = Signal(str, str)  # short text, details
    transfer_ready = Signal(object)
    suggestion_ready = Signal(object)

    def __init__(self, device: str = "auto", parent=None):
        super().__init__(parent)
        self.workspace = Workspace()
        self.device = device
        self.selected: int | None = None
        self.runner = JobRunner(self)
        self.runner.succeeded.connect(self._on_success)
        self.runner.failed.connect(self._on_failure)
        self.runner.cancelled.connect(lambda name: self.message.emit(f"{name}: cancelled"))
        self.runner.started.connect(lambda _: self.busy_changed.emit(True))
        self.runner.idle.connect(lambda: self.busy_changed.emit(False))

    # --- inputs and settings ----------------------------------------------------------------------
    def add_reference(self, folder) -> None:
        self.workspace.add_reference_dir(folder)
        self.inputs_changed.emit()

    def add_queries(self, paths) -> None:
        self.workspace.add_query_paths(paths)
        self.inputs_changed.emit()
        self.message.emit(f"{len(self.workspace.query_paths)} item(s) to classify; press Run")

    def clear_queries(self) -> None:
        self.workspace.query_paths.clear()
        self.inputs_changed.emit()

    def set_settings(self, settings: AnalysisSettings) -> None:
        self.workspace.settings = settings
        self.settings_changed.emit()

    # --- long jobs --------------------------------------------------------------------------------
    def _start(self, name: str, make_job) -> bool:
        if self.runner.busy:
            self.message.emit(f"wait for '{self.runner.name}' to finish or cancel it")
            return False
        self.runner.start(name, make_job)
        return True

    def run_analysis(self) -> bool:
        try:
            plan = self.workspace.plan(self.device)
            plan.settings.ewc_params()
        except CellSearchError as exc:
            self.error.emit(str(exc), "")
            return False
        return self._start("analysis", partial(pipeline_job, plan))

    def evaluate_transfer(self, query_dir) -> bool:
        ws = self.workspace
        if not ws.reference_dirs:
            self.error.emit("add a reference library first", "")
            return False
        settings = AnalysisSettings.from_dict(ws.settings.as_dict())
        return self._start("transfer evaluation", partial(
            transfer_job, tuple(ws.reference_dirs), str(query_dir), settings, ws.cache_dir(), self.device))

    def suggest_setting(self) -> bool:
        ws = self.workspace
        labelled = ws.labelled_set()
        settings = AnalysisSettings.from_dict(ws.settings.as_dict())
        return self._start("setting suggestion", lambda token: suggest_job(
            tuple(ws.reference_dirs), labelled, settings, ws.cache_dir(), self.device, token=token))

    def apply_suggestion(self, suggestion: dict) -> None:
        merged = {**self.workspace.settings.as_dict(), **suggestion}
        self.set_settings(AnalysisSettings.from_dict(merged))
        self.message.emit("suggested setting applied; press Run to classify with it")

    def cancel(self) -> None:
        self.runner.cancel()

    def _on_success(self, name: str, value) -> None:
        if name == "analysis":
            self.workspace.apply(value)
            self.selected = None
            self.result_changed.emit()
            text = f"{len(value.cells)} cells classified with {'+'.join(value.models)}"
            warning = whole_library_warning(value)
            self.message.emit(text + (f". {warning}" if warning else "")
                              + (f"; {len(value.notes)} note(s) (Analysis > Notes of the last run)" if value.notes else ""))
        elif name == "transfer evaluation":
            self.transfer_ready.emit(value.as_dict())
        elif name == "setting suggestion":
            self.suggestion_ready.emit(value.as_dict())

    def _on_failure(self, name: str, exc: Exception) -> None:
        details = "".join(traceback.format_exception(exc))
        text = str(exc) if isinstance(exc, CellSearchError) else f"{type(exc).__name__}: {exc}"
        self.error.emit(f"{name} failed: {text}", details)

    # --- selection and labelling ------------------------------------------------------------------
    def select_cell(self, index: int) -> None:
        if self.workspace.result is None or not 0 <= index < len(self.workspace.cells):
            return
        self.selected = index
        self.selection_changed.emit(index)

    def set_label(self, index: int, label: str | None) -> None:
        self._guarded(lambda: self.workspace.set_label(index, label))

    def accept(self, index: int) -> None:
        self._guarded(lambda: self.workspace.accept(index))

    def _guarded(self, change) -> None:
        """A label that cannot be stored (disk full, read-only project) is reported and not applied."""
        try:
            change()
        except CellSearchError as exc:
            self.error.emit(str(exc), "")
        self.labels_changed.emit()

    def add_labelled_to_reference(self) -> int:
        ws = self.workspace
        added = ws.add_to_reference([i for i, c in enumerate(ws.cells) if c.cell_id in ws.user_labels])
        if added:
            self.predictions_changed.emit()
            if self.selected is not None:
                self.selection_changed.emit(self.selected)
        self.message.emit(f"{added} labelled cell(s) added to the reference library; predictions updated")
        return added

    def next_uncertain(self) -> int | None:
        queue = self.workspace.review_queue()
        if not queue:
            self.message.emit("every cell is labelled")
            return None
        self.select_cell(queue[0])
        return queue[0]

    # --- files ------------------------------------------------------------------------------------
    def export(self, path, with_crops: bool) -> int:
        rows = export_cells_csv(self.workspace, path, with_crops)
        self.message.emit(f"exported {rows} cells to {path}")
        return rows

    def save_project(self, folder=None) -> Path:
        path = self.workspace.save(folder)
        self.message.emit(f"project saved: {path}")
        return path

    def open_project(self, folder) -> None:
        opened = Workspace.open(folder)  # raises (and keeps the current one) when it cannot be opened
        self.workspace.close()
        self.workspace = opened
        self.selected = None
        self.inputs_changed.emit()
        self.settings_changed.emit()
        if opened.restore():
            self.message.emit(f"{len(opened.cells)} cells of the last run restored from the project")
        elif opened.store.last_finished_run() and opened.reference_dirs and opened.query_paths:
            self.message.emit("rebuilding the last results (segmentation and embeddings come from the project)")
            self.run_analysis()
        self.result_changed.emit()
