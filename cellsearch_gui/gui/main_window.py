"""The main window: docks, menus, drag and drop, status bar with progress and Cancel; wiring only."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTabWidget,
)

from cellsearch_gui.core.options import Device, values
from cellsearch_gui.gui.device_curve_dialog import DeviceCurveDialog
from cellsearch_gui.gui.dialogs import SuggestionDialog, TransferDialog
from cellsearch_gui.gui.error_log import log_error
from cellsearch_gui.gui.export_menu import ExportMenu
from cellsearch_gui.gui.panels.cell_panel import CellPanel
from cellsearch_gui.gui.panels.cells_table import CellsTable
from cellsearch_gui.gui.panels.differential_panel import DifferentialPanel
from cellsearch_gui.gui.panels.image_panel import ImagePanel
from cellsearch_gui.gui.panels.model_panel import ModelPanel
from cellsearch_gui.gui.panels.reference_panel import ReferencePanel
from cellsearch_gui.gui.panels.scatter_panel import ScatterPanel


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.0f} s left" if seconds < 120 else f"{seconds / 60:.0f} min left"


class MainWindow(QMainWindow):
    def __init__(self, controller, settings: QSettings, device_name: str = "", parent=None):
        super().__init__(parent)
        self.controller = controller
        self.settings = settings
        self.setWindowTitle("CellSearch")
        self.setAcceptDrops(True)
        self.last_error: tuple[str, str] | None = None
        self.show_dialogs = True  # tests switch modal dialogs off and read last_error / last_dialog
        self.last_dialog = None

        self.image_panel = ImagePanel(controller)
        self.cells_table = CellsTable(controller)
        self.scatter_panel = ScatterPanel(controller)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.image_panel, "Image")
        self.tabs.addTab(self.cells_table, "Cells")
        self.tabs.addTab(self.scatter_panel, "PCA")
        self.differential_panel = DifferentialPanel(controller)
        self.tabs.addTab(self.differential_panel, "Differential")
        self.setCentralWidget(self.tabs)
        self.reference_panel = ReferencePanel(controller)
        self.model_panel = ModelPanel(controller)
        self.cell_panel = CellPanel(controller)
        self.scatter_panel.reference_clicked.connect(self.cell_panel.show_reference)
        self._dock("Reference library", self.reference_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("Models and parameters", self.model_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("Selected cell", self.cell_panel, Qt.DockWidgetArea.RightDockWidgetArea)

        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress_text = QLabel("")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(controller.cancel)
        self.device_label = QLabel(device_name)
        bar = self.statusBar()
        for widget in (self.progress_text, self.progress, self.cancel_button):
            bar.addPermanentWidget(widget)
        bar.addPermanentWidget(self.device_label)
        self._set_busy(False)

        self._build_actions()
        controller.busy_changed.connect(self._set_busy)
        controller.runner.progress.connect(self._on_progress)
        controller.message.connect(lambda text: bar.showMessage(text, 15000))
        controller.error.connect(self._on_error)
        controller.transfer_ready.connect(self._on_transfer)
        controller.suggestion_ready.connect(self._on_suggestion)
        controller.device_curve_ready.connect(self._on_device_curve)
        controller.result_changed.connect(lambda: self.tabs.setCurrentWidget(
            self.image_panel if self.image_panel.chooser.count() else self.cells_table))
        self._restore()

    def _dock(self, title: str, widget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, menu, text: str, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_actions(self) -> None:
        c = self.controller
        file_menu = self.menuBar().addMenu("&File")
        self.open_action = self._action(file_menu, "Open images or folder…", self.open_images, QKeySequence.StandardKey.Open)
        self._action(file_menu, "Add reference library…", self.reference_panel.choose_folder)
        file_menu.addSeparator()
        self._action(file_menu, "Open project…", self.open_project)
        self._action(file_menu, "Save project as…", self.save_project, QKeySequence.StandardKey.Save)
        self.export_action = self._action(file_menu, "Export cells CSV…", self.export_csv, "Ctrl+E")
        file_menu.addSeparator()
        self._action(file_menu, "Quit", self.close, QKeySequence.StandardKey.Quit)
        run_menu = self.menuBar().addMenu("&Analysis")
        self.run_action = self._action(run_menu, "Run: segment, embed, classify", c.run_analysis, "Ctrl+R")
        self._action(run_menu, "Next uncertain cell", c.next_uncertain, "Ctrl+N")
        self._action(run_menu, "Add labelled cells to reference", c.add_labelled_to_reference)
        self._action(run_menu, "Notes of the last run…", self.show_notes)
        run_menu.addSeparator()
        self._action(run_menu, "Transfer evaluation (labelled cells of another device)…", self.evaluate_transfer)
        self._action(run_menu, "Suggest a setting from my labelled cells", c.suggest_setting)
        self._action(run_menu, "How well the library knows this device…", c.device_curve)
        settings_menu = self.menuBar().addMenu("&Settings")
        device_menu = settings_menu.addMenu("Compute device")
        group = QActionGroup(self)
        for device in values(Device):
            action = QAction(device, self, checkable=True, checked=device == c.device)
            action.triggered.connect(lambda _=False, d=device: self.set_device(d))
            group.addAction(action)
            device_menu.addAction(action)
        self.export_menu = ExportMenu(self)
        self.differential_panel.report_button.clicked.connect(lambda: self.export_menu.export("report"))
        toolbar = self.addToolBar("main")
        toolbar.setObjectName("main toolbar")
        for action in (self.open_action, self.run_action, self.export_action):
            toolbar.addAction(action)

    def set_device(self, device: str) -> None:
        self.controller.set_device(device)
        self.settings.setValue("device", device)
        self.device_label.setText(f"device: {device} (takes effect at the next run)")

    # --- files and drops --------------------------------------------------------------------------
    def _last_dir(self) -> str:
        return str(self.settings.value("last_folder", str(Path.home())))

    def _export_dir(self) -> str:
        """Exports go to the open project's folder, else the last folder used (home only at first)."""
        return str(self.controller.workspace.folder or self._last_dir())

    def _remember_dir(self, path) -> None:
        self.settings.setValue("last_folder", str(Path(path).parent if Path(path).is_file() else path))

    def open_images(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Images or folder of cells to classify", self._last_dir())
        if folder:
            self._remember_dir(folder)
            self.controller.add_queries([folder])

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        self.handle_drop(paths, onto_reference=self.reference_panel.underMouse())
        event.acceptProposedAction()

    def handle_drop(self, paths: list[str], onto_reference: bool = False) -> None:
        if not paths:
            return
        self._remember_dir(paths[0])
        if onto_reference:
            for path in paths:
                self.controller.add_reference(path)
        else:
            self.controller.add_queries(paths)

    def export_csv(self) -> None:
        if self.controller.workspace.result is None:
            self._on_error("nothing to export yet: run the analysis first", "")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export cells", str(Path(self._export_dir()) / "cells.csv"),
                                              "CSV (*.csv)")
        if path:
            self._remember_dir(Path(path).parent)
            box = QMessageBox(QMessageBox.Icon.Question, "Export", "Also copy each crop into a folder per label?",
                              QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
            self.controller.export(path, box.exec() == QMessageBox.StandardButton.Yes)  # a job; errors shown

    def save_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Project folder", self._last_dir())
        if folder:
            self._remember_dir(folder)
            self.controller.save_project(folder)  # e.g. a folder in use or read-only is reported

    def open_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a CellSearch project folder", self._last_dir())
        if folder:
            self._remember_dir(folder)
            self.controller.open_project(folder)  # a bad or locked project is reported, the app stays up

    def show_notes(self) -> None:
        """Skipped files and what was done to each crop, for the last result."""
        result = self.controller.workspace.result
        notes = result.notes if result else []
        box = QMessageBox(QMessageBox.Icon.Information, "Notes of the last run",
                          f"{len(notes)} note(s)" + ("" if notes else ": nothing was skipped or changed"),
                          QMessageBox.StandardButton.Ok, self)
        if notes:
            box.setDetailedText("\n".join(notes))
        self.last_dialog = box
        if self.show_dialogs:
            box.exec()

    def evaluate_transfer(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Labelled cells of the other device (one sub-folder per class)", self._last_dir())
        if folder:
            self.controller.evaluate_transfer(folder)

    # --- job feedback -----------------------------------------------------------------------------
    def _set_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.progress_text.setText("")
        for action in getattr(self, "run_action", None), getattr(self, "export_action", None):
            if action is not None:
                action.setEnabled(not busy)

    def _on_progress(self, p, remaining) -> None:
        self.progress.setMaximum(max(1, p.total))
        self.progress.setValue(min(p.done, p.total))
        self.progress_text.setText(f"{p.stage} {p.done}/{p.total} {_fmt_seconds(remaining)}")

    def _on_error(self, text: str, details: str) -> None:
        """Every error the controller reports: to the log file, the status bar and a dialog."""
        log_error(text, details)
        self.show_error(text, details)

    def show_error(self, text: str, details: str = "") -> None:
        """Status bar and a dialog with the traceback under "Show Details" (not logged: see _on_error)."""
        self.last_error = (text, details)
        self.statusBar().showMessage(text, 30000)
        if self.show_dialogs:
            box = QMessageBox(QMessageBox.Icon.Warning, "CellSearch", text, QMessageBox.StandardButton.Ok, self)
            if details:
                box.setDetailedText(details)
            box.exec()

    def _on_transfer(self, report: dict) -> None:
        self.last_dialog = TransferDialog(report, self)
        if self.show_dialogs:
            self.last_dialog.exec()

    def _on_suggestion(self, result: dict) -> None:
        self.last_dialog = SuggestionDialog(result, self)
        if self.show_dialogs and self.last_dialog.exec():
            self.controller.apply_suggestion(self.last_dialog.suggestion)

    def _on_device_curve(self, curve: list) -> None:
        self.last_dialog = DeviceCurveDialog(curve, self)
        if self.show_dialogs:
            self.last_dialog.exec()

    # --- settings ---------------------------------------------------------------------------------
    def _restore(self) -> None:
        geometry, state = self.settings.value("geometry"), self.settings.value("window_state")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1400, 860)
        if state is not None:
            self.restoreState(state)

    def closeEvent(self, event) -> None:
        if self.controller.runner.busy and self.show_dialogs and QMessageBox.question(
                self, "CellSearch", "A job is running. Cancel it and quit?") != QMessageBox.StandardButton.Yes:
            event.ignore()
            return
        self.controller.shutdown()
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self.settings.sync()
        super().closeEvent(event)
