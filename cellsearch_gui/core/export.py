"""Export of the classified cells: one CSV row per cell, optionally with each crop filed by label."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from cellsearch_gui.core.workflows import spreadsheet_safe

EXPORT_COLUMNS = ["image", "cell_id", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "centroid_x", "centroid_y",
                  "area_px", "predicted_label", "entropy", "k_used", "user_label", "true_label", "models",
                  "crop_path"]


def export_cells_csv(workspace, path: str | Path, with_crops: bool = False) -> int:
    """Write the CSV (atomically); with crops, copy each into <csv name>_crops/<label>/. Returns rows written."""
    result = workspace.result
    if result is None:
        raise ValueError("nothing to export yet: run the analysis first")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    crop_dir = path.with_name(path.stem + "_crops")
    preds = result.predictions
    models = "+".join(result.models)
    tmp = path.with_suffix(path.suffix + ".part")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(EXPORT_COLUMNS)
        for i, cell in enumerate(result.cells):
            user = workspace.label_of(i) or ""
            crop_path = cell.crop_path
            if with_crops:
                target = crop_dir / (user or preds.labels[i]) / f"{cell.cell_id}{Path(cell.crop_path).suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(cell.crop_path, target)
                crop_path = str(target)
            bbox = cell.bbox or ("", "", "", "")
            centroid = cell.centroid or ("", "")
            writer.writerow([spreadsheet_safe(v) for v in (
                cell.source_image, cell.cell_id, *bbox, *centroid, cell.area_px or "", preds.labels[i],
                f"{preds.entropy[i]:.4f}", int(preds.k_used[i]), user, cell.true_label or "", models, crop_path)])
    tmp.replace(path)
    return len(result.cells)
