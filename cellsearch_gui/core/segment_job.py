"""Segment microscope images into cells, tile by tile, and write crops plus a cells.csv record per cell."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cellsearch_gui import __version__
from cellsearch_gui.core.cells import CellRecord, cut_crop, make_record
from cellsearch_gui.core.errors import BadImageError, CellSearchError
from cellsearch_gui.core.fields import Field
from cellsearch_gui.core.images import is_image_name
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.normalise import Normalisation, rescale
from cellsearch_gui.core.segmentation.classical import ClassicalSegmenter
from cellsearch_gui.core.segmentation.masks import CellMask
from cellsearch_gui.core.segmentation.tiling import owned, tiles

SEGMENTERS = ("classical", "mobilesam", "sam_vit_b", "sam_vit_l", "sam_vit_h")
DEFAULT_DIAMETER_PX = 60.0


@dataclass
class SegmentSettings:
    segmenter: str = "classical"
    objects: str = "all"  # all | nucleated (cells with a stained nucleus, e.g. white blood cells)
    pixel_size_um: float | None = None  # overrides the file's metadata
    cell_diameter_um: float | None = None
    cell_diameter_px: float | None = None  # at the working scale; used when no pixel size is known
    min_area_fraction: float = 0.25  # of the typical cell area
    max_area_fraction: float = 4.0
    drop_border_cells: bool = True
    tile_size: int = 1024
    overlap: int | None = None  # default: 1.5 cell diameters
    crop_size: int = 224
    mask_background: bool = False
    normalisation: Normalisation = field(default_factory=Normalisation)
    device: str = "cpu"
    checkpoint: str | None = None  # a SAM checkpoint file instead of the imported weights

    def diameter_px(self, pixel_size_um: float | None) -> tuple[float, str]:
        working_px = self.normalisation.target_pixel_size_um or pixel_size_um
        if self.cell_diameter_um and working_px:
            return self.cell_diameter_um / working_px, f"{self.cell_diameter_um} um"
        if self.cell_diameter_px:
            return self.cell_diameter_px, f"{self.cell_diameter_px} px"
        return DEFAULT_DIAMETER_PX, f"default {DEFAULT_DIAMETER_PX:.0f} px (no cell size given)"


def make_segmenter(settings: SegmentSettings, diameter_px: float):
    proposals = ClassicalSegmenter(objects=settings.objects, cell_diameter_px=diameter_px)
    if settings.segmenter == "classical":
        return proposals
    if settings.segmenter in SEGMENTERS:
        from cellsearch_gui.core.segmentation.sam import SamSegmenter

        return SamSegmenter(settings.segmenter, proposals=proposals, device=settings.device,
                            checkpoint=settings.checkpoint)
    raise CellSearchError(f"unknown segmenter '{settings.segmenter}'; choose one of {', '.join(SEGMENTERS)}")


def collect_images(inputs: list[str | Path]) -> tuple[list[Path], list[str]]:
    images, problems = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and is_image_name(p)
                           and not any(part.startswith((".", "_")) for part in p.relative_to(item).parts))
            if not found:
                problems.append(f"{item}: folder holds no images")
            images += found
        elif item.is_file():
            images.append(item)
        else:
            problems.append(f"{item}: no such file or folder")
    return images, problems


def _to_source(mask: CellMask, scale: float, tile_y0: int, tile_x0: int) -> CellMask:
    if abs(scale - 1) > 1e-6:
        import cv2

        y0, x0 = mask.y0 / scale, mask.x0 / scale
        height = int(np.ceil((mask.y0 + mask.mask.shape[0]) / scale)) - int(y0)
        width = int(np.ceil((mask.x0 + mask.mask.shape[1]) / scale)) - int(x0)
        # pixel-centre aligned resampling of the mask to source pixels
        grid_y = (np.arange(height) + int(y0) + 0.5) * scale - 0.5 - mask.y0
        grid_x = (np.arange(width) + int(x0) + 0.5) * scale - 0.5 - mask.x0
        map_x, map_y = np.meshgrid(grid_x.astype(np.float32), grid_y.astype(np.float32))
        src = cv2.remap(mask.mask.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        mask = CellMask(int(y0), int(x0), src >= 0.5, mask.score, mask.stability)
    return mask.shifted(tile_y0, tile_x0)


@dataclass
class ImageResult:
    path: str
    cells: int = 0
    dropped: dict = field(default_factory=dict)
    tiles: int = 0
    seconds: float = 0.0
    problem: str | None = None
    notes: list[str] = field(default_factory=list)


def segment_field(field_: Field, segmenter, settings: SegmentSettings, diameter_px: float, scale: float,
                  token: CancelToken) -> Job[tuple[list[CellMask], list[int], ImageResult]]:
    """Masks (source coordinates) owned by exactly one tile each."""
    height, width = field_.shape
    overlap = settings.overlap or int(np.ceil(1.5 * diameter_px))
    step_src = max(1, int(settings.tile_size / scale))
    overlap_src = int(np.ceil(overlap / scale))
    area = np.pi / 4 * diameter_px ** 2
    lo, hi = settings.min_area_fraction * area, settings.max_area_fraction * area
    result = ImageResult(str(field_.path))
    kept, tile_ids = [], []
    tile_list = list(tiles(height, width, step_src, overlap_src))
    if hasattr(segmenter, "prepare"):
        segmenter.prepare(rescale(field_.overview(), scale))
    for tile in tile_list:
        token.raise_if_cancelled()
        yield Progress("segmenting", tile.index, len(tile_list), field_.path.name)
        region = rescale(field_.read(tile.y0, tile.y1, tile.x0, tile.x1), scale)
        field_.release_pages()
        for mask in segmenter.segment(region):
            if not lo <= mask.area <= hi:
                reason = "smaller than the size filter" if mask.area < lo else "larger than the size filter"
            else:
                src = _to_source(mask, scale, tile.y0, tile.x0)
                reason = owned(src, tile, height, width, settings.drop_border_cells)
                if reason is None:
                    kept.append(src)
                    tile_ids.append(tile.index)
                    continue
            result.dropped[reason] = result.dropped.get(reason, 0) + 1
    result.tiles = len(tile_list)
    return kept, tile_ids, result


def segment_images(inputs: list[str | Path], out_dir: str | Path, settings: SegmentSettings,
                   token: CancelToken | None = None) -> Job[dict]:
    """Segment every image; one bad file is reported and skipped, finished images stay written."""
    from PIL import Image

    token = token or CancelToken()
    out = Path(out_dir)
    (out / "crops").mkdir(parents=True, exist_ok=True)
    images, problems = collect_images(inputs)
    csv_path = out / "cells.csv"
    segmenters = {}
    results: list[ImageResult] = []
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CellRecord.columns())
        writer.writeheader()
        for number, path in enumerate(images):
            token.raise_if_cancelled()
            yield Progress("images", number, len(images), path.name)
            t0 = time.perf_counter()
            try:
                with Field(path) as field_:
                    pixel_size = settings.pixel_size_um or field_.info.pixel_size_um
                    if settings.pixel_size_um:
                        field_.info.pixel_size_um = settings.pixel_size_um
                        field_.info.pixel_size_source = "given by the user"
                    scale = settings.normalisation.scale_for(pixel_size)
                    diameter, how = settings.diameter_px(pixel_size)
                    key = round(diameter, 3)
                    if key not in segmenters:
                        segmenters[key] = make_segmenter(settings, diameter)
                    masks, tile_ids, result = yield from segment_field(
                        field_, segmenters[key], settings, diameter, scale, token)
                    result.notes.append(f"cell diameter {how}; pixel size "
                                        f"{pixel_size or 'unknown'} ({field_.info.pixel_size_source}); "
                                        f"scale {scale:.4g}")
                    rows = []
                    for number_in_image, (mask, tile) in enumerate(zip(masks, tile_ids)):
                        if number_in_image % 32 == 31:
                            field_.release_pages()  # crops of a huge field must not map it all in
                        record = make_record(field_, mask, tile, "", scale, segmenters[key].name)
                        record.crop_path = f"crops/{record.cell_id}.png"
                        crop = cut_crop(field_, mask, settings.crop_size, settings.normalisation, scale,
                                        settings.mask_background)
                        Image.fromarray(crop).save(out / record.crop_path)
                        rows.append(record.row())
                    writer.writerows(rows)
                    handle.flush()
                    result.cells = len(rows)
            except BadImageError as exc:
                result = ImageResult(str(path), problem=exc.problem)
                problems.append(str(exc))
            result.seconds = time.perf_counter() - t0
            results.append(result)
    summary = {
        "app_version": __version__,
        "settings": {**asdict(settings), "normalisation": settings.normalisation.as_dict()},
        "images": len(images),
        "cells": sum(r.cells for r in results),
        "per_image": [asdict(r) for r in results],
        "problems": problems,
    }
    (out / "segment.json").write_text(json.dumps(summary, indent=1, default=str))
    yield Progress("images", len(images), len(images))
    return summary
