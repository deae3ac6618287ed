"""napari / OME-Zarr: per field, ``OUT/<sample>/<field name>.ome.zarr`` holding the field as an image and a
``labels/cells`` label image (cell n painted with value n, 0 background) whose image-label properties are the
class table: label value, cell id, class, colour. Written with ``ome-zarr`` (OME-NGFF 0.5 on zarr v3)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from cellsearch_gui.core.export.geojson import rows_by_field
from cellsearch_gui.core.export.outlines import UNCLASSIFIED_COLOUR, class_colours, paint_labels
from cellsearch_gui.core.export.table import CellRow, ExportSummary, ExportTable, check_writable
from cellsearch_gui.core.io.atomic import disk_errors
from cellsearch_gui.core.io.fields import Field
from cellsearch_gui.core.io.safe_paths import SafeWriter

MAX_FIELD_PIXELS = 256_000_000  # the field and its label image are held in memory while written
LABEL_NAME = "cells"


def class_table(rows: list[CellRow], colours: dict, uncertain: list[bool]) -> list[dict]:
    """One entry per label value (1-based, in row order): the image-label ``properties``."""
    return [{"label-value": value, "cell_id": r.cell.cell_id, "class": r.final or "unclassified",
             "predicted": r.predicted or "", "user_label": r.user_label or "", "uncertain": flag,
             "entropy": None if r.entropy is None else round(abs(float(r.entropy)), 4),
             "colour": list(colours.get(r.final or "", UNCLASSIFIED_COLOUR))}
            for value, (r, flag) in enumerate(zip(rows, uncertain), start=1)]


def _write_field(target: Path, image: np.ndarray, labels: np.ndarray, table: list[dict]) -> None:
    import zarr
    from ome_zarr.writer import write_image, write_labels

    root = zarr.open_group(str(target), mode="w")
    write_image(np.moveaxis(image, -1, 0), root, axes="cyx", scale_factors=())
    colors = [{"label-value": t["label-value"], "rgba": t["colour"] + [255]} for t in table]
    write_labels(labels, root, name=LABEL_NAME, axes="yx", scaler=None, scale_factors=(),
                 label_metadata={"colors": colors, "properties": table})


def write_ome_zarr(table: ExportTable, out_dir: str | Path) -> ExportSummary:
    out_dir = Path(out_dir)
    summary = ExportSummary()
    colours = class_colours(table.classes)
    writer = SafeWriter(out_dir)
    groups = rows_by_field(table)
    check_writable(out_dir, "write the OME-Zarr export")
    with disk_errors(out_dir, "write the OME-Zarr export"):
        out_dir.mkdir(parents=True, exist_ok=True)
        for (sample, image_path), rows in groups.items():
            with Field(image_path) as field_image:
                height, width = field_image.shape
                if height * width > MAX_FIELD_PIXELS:
                    summary.notes.append(f"{image_path}: {height}x{width} px is too large for this export; skipped")
                    continue
                pixels = field_image.read(0, height, 0, width)
            labels = paint_labels((height, width), [r.cell for r in rows], list(range(1, len(rows) + 1)))
            entries = class_table(rows, colours, [table.is_uncertain(r) for r in rows])
            target = writer.target((sample,), Path(image_path).name, ".zarr")
            target = target.with_name(target.stem + ".ome.zarr")
            _replace_folder(target, lambda tmp: _write_field(tmp, pixels, labels, entries))
            summary.files.append(target)
            summary.cells += len(rows)
    if len(table.rows) > sum(map(len, groups.values())):
        summary.notes.append(f"{len(table.rows) - sum(map(len, groups.values()))} cell(s) have no mask in a field "
                             "(ready-made crops): not in the label images")
    return summary


def _replace_folder(target: Path, write) -> None:
    """Written beside the target, then renamed into place: a failed write leaves no half folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name("." + target.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
