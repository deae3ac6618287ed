"""The selected cell: crop, prediction, entropy, weighted votes, labelling, and its nearest reference cells."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from cellsearch_gui.gui.pixmaps import class_colour, thumbnail

REF_INDEX = Qt.ItemDataRole.UserRole
BORDER_NOTE = "touches the image border: the cell may be cut off"


class CellPanel(QWidget):
    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.view = None
        self.crop = QLabel()
        self.crop.setFixedSize(160, 160)
        self.crop.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.title = QLabel("Click a cell in the image, the table or the scatter.")
        self.title.setWordWrap(True)
        self.votes = QLabel()
        self.votes.setTextFormat(Qt.TextFormat.RichText)
        self.weighting = QLabel()  # a prediction the class weights turned against the neighbours' majority
        self.weighting.setWordWrap(True)
        self.weighting.setStyleSheet("color: #a04000;")
        self.weighting.setToolTip("Each neighbour's vote weighs N / (C x N_class): a class with many library "
                                  "cells weighs little per cell, so rare classes are not drowned out.")
        self.weighting.hide()
        self.border = QLabel(BORDER_NOTE)  # its own line: in the title it was clipped in a narrow pane
        self.border.setWordWrap(True)
        self.border.setStyleSheet("color: #a04000; font-style: italic;")
        self.border.hide()
        self.label_choice = QComboBox()
        self.label_choice.setEditable(True)  # a new class can be typed in
        self.accept_button = QPushButton("Accept prediction")
        self.set_button = QPushButton("Set label")
        self.add_button = QPushButton("Add labelled cells to reference")
        self.next_button = QPushButton("Next uncertain cell")
        self.accept_button.clicked.connect(lambda: self._label(accept=True))
        self.set_button.clicked.connect(lambda: self._label(accept=False))
        self.add_button.clicked.connect(controller.add_labelled_to_reference)
        self.next_button.clicked.connect(controller.next_uncertain)
        self.gallery = QListWidget()
        self.gallery.setViewMode(QListView.ViewMode.IconMode)
        self.gallery.setIconSize(QSize(88, 88))
        self.gallery.setResizeMode(QListView.ResizeMode.Adjust)
        self.gallery.setMovement(QListView.Movement.Static)
        self.gallery.setSpacing(4)
        self.gallery.itemClicked.connect(self._open_neighbour)

        top = QHBoxLayout()
        top.addWidget(self.crop)
        top.addWidget(self.title, 1, Qt.AlignmentFlag.AlignTop)
        labelling = QHBoxLayout()
        labelling.addWidget(self.label_choice, 1)
        labelling.addWidget(self.set_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.border)
        layout.addWidget(self.votes)
        layout.addWidget(self.weighting)
        layout.addLayout(labelling)
        for button in (self.accept_button, self.add_button, self.next_button):
            layout.addWidget(button)
        layout.addWidget(QLabel("Nearest reference cells (click one to inspect it):"))
        layout.addWidget(self.gallery, 1)
        controller.selection_changed.connect(self.show_query)
        controller.result_changed.connect(self.clear)
        controller.labels_changed.connect(self._refresh)
        self._enable(False)

    def _enable(self, on: bool) -> None:
        for widget in (self.label_choice, self.accept_button, self.set_button):
            widget.setEnabled(on)

    def clear(self) -> None:
        self.view = None
        self.crop.clear()
        self.votes.clear()
        self.weighting.hide()
        self.border.hide()
        self.gallery.clear()
        self.title.setText("Click a cell in the image, the table or the scatter.")
        self._enable(False)

    def _refresh(self) -> None:
        if self.view is not None and self.view.kind == "query":
            self.show_query(self.view.index)

    def show_query(self, index: int) -> None:
        self._show(self.controller.workspace.query_view(index))

    def show_reference(self, ref_index: int) -> None:
        self._show(self.controller.workspace.reference_view(ref_index))

    def _show(self, view) -> None:
        self.view = view
        ws = self.controller.workspace
        self.crop.setPixmap(thumbnail(view.crop_path, 160))
        name = Path(view.crop_path).name
        name = name if len(name) <= 28 else name[:12] + "…" + name[-14:]
        self.title.setToolTip(view.crop_path)
        if view.kind == "query":
            label = f"<br>your label: <b>{view.label}</b>" if view.label else ""
            truth = f"<br>folder label: {view.true_label}" if view.true_label else ""
            confidence = "" if view.confidence is None else f", confidence {view.confidence:.0%}"
            self.title.setText(f"<b>{name}</b><br>predicted <b>{view.predicted}</b>{confidence}, "
                               f"entropy {abs(view.entropy):.3f}, k = {view.k_used}{label}{truth}")
        else:
            self.title.setText(f"<b>reference cell</b> {name}<br>library label <b>{view.label}</b>; its own vote: "
                               f"{view.predicted} (entropy {abs(view.entropy):.3f}, k = {view.k_used})")
        total = sum(view.votes.values()) or 1.0
        classes = ws.classes()
        rows = [f"<tr><td>{c}</td><td style='color:{class_colour(classes, c).name()}'>{'█' * round(16 * v / total)}"
                f"</td><td>{v / total:.0%}</td></tr>"
                for c, v in sorted(view.votes.items(), key=lambda kv: -kv[1]) if v > 0]
        self.votes.setText("weighted votes:<table>" + "".join(rows) + "</table>")
        self.border.setVisible(view.kind == "query" and bool(ws.cells[view.index].touches_border))
        self.weighting.setText(view.weighting)
        self.weighting.setVisible(bool(view.weighting))
        self.gallery.clear()
        for n in view.neighbours:
            item = QListWidgetItem(QIcon(thumbnail(n.path, 88)), f"{n.label}\nd={n.distance:.3g}")
            item.setData(REF_INDEX, n.reference_index)
            item.setToolTip(n.path)
            self.gallery.addItem(item)
        self.label_choice.clear()
        self.label_choice.addItems(ws.classes())
        self.label_choice.setCurrentText(view.label or view.predicted)
        self._enable(view.kind == "query")

    def _open_neighbour(self, item) -> None:
        self.show_reference(int(item.data(REF_INDEX)))

    def _label(self, accept: bool) -> None:
        if self.view is None or self.view.kind != "query":
            return
        if accept:
            self.controller.accept(self.view.index)
        else:
            self.controller.set_label(self.view.index, self.label_choice.currentText().strip() or None)
