"""Results written out for people and for other tools: the cells CSV, the per-sample differential report
(HTML, PDF), QuPath GeoJSON, AnnData .h5ad and OME-Zarr label images. Each reads an ``ExportTable``."""

from cellsearch_gui.core.export.cells_csv import (
    CELL_COLUMNS,
    EXPORT_COLUMNS,
    PROVENANCE_COLUMNS,
    export_cells_csv,
    export_project_csv,
    provenance_columns,
    write_cells_csv,
    write_predictions_csv,
)

__all__ = ["CELL_COLUMNS", "EXPORT_COLUMNS", "PROVENANCE_COLUMNS", "export_cells_csv", "export_project_csv",
           "provenance_columns", "write_cells_csv", "write_predictions_csv"]
