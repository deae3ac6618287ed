"""Table of every query cell: prediction, entropy, k used, the user's label; sortable, click to select."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

COLUMNS = ["cell", "image", "predicted", "entropy", "k", "your label", "true label"]


class CellsModel(QAbstractTableModel):
    def __init__(self, controller):
        super().__init__()
        self.controller = controller

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.controller.workspace.cells)

    def columnCount(self, parent=QModelIndex()) -> int:
        return len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.UserRole):
            return None
        ws = self.controller.workspace
        row, col = index.row(), index.column()
        cell, preds = ws.cells[row], ws.result.predictions
        values = [cell.cell_id, Path(cell.source_image).name, preds.labels[row], float(preds.entropy[row]),
                  int(preds.k_used[row]), ws.label_of(row) or "", cell.true_label or ""]
        value = values[col]
        if role == Qt.ItemDataRole.DisplayRole and col == 3:
            return f"{abs(value):.3f}"
        return value

    def reset(self) -> None:
        self.beginResetModel()
        self.endResetModel()

    def rows_changed(self) -> None:
        if self.rowCount():
            self.dataChanged.emit(self.index(0, 0), self.index(self.rowCount() - 1, len(COLUMNS) - 1))


class CellsTable(QTableView):
    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.cells_model = CellsModel(controller)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.cells_model)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setStretchLastSection(True)
        self.clicked.connect(lambda index: controller.select_cell(self.proxy.mapToSource(index).row()))
        controller.result_changed.connect(self._reset)
        controller.predictions_changed.connect(self.cells_model.rows_changed)
        controller.labels_changed.connect(self.cells_model.rows_changed)
        controller.selection_changed.connect(self._follow)

    def _reset(self) -> None:
        self.cells_model.reset()
        self.resizeColumnsToContents()

    def _follow(self, row: int) -> None:
        index = self.proxy.mapFromSource(self.cells_model.index(row, 0))
        if self.currentIndex().row() != index.row():
            self.selectRow(index.row())
            self.scrollTo(index)
