"""The reference library: classes and their cell counts, each with a checkbox (the classifier is built on the
ticked ones); folders are added by button or drag and drop. Below: a warning about the last run's votes."""

from __future__ import annotations

from PySide6.QtCore import Qt
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
from cellsearch_gui.gui.controller import vote_warning
from cellsearch_gui.gui.pixmaps import class_colour


class ReferencePanel(QWidget):
    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["class", "cells"])
        self.tree.setRootIsDecorated(False)
        self.tree.setToolTip("Untick the classes you do not expect in your images (e.g. keep only the white "
                             "cells); the classifier is built on the ticked ones at the next Run.")
        self.tree.itemChanged.connect(self._ticked)
        self.summary = QLabel("No reference library yet: add a folder with one sub-folder per class.")
        self.summary.setWordWrap(True)
        self.warning = QLabel("")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #a04000;")
        self.warning.hide()
        add = QPushButton("Add reference library…")
        add.clicked.connect(self.choose_folder)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.tree)
        layout.addWidget(self.warning)
        layout.addWidget(add)
        for signal in (controller.inputs_changed, controller.result_changed, controller.predictions_changed,
                       controller.settings_changed):
            signal.connect(self.refresh)
        self._filling = False

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Reference library (one sub-folder per class)")
        if folder:
            self.controller.add_reference(folder)

    def ticked(self) -> list[str]:
        items = (self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount()))
        return [item.text(0) for item in items if item.checkState(0) == Qt.CheckState.Checked]

    def _ticked(self, item, column: int) -> None:
        if self._filling or column != 0:
            return
        chosen = self.ticked()
        if not chosen:  # at least one class: put the tick back
            self.controller.inform("keep at least one class ticked")
            self.refresh()
            return
        self.controller.choose_classes(chosen)
        self._summarise()

    def refresh(self) -> None:
        ws = self.controller.workspace
        warning = vote_warning(ws.result)
        self.warning.setText(warning)
        self.warning.setVisible(bool(warning))
        self._filling = True
        self.tree.clear()
        try:
            counts = ws.reference_counts()
        except CellSearchError as exc:
            self.summary.setText(str(exc))
            self._filling = False
            return
        used, coloured = set(self.controller.classes_in_use()), ws.classes() or sorted(counts)
        for name, count in counts.items():
            item = QTreeWidgetItem([name, str(count)])
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(0, Qt.CheckState.Checked if name in used else Qt.CheckState.Unchecked)
            if name in coloured:
                item.setForeground(0, class_colour(coloured, name))
            self.tree.addTopLevelItem(item)
        self.tree.resizeColumnToContents(0)
        self._filling = False
        self._summarise()

    def _summarise(self) -> None:
        ws = self.controller.workspace
        if not ws.reference_dirs:
            return
        try:
            counts = ws.reference_counts()
        except CellSearchError:
            return
        used = set(self.ticked())
        text = (f"{sum(counts.values())} cells in {len(counts)} classes from {len(ws.reference_dirs)} folder(s); "
                "the classifier uses the ticked classes")
        if len(used) < len(counts):
            text += f": {len(used)} classes, {sum(n for c, n in counts.items() if c in used)} cells"
        self.summary.setText(text)
