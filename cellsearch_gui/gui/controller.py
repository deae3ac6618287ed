"""The app's state and intents: owns the Workspace and the job runner. Panels read the state and call these
intents; nothing else writes the state. Anything that reads big files or runs a model is a job on the worker."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from cellsearch_gui.core.app.run import AnalysisSettings, pipeline_job
from cellsearch_gui.core.app.session import Workspace
from cellsearch_gui.core.app.transfer import suggest_job, transfer_job
from cellsearch_gui.core.classify.vote_checks import near_even_warning
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.models import install
from cellsearch_gui.gui import jobs
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


def vote_warning(result) -> str:
    """What the user should know about the votes of a result: the whole-library warning, else the near-even
    one (which fires whatever k_max is); empty when neither applies."""
    if result is None:
        return ""
    p = result.predictions
    return whole_library_warning(result) or near_even_warning(p.scores)


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
    device_curve_ready = Signal(object)
    weights_changed = Signal(str)  # after an import or download: what it did
    exported = Signal(str, int)  # path, rows

    def __init__(self, device: str = "auto", parent=None):
        super().__init__(parent)
        self.workspace = Workspace()
        self.device = device
        self.selected: int | None = None
        self.runner = JobRunner(self)
        self._on_done: Callable[[object], None] | None = None
        self.runner.succeeded.connect(self._on_success)
        self.runner.failed.connect(self._on_failure)
        self.runner.cancelled.connect(self._on_cancelled)
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

    def apply_settings(self, settings: AnalysisSettings, quiet: bool = False) -> None:
        """``quiet``: the panel that made the change shows it already (no settings_changed)."""
        self.workspace.settings = settings
        if not quiet:
            self.settings_changed.emit()

    def classes_in_use(self) -> list[str]:
        return self.workspace.classes_in_use()

    def choose_classes(self, classes: list[str]) -> None:
        """The classifier is built on these library classes only (saved with the project's settings)."""
        ws = self.workspace
        ws.choose_classes(classes)
        used, known = ws.classes_in_use(), ws.reference_counts()
        shown = "every class" if len(used) == len(known) else f"{len(used)} of {len(known)} classes"
        self.message.emit(f"classifier built on {shown}" + ("; press Run to classify with them"
                                                           if ws.result is not None else ""))

    def set_device(self, device: str) -> None:
        self.device = device

    def inform(self, text: str) -> None:
        """A line in the status bar."""
        self.message.emit(text)

    # --- long jobs --------------------------------------------------------------------------------
    def _start(self, name: str, make_job, on_done: Callable[[object], None] | None = None) -> bool:
        if self.runner.busy:
            self.message.emit(f"wait for '{self.runner.name}' to finish or cancel it")
            return False
        self._on_done = on_done
        self.runner.start(name, make_job)
        return True

    def run_analysis(self) -> bool:
        try:
            plan = self.workspace.plan(self.device)
            plan.settings.ewc_params()
        except CellSearchError as exc:
            self.error.emit(str(exc), "")
            return False
        return self._start("analysis", partial(pipeline_job, plan), self._show_result)

    def _show_result(self, value) -> None:
        self.workspace.apply(value)
        self.selected = None
        self.result_changed.emit()
        text = f"{len(value.cells)} cells classified with {'+'.join(value.models)}"
        warning = vote_warning(value)
        self.message.emit(text + (f". {warning}" if warning else "")
                          + (f"; {len(value.notes)} note(s) (Analysis > Notes of the last run)" if value.notes else ""))

    def evaluate_transfer(self, query_dir) -> bool:
        ws = self.workspace
        if not ws.reference_dirs:
            self.error.emit("add a reference library first", "")
            return False
        settings = AnalysisSettings.from_dict(ws.settings.as_dict())
        return self._start("transfer evaluation", partial(
            transfer_job, tuple(ws.reference_dirs), str(query_dir), settings, ws.cache_dir(), self.device),
            lambda report: self.transfer_ready.emit(report.as_dict()))

    def suggest_setting(self) -> bool:
        ws = self.workspace
        labelled = ws.labelled_set()
        settings = AnalysisSettings.from_dict(ws.settings.as_dict())
        return self._start("setting suggestion", lambda token: suggest_job(
            tuple(ws.reference_dirs), labelled, settings, ws.cache_dir(), self.device, token=token),
            lambda result: self.suggestion_ready.emit(result.as_dict()))

    def device_curve(self) -> bool:
        """The leave-one-out curve of the cells labelled on this device (Workspace.device_curve)."""
        if self.workspace.result is None:
            self.error.emit("run the analysis and label some cells first", "")
            return False
        return self._start("device curve", self.workspace.device_curve_job, self.device_curve_ready.emit)

    def apply_suggestion(self, suggestion: dict) -> None:
        merged = {**self.workspace.settings.as_dict(), **suggestion}
        self.apply_settings(AnalysisSettings.from_dict(merged))
        self.message.emit("suggested setting applied; press Run to classify with it")

    def cancel(self) -> None:
        self.runner.cancel()

    def _on_success(self, name: str, value) -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(value)

    def _on_cancelled(self, name: str) -> None:
        self._on_done = None
        self.message.emit(f"{name}: cancelled")

    def _on_failure(self, name: str, exc: Exception) -> None:
        self._on_done = None
        details = "".join(traceback.format_exception(exc))
        text = str(exc) if isinstance(exc, CellSearchError) else f"{type(exc).__name__}: {exc}"
        self.error.emit(f"{name} failed: {text}", details)

    # --- model weights ----------------------------------------------------------------------------
    def download_models(self, model_ids: list[str]) -> bool:
        return self._start(f"download of {', '.join(model_ids)}", partial(jobs.download_job, list(model_ids)),
                           lambda _: self.weights_changed.emit(f"downloaded {', '.join(model_ids)}"))

    def import_weights(self, model_id: str, file) -> bool:
        """A checkpoint file for one model: hashed and test-loaded on the worker."""
        return self._start(f"import of {model_id}", partial(jobs.import_file_job, model_id, str(file)),
                           lambda _: self.weights_changed.emit(f"{model_id}: weights imported"))

    def import_weights_folder(self, folder) -> bool:
        """Every known checkpoint in a folder (a USB stick): each file hashed on the worker."""

        def done(imported) -> None:
            self.weights_changed.emit(f"imported {len(imported)} checkpoint(s): " + ", ".join(m for m, _ in imported)
                                      if imported else f"no known checkpoint in {folder}")

        return self._start("import of weights", partial(install.import_folder_job, str(folder)), done)

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

    def label_cells(self, indices: list[int], label: str | None) -> None:
        """One label for many cells (a box in the scatter)."""
        cells = self.workspace.cells
        self._guarded(lambda: self.workspace.set_labels({cells[i].cell_id: label for i in indices}))

    def _guarded(self, change) -> None:
        """A label that cannot be stored (disk full, read-only project) is reported and not applied."""
        try:
            change()
        except CellSearchError as exc:
            self.error.emit(str(exc), "")
        self.labels_changed.emit()

    def add_labelled_to_reference(self) -> bool:
        """The labelled cells join the library at once (no re-embedding); every cell is voted again on
        the worker, and the new predictions arrive with predictions_changed."""
        if self.runner.busy:
            self.message.emit(f"wait for '{self.runner.name}' to finish or cancel it")
            return False
        ws = self.workspace
        if ws.result is None:
            self.message.emit("0 labelled cell(s) added to the reference library")
            return False
        added = ws.add_to_library([i for i, c in enumerate(ws.cells) if c.cell_id in ws.user_labels])
        if not added:
            self.message.emit("0 labelled cell(s) added to the reference library")
            return False
        result = ws.result

        def done(predictions) -> None:
            if self.workspace.result is not result:
                return
            self.workspace.apply_predictions(predictions)
            self.predictions_changed.emit()
            if self.selected is not None:
                self.selection_changed.emit(self.selected)
            self.message.emit(f"{added} labelled cell(s) added to the reference library; predictions updated")

        return self._start("prediction with the added cells", ws.repredict_job, done)

    def next_uncertain(self) -> int | None:
        queue = self.workspace.review_queue()
        if not queue:
            self.message.emit("every cell is labelled")
            return None
        self.select_cell(queue[0])
        return queue[0]

    # --- files ------------------------------------------------------------------------------------
    def export(self, path, with_crops: bool) -> bool:
        """The cells CSV (and crops) written on the worker; atomic, so a failed or cancelled export leaves
        no file."""
        if self.workspace.result is None:
            self.error.emit("nothing to export yet: run the analysis first", "")
            return False
        rows = jobs.export_rows(self.workspace)

        def done(count) -> None:
            self.exported.emit(str(path), count)
            self.message.emit(f"exported {count} cells to {path}")

        return self._start("export", partial(jobs.export_job, rows, self.workspace.result.provenance, str(path),
                                             with_crops), done)

    def export_as(self, kind: str, target) -> bool:
        """geojson, h5ad, ome-zarr or report, written on the worker (gui/export_menu.py asks where)."""
        try:
            table = jobs.table_from_workspace(self.workspace)
        except CellSearchError as exc:
            self.error.emit(str(exc), "")
            return False

        def done(count) -> None:
            self.exported.emit(str(target), count)
            self.message.emit(f"exported {count} cells to {target}")

        return self._start(f"export {kind}", partial(jobs.export_as_job, table, kind, str(target),
                                                     list(self.workspace.reference_dirs)), done)

    def save_project(self, folder=None) -> Path | None:
        try:
            path = self.workspace.save(folder)
        except Exception as exc:  # noqa: BLE001 - e.g. the folder is in use or read-only
            self.error.emit(str(exc), "")
            return None
        self.message.emit(f"project saved: {path}")
        return path

    def open_project(self, folder) -> bool:
        """Open a project (its lock, settings and labels at once: a project in use is refused here); the last
        result is rebuilt from its arrays on the worker."""
        if self.runner.busy:
            self.message.emit(f"wait for '{self.runner.name}' to finish or cancel it")
            return False
        try:
            opened = Workspace.open(folder)
        except Exception as exc:  # noqa: BLE001 - a bad or locked project is reported; the current one stays
            self.error.emit(str(exc), "" if isinstance(exc, CellSearchError) else traceback.format_exc())
            return False
        self.workspace.close()
        self.workspace = opened
        self.selected = None
        self.inputs_changed.emit()
        self.settings_changed.emit()
        self.result_changed.emit()
        return self._start("restoring the project", partial(jobs.restore_job, opened),
                           partial(self._restored, opened))

    def _restored(self, opened: Workspace, result) -> None:
        if self.workspace is not opened:
            return
        if result is not None:
            opened.apply(result)
            self.message.emit(f"{len(opened.cells)} cells of the last run restored from the project")
            self.result_changed.emit()
        elif opened.store.last_finished_run() and opened.reference_dirs and opened.query_paths:
            self.message.emit("rebuilding the last results (segmentation and embeddings come from the project)")
            self.run_analysis()

    def shutdown(self, wait_ms: int = 5000) -> None:
        """Quitting: stop the job, wait for its thread, release the project."""
        self.cancel()
        self.runner.wait(wait_ms)
        self.workspace.close()

