"""The cells CSV: one CSV row per cell with the provenance of its prediction, optionally with
each crop filed by label. Works from a live result (the app) or from a project's last run (the CLI)."""

from __future__ import annotations

import os
from pathlib import Path

from cellsearch_gui.core.classify.ewc import Predictions
from cellsearch_gui.core.export.table import CellRow, table_from_project, table_from_workspace
from cellsearch_gui.core.io.atomic import atomic_open
from cellsearch_gui.core.io.safe_paths import SafeWriter
from cellsearch_gui.core.io.spreadsheet import SafeCsvWriter
from cellsearch_gui.core.types import FeatureSet

CELL_COLUMNS = ["image", "cell_id", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "centroid_x", "centroid_y",
                "area_px", "predicted_label", "entropy", "k_used", "confidence", "user_label", "true_label", "crop_path", "sample",
                "touches_border"]
PROVENANCE_COLUMNS = ["models", "weights", "preprocessing", "metric", "k_min", "k_max", "entropy_threshold",
                      "stopping_rule", "app_version"]
EXPORT_COLUMNS = CELL_COLUMNS + PROVENANCE_COLUMNS


def provenance_columns(provenance: dict) -> list:
    """The same values on every row: what produced the predictions."""
    params = provenance.get("params", {})
    weights = "; ".join(f"{fp.split('|')[0]}:{fp.split('|')[1][:12]}"
                        for fp in provenance.get("model_fingerprints", {}).values())
    prep = provenance.get("preprocessing", {}).get("query", {})
    steps = [k for k in ("centre", "mask") if prep.get(k)]
    if prep.get("scale", "none") != "none":
        steps.append(f"scale={prep['scale']}")
    if prep.get("colour", "none") != "none":
        steps.append(f"colour={prep['colour']}")
    if prep.get("pixel_size_um"):
        steps.append(f"pixel_size={prep['pixel_size_um']}um")
    seg = provenance.get("segmentation", {})
    if seg:
        steps.append(f"segmenter={seg.get('segmenter')}")
    return ["+".join(provenance.get("models", [])), weights, " ".join(steps) or "raw", params.get("metric", ""),
            params.get("k_min", ""), params.get("k_max", ""), params.get("entropy_threshold", ""),
            params.get("entropy_norm", ""), provenance.get("app_version", "")]


def _as_row(item) -> CellRow:
    """A CellRow, or a (cell, predicted, entropy, k, user label[, sample]) tuple."""
    if isinstance(item, CellRow):
        return item
    cell, predicted, entropy, k_used, user, *sample = item
    return CellRow(cell, sample[0] if sample else "", predicted, entropy, k_used, user)


def absolute_path(path: str | None) -> str:
    """The rule for every path in an export: absolute (a relative path is taken from the working directory of
    the process that found the cell, which is the one exporting), so the file reads the same from anywhere."""
    return os.path.abspath(path) if path else ""


def write_cells_csv(path: str | Path, rows, provenance: dict, with_crops: bool = False) -> int:
    """``rows``: CellRow items or (cell, predicted, entropy, k, user_label[, sample]) tuples. Atomic: a failed
    export leaves no file. ``image`` and ``crop_path`` are absolute paths. Crops are filed as
    ``<csv stem>_crops/<label>/<cell id><suffix>``, label and id made safe file names that stay inside that
    folder (a repeated name gets a suffix)."""
    path = Path(path)
    crops = SafeWriter(path.with_name(path.stem + "_crops")) if with_crops else None
    extra = provenance_columns(provenance)
    count = 0
    with atomic_open(path, newline="") as handle:
        writer = SafeCsvWriter(handle)
        writer.writerow(EXPORT_COLUMNS)
        for row in map(_as_row, rows):
            cell = row.cell
            crop_path = cell.crop_path
            if crops is not None:
                crop_path = str(crops.copy(cell.crop_path, (row.final or "unclassified",), cell.cell_id,
                                           Path(cell.crop_path).suffix))
            bbox = cell.bbox or ("", "", "", "")
            centroid = cell.centroid or ("", "")
            writer.writerow((
                absolute_path(cell.source_image), cell.cell_id, *bbox, *centroid, cell.area_px or "",
                row.predicted or "", "" if row.entropy is None else f"{abs(row.entropy):.4f}",
                "" if row.k_used is None else int(row.k_used),
                "" if row.confidence is None else f"{row.confidence:.3f}", row.user_label or "", cell.true_label or "",
                absolute_path(crop_path), row.sample,
                "" if cell.touches_border is None else cell.touches_border, *extra))
            count += 1
    return count


def export_cells_csv(workspace, path: str | Path, with_crops: bool = False) -> int:
    return write_cells_csv(path, table_from_workspace(workspace).rows, workspace.result.provenance, with_crops)


def export_project_csv(store, path: str | Path, with_crops: bool = False) -> int:
    """The project's last finished run, with the labels as they are now (cells it did not classify left out)."""
    table = table_from_project(store)
    return write_cells_csv(path, [r for r in table.rows if r.predicted], table.provenance, with_crops)


def write_predictions_csv(path: str | Path, query: FeatureSet, preds: Predictions, ref: FeatureSet,
                          top: int = 5) -> None:

    with atomic_open(path, newline="") as handle:
        writer = SafeCsvWriter(handle)
        writer.writerow(["path", "true_label", "predicted_label", "k_used", "entropy", "uncertain", "confidence",
                         *[f"score_{c}" for c in preds.classes], "top_neighbours"])
        uncertain = preds.uncertain
        confidence = [""] * len(query.paths) if preds.confidence is None else [f"{c:.3f}" for c in preds.confidence]
        for i, p in enumerate(query.paths):
            neighbours = "; ".join(
                f"{ref.paths[j].name}:{ref.labels[j]}:{d:.4g}"
                for j, d in zip(preds.neighbour_ids[i, :top], preds.distances[i, :top]))
            writer.writerow((p, query.labels[i] or "", preds.labels[i], int(preds.k_used[i]),
                             f"{abs(preds.entropy[i]):.4f}", int(uncertain[i]), confidence[i], *[f"{s:.4f}" for s in preds.scores[i]],
                             neighbours))
