"""First run: what this computer can do (GPU, memory), which model weights are here, and a way to get them
(download, or import from a folder or USB stick), plus an offline demo."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from cellsearch_gui.core.app.demo import DEMO_MODELS, build_demo, find_sample_data, installed_demo
from cellsearch_gui.core.app.run import AnalysisSettings
from cellsearch_gui.core.models.checkpoints import status
from cellsearch_gui.core.models.registry import REGISTRY


class WelcomeDialog(QDialog):
    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.setWindowTitle("Welcome to CellSearch")
        self.device = QLabel("checking the compute device…")
        self.device.setWordWrap(True)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["model", "weights", "licence"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        import_button = QPushButton("Import weights from a folder or USB stick…")
        import_button.clicked.connect(self.import_folder)
        download_button = QPushButton("Download the demo models")
        download_button.clicked.connect(self.download)
        self.demo_button = QPushButton("Open the demo")
        self.demo_button.clicked.connect(self.open_demo)
        close = QPushButton("Start with an empty window")
        close.clicked.connect(self.accept)
        buttons = QHBoxLayout()
        for button in (import_button, download_button, self.demo_button, close):
            buttons.addWidget(button)
        intro = QLabel("<b>CellSearch classifies cells against a reference library of labelled cells, with "
                       "pretrained models and no training.</b><br>Before you start, this is what the app found:")
        intro.setWordWrap(True)
        layout = QVBoxLayout(self)
        for widget in (intro, self.device, self.table, self.message):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        self.resize(820, 520)
        controller.weights_changed.connect(self._weights_changed)
        controller.runner.idle.connect(self.refresh)
        controller.error.connect(lambda text, _: self.message.setText(text))
        self.refresh()

    def refresh(self) -> None:
        specs = [s for s in REGISTRY.values() if "embed" in s.roles]
        present = {spec.id: status(spec).present for spec in specs}
        self.table.setRowCount(len(specs))
        for row, spec in enumerate(specs):
            state = "present" if present[spec.id] else "missing"
            for col, text in enumerate((spec.id, state, spec.licence)):
                item = QTableWidgetItem(text)
                if col == 1 and state == "missing":
                    item.setForeground(Qt.GlobalColor.darkRed)
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        have_demo = all(present[m] for m in DEMO_MODELS)
        sample_data = find_sample_data()
        self.demo_button.setEnabled(have_demo and sample_data is not None)
        if not have_demo:
            self.message.setText("The demo needs " + " and ".join(DEMO_MODELS) + ": download them or import them.")
        elif sample_data is None:
            self.message.setText("The demo images were not found (set CELLSEARCH_SAMPLE_DATA).")

    def show_device(self, text: str) -> None:
        self.device.setText(text)

    def import_folder(self, folder: str | None = None) -> None:
        """Hashed and imported on the worker (progress in the status bar); the list refreshes when it ends."""
        folder = folder or QFileDialog.getExistingDirectory(self, "Folder with model weights")
        if folder and self.controller.import_weights_folder(folder):
            self.message.setText("importing… (progress in the status bar)")

    def download(self) -> None:
        """On the worker thread, with progress in the status bar; the list refreshes when it ends."""
        if self.controller.download_models(list(DEMO_MODELS)):
            self.message.setText("downloading… (progress in the status bar)")

    def _weights_changed(self, text: str) -> None:
        self.refresh()
        self.message.setText(text)  # what the import or download did, over refresh's hint

    def open_demo(self) -> None:
        """The demo setup.sh built (its library carries its features: nothing to embed there), else a small
        one copied from the sample data; the cell diameter is measured on each field."""
        reference, fields = installed_demo() or build_demo(Path(tempfile.mkdtemp(prefix="cellsearch-demo-")))
        settings = AnalysisSettings.from_dict(self.controller.workspace.settings.as_dict())
        settings.models = list(DEMO_MODELS)
        self.controller.apply_settings(settings)
        self.controller.add_reference(reference)
        self.controller.add_queries([fields])
        self.accept()
        self.controller.run_analysis()
