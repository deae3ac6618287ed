"""Cell records and crops: a 224x224 (configurable) crop centred on each mask, at the working pixel size."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

import numpy as np

from cellsearch_gui.core.fields import Field
from cellsearch_gui.core.normalise import Normalisation, apply_clahe, rescale
from cellsearch_gui.core.segmentation.masks import CellMask, encode_rle


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
    """Crop centred on the mask centroid, at the working scale; pads with edge pixels at the image border."""
    import cv2

    cy, cx = mask.centroid
    half_src = crop_size / (2 * scale)
    y0, x0 = int(np.floor(cy - half_src)), int(np.floor(cx - half_src))
    side = int(np.ceil(2 * half_src))
    height, width = field.shape
    region = field.read(max(0, y0), min(height, y0 + side), max(0, x0), min(width, x0 + side))
    pad = (max(0, -y0), max(0, y0 + side - height), max(0, -x0), max(0, x0 + side - width))
    if any(pad):
        region = cv2.copyMakeBorder(region, *pad, cv2.BORDER_REPLICATE)
    crop = cv2.resize(region, (crop_size, crop_size),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if norm.clahe:
        crop = apply_clahe(crop, norm.clahe_clip, norm.clahe_grid)
    if mask_background:
        canvas = np.zeros((side, side), np.uint8)
        my0, mx0 = mask.y0 - y0, mask.x0 - x0
        sy0, sx0 = max(0, -my0), max(0, -mx0)
        sub = mask.mask[sy0 : side - my0, sx0 : side - mx0]
        canvas[my0 + sy0 : my0 + sy0 + sub.shape[0], mx0 + sx0 : mx0 + sx0 + sub.shape[1]] = sub
        inside = rescale(canvas, crop_size / side, nearest=True)[:crop_size, :crop_size].astype(bool)
        fill = np.median(crop[~inside], axis=0) if (~inside).any() else np.array([255, 255, 255])
        crop = np.where(inside[:, :, None], crop, fill.astype(np.uint8))
    return crop


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
