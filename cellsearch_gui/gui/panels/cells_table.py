"""Table of every query cell: prediction, entropy, k used, the user's label; sortable, click to select.

The model sorts itself with one numpy argsort over the column (a proxy model would call ``data`` twice per
comparison: seconds for 100,000 cells) and fills each cell's text only when the view asks for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

COLUMNS = ["cell", "image", "predicted", "entropy", "k", "your label", "true label"]
CONTENT_SAMPLE_ROWS = 200  # rows looked at to size the columns


class CellsModel(QAbstractTableModel):
    def __init__(self, controller):
        super().__init__()
        self.controller = controller
        self.order = np.zeros(0, np.int64)  # view row -> cell index
        self.sorted_by: tuple[int, Qt.SortOrder] | None = None

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.order)

    def columnCount(self, parent=QModelIndex()) -> int:
        return len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def cell_index(self, row: int) -> int:
        return int(self.order[row])

    def row_of(self, cell: int) -> int:
        rows = np.flatnonzero(self.order == cell)
        return int(rows[0]) if len(rows) else -1

    def value(self, cell: int, column: int):
        ws = self.controller.workspace
        preds = ws.result.predictions
        if column == 0:
            return ws.cells[cell].cell_id
        if column == 1:
            return Path(ws.cells[cell].source_image).name
        if column == 2:
            return preds.labels[cell]
        if column == 3:
            return float(preds.entropy[cell])
        if column == 4:
            return int(preds.k_used[cell])
        if column == 5:
            return ws.label_of(cell) or ""
        return ws.cells[cell].true_label or ""

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.UserRole) or not index.isValid():
            return None
        value = self.value(int(self.order[index.row()]), index.column())
        if role == Qt.ItemDataRole.DisplayRole and index.column() == 3:
            return f"{abs(value):.3f}"
        return value

    def _keys(self, column: int) -> np.ndarray:
        preds = self.controller.workspace.result.predictions
        if column == 3:
            return np.asarray(preds.entropy)
        if column == 4:
            return np.asarray(preds.k_used)
        if column == 2:
            return np.asarray(preds.labels)
        return np.asarray([self.value(i, column) for i in range(len(self.controller.workspace.cells))])

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        if self.controller.workspace.result is None or not len(self.order):
            self.sorted_by = (column, order)
            return
        self.layoutAboutToBeChanged.emit()
        persistent = self.persistentIndexList()  # the selection and current row: they follow their cells
        cells = [int(self.order[index.row()]) for index in persistent]
        ranks = np.argsort(self._keys(column), kind="stable")
        self.order = ranks[::-1].copy() if order == Qt.SortOrder.DescendingOrder else ranks
        self.sorted_by = (column, order)
        row_of_cell = np.empty(len(self.order), np.int64)
        row_of_cell[self.order] = np.arange(len(self.order))
        self.changePersistentIndexList(persistent, [self.index(int(row_of_cell[cell]), index.column())
                                                    for index, cell in zip(persistent, cells)])
        self.layoutChanged.emit()

    def reset(self) -> None:
        self.beginResetModel()
        self.order = np.arange(len(self.controller.workspace.cells))
        self.endResetModel()
        if self.sorted_by is not None:
            self.sort(*self.sorted_by)

    def rows_changed(self) -> None:
        if self.rowCount():
            self.dataChanged.emit(self.index(0, 0), self.index(self.rowCount() - 1, len(COLUMNS) - 1))


class CellsTable(QTableView):
    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.cells_model = CellsModel(controller)
        self.setModel(self.cells_model)
        self.setSortingEnabled(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        header.setResizeContentsPrecision(CONTENT_SAMPLE_ROWS)
        self.clicked.connect(lambda index: controller.select_cell(self.cells_model.cell_index(index.row())))
        controller.result_changed.connect(self._reset)
        controller.predictions_changed.connect(self.cells_model.rows_changed)
        controller.labels_changed.connect(self.cells_model.rows_changed)
        controller.selection_changed.connect(self._follow)

    def _reset(self) -> None:
        self.cells_model.reset()
        self.resizeColumnsToContents()

    def _follow(self, cell: int) -> None:
        row = self.cells_model.row_of(cell)
        if row >= 0 and self.currentIndex().row() != row:
            self.selectRow(row)
            self.scrollTo(self.cells_model.index(row, 0))
