"""Cell records and crops: a 224x224 (configurable) crop centred on each mask, at the working pixel size."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

import numpy as np

from cellsearch_gui.core.crops.prepare import frame_cell
from cellsearch_gui.core.io.fields import Field
from cellsearch_gui.core.segmentation.masks import CellMask, encode_rle
from cellsearch_gui.core.segmentation.settings import Normalisation


@dataclass
class CellRecord:
    cell_id: str
    crop_path: str
    source_image: str
    tile: int
    bbox_x0: int
    bbox_y0: int
    bbox_x1: int
    bbox_y1: int
    centroid_x: float
    centroid_y: float
    area_px: int
    area_um2: float | None
    pixel_size_um: float | None
    pixel_size_source: str
    scale: float
    segmenter: str
    score: float
    mask_rle: str  # bbox-sized, source pixel coordinates

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def row(self) -> dict:
        return asdict(self)


def cell_id(image_path, cy: float, cx: float) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{image_path.parent.name}_{image_path.stem}").strip("_")
    return f"{stem}_y{int(round(cy)):06d}_x{int(round(cx)):06d}"


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


def make_record(field: Field, mask: CellMask, tile: int, crop_path: str, scale: float,
                segmenter: str) -> CellRecord:
    cy, cx = mask.centroid
    px = field.info.pixel_size_um
    x0, y0, x1, y1 = mask.bbox
    return CellRecord(
        cell_id=cell_id(field.path, cy, cx), crop_path=crop_path, source_image=str(field.path), tile=tile,
        bbox_x0=x0, bbox_y0=y0, bbox_x1=x1, bbox_y1=y1, centroid_x=round(cx, 2), centroid_y=round(cy, 2),
        area_px=mask.area, area_um2=round(mask.area * px * px, 3) if px else None, pixel_size_um=px,
        pixel_size_source=field.info.pixel_size_source, scale=round(scale, 6), segmenter=segmenter,
        score=round(mask.score, 4), mask_rle=encode_rle(mask.mask),
    )
