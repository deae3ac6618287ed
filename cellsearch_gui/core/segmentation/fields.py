"""Segment a whole field of view tile by tile, masks in source pixels."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from cellsearch_gui.core.io.fields import Field
from cellsearch_gui.core.io.images import rescale
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.segmentation.base import Segmenter
from cellsearch_gui.core.segmentation.masks import OUTLINE_KEPT, SIZE_OUTLINE_KEPT, CellMask
from cellsearch_gui.core.segmentation.settings import SegmentSettings
from cellsearch_gui.core.segmentation.tiling import Tile, owned, tiles

# counted, never lost: kept by the tile that holds its centroid; kept with its classical outline
NOT_LOST = ("centroid in another tile", OUTLINE_KEPT, SIZE_OUTLINE_KEPT)


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


def tiles_per_call(segmenter: Segmenter) -> int:
    """A segmenter with ``segment_many`` (SAM) takes ``tile_batch`` tiles at a time through its encoder."""
    return max(1, getattr(segmenter, "tile_batch", 1)) if hasattr(segmenter, "segment_many") else 1


def _segment_tiles(field_: Field, segmenter: Segmenter, batch: list[Tile], total: int, scale: float,
                   token: CancelToken) -> Job[list[tuple[Tile, list[CellMask], dict[str, int]]]]:
    """Each tile's masks (tile coordinates) and what the segmenter left out, by reason."""
    regions = []
    for tile in batch:
        token.raise_if_cancelled()
        yield Progress("segmenting", tile.index, total, field_.path.name)
        regions.append(rescale(field_.read(tile.y0, tile.y1, tile.x0, tile.x1), scale))
        field_.release_pages()
    if len(batch) > 1:
        return [(tile, masks, dropped) for tile, (masks, dropped) in zip(batch, segmenter.segment_many(regions))]
    masks = segmenter.segment(regions[0])
    return [(batch[0], masks, dict(getattr(segmenter, "dropped", {})))]


@dataclass
class ImageResult:
    path: str
    cells: int = 0
    dropped: dict = field(default_factory=dict)
    tiles: int = 0
    seconds: float = 0.0
    problem: str | None = None
    notes: list[str] = field(default_factory=list)


def segment_field(field_: Field, segmenter: Segmenter, settings: SegmentSettings, diameter_px: float,
                  scale: float, token: CancelToken) -> Job[tuple[list[CellMask], list[int], ImageResult]]:
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
    segmenter.prepare(rescale(field_.overview(), scale))
    per_call = tiles_per_call(segmenter)
    for start in range(0, len(tile_list), per_call):
        batch = tile_list[start : start + per_call]
        for tile, masks, dropped in (yield from _segment_tiles(field_, segmenter, batch, len(tile_list), scale,
                                                               token)):
            for reason, count in dropped.items():
                result.dropped[reason] = result.dropped.get(reason, 0) + count
            for mask in masks:
                sized = mask.within(lo, hi)
                if sized is None:
                    reason = "smaller than the size filter" if mask.area < lo else "larger than the size filter"
                else:
                    if sized is not mask:  # SAM's mask out of range, its classical proposal in: counted
                        result.dropped[SIZE_OUTLINE_KEPT] = result.dropped.get(SIZE_OUTLINE_KEPT, 0) + 1
                    mask = replace(sized, outline=None)
                    src = _to_source(mask, scale, tile.y0, tile.x0)
                    reason = owned(src, tile, height, width, settings.drop_border_cells)
                    if reason is None:
                        kept.append(src)
                        tile_ids.append(tile.index)
                        continue
                result.dropped[reason] = result.dropped.get(reason, 0) + 1
    result.tiles = len(tile_list)
    return kept, tile_ids, result


def plural(count: int, noun: str, many: str | None = None) -> str:
    """'1 cell', '2 cells' (``many`` for irregular plurals)."""
    return f"{count} {noun if count == 1 else (many or noun + 's')}"


def lost_cells(result: ImageResult) -> dict[str, int]:
    """What this field's filters left out, by reason (tile bookkeeping that loses nothing is left out)."""
    return {why: n for why, n in result.dropped.items() if n and why not in NOT_LOST}


def field_note(result: ImageResult, name: str | None = None) -> str:
    """One line for the run's notes: the cells kept, what was left out and why, the cell size used."""
    name = name or result.path
    if result.problem:
        return f"{name}: skipped ({result.problem})"
    kept = "no cell found" if not result.cells else plural(result.cells, "cell") + " kept"
    parts = [kept] + [part for part in result.notes if part]
    parts += [f"{result.dropped[kept]} {kept}" for kept in (OUTLINE_KEPT, SIZE_OUTLINE_KEPT) if result.dropped.get(kept)]
    lost = lost_cells(result)
    if lost:
        parts.append("left out: " + ", ".join(f"{n} {why}" for why, n in lost.items()))
    return f"{name}: " + "; ".join(parts)
