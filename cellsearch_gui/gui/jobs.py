"""Core calls that read big files or run models, as generator jobs for the worker thread."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from cellsearch_gui.core.app.run import AnalysisResult
from cellsearch_gui.core.app.session import Workspace
from cellsearch_gui.core.export import write_cells_csv
from cellsearch_gui.core.export.table import ExportTable, table_from_workspace
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.models.checkpoints import download_weights
from cellsearch_gui.core.models.install import import_weights


def download_job(model_ids: list[str], token: CancelToken) -> Job[None]:
    for number, model in enumerate(model_ids):
        token.raise_if_cancelled()
        yield Progress("downloading", number, len(model_ids), model)
        download_weights(model)
    yield Progress("downloading", len(model_ids), len(model_ids))


def import_file_job(model_id: str, file: str, token: CancelToken) -> Job[object]:
    """One checkpoint: hashed, test-loaded, copied (seconds for a large file)."""
    token.raise_if_cancelled()
    yield Progress("importing weights", 0, 1, model_id)
    path = import_weights(model_id, file)
    yield Progress("importing weights", 1, 1, model_id)
    return path


def export_rows(workspace: Workspace) -> list:
    """One CellRow per cell (sample, prediction, user label), taken on the GUI thread: the labels as they are
    when the user asks for the export."""
    return table_from_workspace(workspace).rows


def _until_cancelled(rows: Iterable[tuple], token: CancelToken) -> Iterator[tuple]:
    for row in rows:
        token.raise_if_cancelled()  # the atomic write then leaves no file
        yield row


def export_job(rows: list[tuple], provenance: dict, path: str, with_crops: bool, token: CancelToken) -> Job[int]:
    yield Progress("exporting", 0, len(rows), path)
    count = write_cells_csv(path, _until_cancelled(rows, token), provenance, with_crops)
    yield Progress("exporting", len(rows), len(rows), path)
    return count


def export_as_job(table: ExportTable, kind: str, target: str, library: list[str], token: CancelToken) -> Job[int]:
    """GeoJSON, .h5ad, OME-Zarr or the report (HTML or PDF, by the name) from a table taken on the GUI thread."""
    yield Progress(f"exporting {kind}", 0, 1, target)
    token.raise_if_cancelled()
    if kind == "report":
        from cellsearch_gui.core.export.report import write_report

        write_report(table, target, library)
        count = len(table.rows)
    elif kind == "h5ad":
        from cellsearch_gui.core.export.anndata_h5ad import write_h5ad

        count = write_h5ad(table, target)
    else:
        from cellsearch_gui.core.export.geojson import write_geojson
        from cellsearch_gui.core.export.omezarr import write_ome_zarr

        count = (write_geojson if kind == "geojson" else write_ome_zarr)(table, target).cells
    yield Progress(f"exporting {kind}", 1, 1, target)
    return count


def restore_job(workspace: Workspace, token: CancelToken) -> Job[AnalysisResult | None]:
    """The project's last result rebuilt from its arrays (features memory-mapped, the index built again)."""
    yield Progress("restoring the last results", 0, 1)
    result = workspace.restored_result()
    token.raise_if_cancelled()
    yield Progress("restoring the last results", 1, 1)
    return result
