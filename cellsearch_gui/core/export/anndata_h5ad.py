"""scanpy / AnnData: one ``.h5ad`` with the query cells' features as X (one obs row per cell: sample,
prediction, entropy, user label...), the cell centroids in ``obsm['spatial']`` and the model combination and
provenance in ``uns``. Written with ``anndata`` itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cellsearch_gui.core.export.outlines import class_colours
from cellsearch_gui.core.export.table import ExportError, ExportTable, check_writable
from cellsearch_gui.core.io.atomic import disk_errors


def _obs(table: ExportTable) -> dict[str, list]:
    rows = table.rows
    text = lambda values: [v or "" for v in values]  # noqa: E731 - h5ad string columns hold no None
    return {
        "sample": [r.sample for r in rows],
        "image": [str(Path(r.cell.source_image).resolve()) if r.cell.source_image else "" for r in rows],
        "predicted": text(r.predicted for r in rows),
        "entropy": [np.nan if r.entropy is None else abs(float(r.entropy)) for r in rows],
        "k_used": [-1 if r.k_used is None else int(r.k_used) for r in rows],
        "user_label": text(r.user_label for r in rows),
        "label": text(r.final for r in rows),
        "uncertain": [table.is_uncertain(r) for r in rows],
        "true_label": text(r.cell.true_label for r in rows),
        "area_px": [-1 if r.cell.area_px is None else int(r.cell.area_px) for r in rows],
    }


def _var_names(table: ExportTable, width: int) -> list[str]:
    if sum(table.dims) == width and len(table.dims) == len(table.model_ids):
        return [f"{model}_{i}" for model, dim in zip(table.model_ids, table.dims) for i in range(dim)]
    return [f"feature_{i}" for i in range(width)]


def write_h5ad(table: ExportTable, path: str | Path) -> int:
    """Returns the number of cells written; atomic (a failed write leaves no file)."""
    import anndata

    if table.features is None:
        raise ExportError("the features of this run are not available: classify again to export an .h5ad")
    path = Path(path)
    features = np.asarray(table.features, dtype=np.float32)
    adata = anndata.AnnData(X=features, obs=_obs(table))
    adata.obs_names = [r.cell.cell_id for r in table.rows]
    adata.var_names = _var_names(table, features.shape[1])
    adata.obsm["spatial"] = np.array([r.cell.centroid or (np.nan, np.nan) for r in table.rows], dtype=np.float64
                                     ).reshape(len(table.rows), 2)
    colours = class_colours(table.classes)
    adata.uns["models"] = list(table.model_ids)
    adata.uns["model_combination"] = "+".join(table.model_ids)
    adata.uns["dims"] = np.asarray(table.dims, dtype=np.int64)
    adata.uns["classes"] = list(table.classes)
    adata.uns["label_colors"] = ["#%02x%02x%02x" % colours[c] for c in table.classes]
    adata.uns["entropy_threshold"] = table.threshold
    adata.uns["provenance_json"] = json.dumps(table.provenance, default=str)
    adata.uns["origin"] = table.origin
    check_writable(path.parent, "write the .h5ad export")
    tmp = path.with_name(path.name + ".part")
    with disk_errors(path, "write the .h5ad export"):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            adata.write_h5ad(tmp)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    return len(table.rows)
