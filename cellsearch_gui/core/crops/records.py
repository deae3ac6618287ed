"""Cells cut from segmented fields: a 224x224 (configurable) crop centred on each mask at the working pixel
size, and the cells.csv row of each (read back by ``cell_from_row``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from cellsearch_gui.core.crops.prepare import frame_cell
from cellsearch_gui.core.io.fields import Field
from cellsearch_gui.core.io.safe_paths import short_hash
from cellsearch_gui.core.segmentation.masks import CellMask, encode_rle
from cellsearch_gui.core.segmentation.settings import Normalisation
from cellsearch_gui.core.types import Cell

CSV_COLUMNS = ["cell_id", "crop_path", "source_image", "tile", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1",
               "centroid_x", "centroid_y", "area_px", "area_um2", "pixel_size_um", "pixel_size_source", "scale",
               "segmenter", "score", "mask_rle", "touches_border"]
BBOX_COLUMNS = ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")


def csv_row(cell: Cell) -> dict:
    """The cell's row of cells.csv (CSV_COLUMNS)."""
    x0, y0, x1, y1 = cell.bbox
    cx, cy = cell.centroid
    return {"cell_id": cell.cell_id, "crop_path": cell.crop_path, "source_image": cell.source_image,
            "tile": cell.tile, "bbox_x0": x0, "bbox_y0": y0, "bbox_x1": x1, "bbox_y1": y1, "centroid_x": cx,
            "centroid_y": cy, "area_px": cell.area_px, "area_um2": cell.area_um2, "pixel_size_um": cell.pixel_size_um,
            "pixel_size_source": cell.pixel_size_source, "scale": cell.scale, "segmenter": cell.segmenter,
            "score": cell.score, "mask_rle": cell.mask_rle, "touches_border": cell.touches_border}


def _number(text: str | None, kind=float):
    return kind(text) if text not in (None, "") else None


def cell_from_row(row: dict, crop: Path) -> Cell:
    """A cells.csv row back as a Cell, its crop at ``crop``; an optional ``label`` column is the true label."""
    return Cell(
        row["cell_id"], str(crop), row["source_image"], tuple(int(row[k]) for k in BBOX_COLUMNS),
        (float(row["centroid_x"]), float(row["centroid_y"])), int(row["area_px"]), row["mask_rle"],
        row.get("label") or None, tile=_number(row.get("tile"), int), area_um2=_number(row.get("area_um2")),
        pixel_size_um=_number(row.get("pixel_size_um")), pixel_size_source=row.get("pixel_size_source") or None,
        scale=_number(row.get("scale")), segmenter=row.get("segmenter") or None, score=_number(row.get("score")),
        touches_border=_flag(row.get("touches_border")))


def _flag(text: str | None) -> bool | None:
    """A cells.csv yes/no column (True/False as written; 1/0 and yes/no read too); None when absent."""
    if text in (None, ""):
        return None
    return text.strip().lower() in ("true", "1", "yes")


def source_key(image_path: str | Path) -> str:
    """8 hex digits naming one source file: a hash of its resolved path and size (not of its content: a field
    can be gigabytes), so same-named fields in same-named folders never share cell ids."""
    path = Path(image_path)
    try:
        size = path.stat().st_size
    except OSError:
        size = -1
    return short_hash(f"{os.fsencode(path.resolve())!r}|{size}")


def cell_id(image_path, cy: float, cx: float) -> str:
    """``<folder>_<name>_<source key>_y<row>_x<column>``: readable, bounded, unique per source file and position."""
    image_path = Path(image_path)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{image_path.parent.name}_{image_path.stem}").strip("_.-")
    stem = stem[:64] or "field"
    return f"{stem}_{source_key(image_path)}_y{int(round(cy)):06d}_x{int(round(cx)):06d}"


def cut_crop(field: Field, mask: CellMask, crop_size: int, norm: Normalisation, scale: float,
             mask_background: bool) -> np.ndarray:
    """Crop centred on the mask centroid at the working scale, through the same ``frame_cell`` that
    prepares ready-made crops (so both paths give the same pixels for the same cell)."""
    cy, cx = mask.centroid
    half = int(np.ceil(crop_size / (2 * scale))) + 2
    height, width = field.shape
    y0, x0 = max(0, int(cy) - half), max(0, int(cx) - half)
    region = field.read(y0, min(height, int(cy) + half + 1), x0, min(width, int(cx) + half + 1))
    local = mask.shifted(-y0, -x0)
    colour = "clahe" if norm.clahe else norm.colour
    return frame_cell(region, local, scale, crop_size, mask_background, colour, (cy - y0, cx - x0))


def make_cell(field: Field, mask: CellMask, tile: int, scale: float, segmenter: str,
              taken: set[str] | None = None) -> Cell:
    """The cell of one mask; its crop is ``crops/<cell_id>.png`` beside cells.csv. An id already in ``taken``
    (two masks rounding to one centroid) gets a ``-2``, ``-3``... suffix; the new id is added to ``taken``."""
    cy, cx = mask.centroid
    px = field.info.pixel_size_um
    uid = base = cell_id(field.path, cy, cx)
    number = 1
    while taken is not None and uid in taken:
        number += 1
        uid = f"{base}-{number}"
    if taken is not None:
        taken.add(uid)
    return Cell(
        cell_id=uid, crop_path=f"crops/{uid}.png", source_image=str(field.path), bbox=tuple(mask.bbox),
        centroid=(round(cx, 2), round(cy, 2)), area_px=mask.area, mask_rle=encode_rle(mask.mask), tile=tile,
        area_um2=round(mask.area * px * px, 3) if px else None, pixel_size_um=px,
        pixel_size_source=field.info.pixel_size_source, scale=round(scale, 6), segmenter=segmenter,
        score=round(mask.score, 4),
    )
