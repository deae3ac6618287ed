"""The reference library: classes and their cell counts; folders are added by button or drag and drop."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.gui.pixmaps import class_colour


class ReferencePanel(QWidget):
    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["class", "cells"])
        self.tree.setRootIsDecorated(False)
        self.summary = QLabel("No reference library yet: add a folder with one sub-folder per class.")
        self.summary.setWordWrap(True)
        add = QPushButton("Add reference library…")
        add.clicked.connect(self.choose_folder)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.tree)
        layout.addWidget(add)
        controller.inputs_changed.connect(self.refresh)
        controller.result_changed.connect(self.refresh)
        controller.predictions_changed.connect(self.refresh)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Reference library (one sub-folder per class)")
        if folder:
            self.controller.add_reference(folder)

    def refresh(self) -> None:
        ws = self.controller.workspace
        self.tree.clear()
        try:
            counts = ws.reference_counts()
        except CellSearchError as exc:
            self.summary.setText(str(exc))
            return
        classes = sorted(counts)
        for name, count in counts.items():
            item = QTreeWidgetItem([name, str(count)])
            item.setForeground(0, class_colour(classes, name))
            self.tree.addTopLevelItem(item)
        if ws.reference_dirs:
            self.summary.setText(f"{sum(counts.values())} cells in {len(counts)} classes from "
                                 f"{len(ws.reference_dirs)} folder(s)")
