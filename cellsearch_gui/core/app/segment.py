"""Segment microscope images into cells, tile by tile, and write crops plus a cells.csv record per cell."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from cellsearch_gui import __version__
from cellsearch_gui.core.app.results import SegmentSummary
from cellsearch_gui.core.crops.records import CSV_COLUMNS, csv_row, cut_crop, make_cell
from cellsearch_gui.core.errors import BadImageError
from cellsearch_gui.core.io.atomic import disk_errors
from cellsearch_gui.core.io.fields import Field
from cellsearch_gui.core.io.files import DISPLAY_ERRORS
from cellsearch_gui.core.io.images import collect_images, rescale
from cellsearch_gui.core.io.safe_paths import SafeWriter
from cellsearch_gui.core.io.spreadsheet import SafeCsvWriter
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.segmentation.fields import ImageResult, plural, segment_field
from cellsearch_gui.core.segmentation.settings import (
    DEFAULT_DIAMETER_PX,
    SegmentSettings,
    make_segmenter,
    resolved_settings,
    set_cell_diameter,
)
from cellsearch_gui.core.segmentation.size import ESTIMATE_WINDOW, central_window, estimate_diameter
from cellsearch_gui.core.segmentation.tiling import touches_border


def _field_diameter(field_: Field, settings: SegmentSettings, pixel_size: float | None, scale: float
                    ) -> tuple[float, str]:
    """The user's cell diameter (working px), or else the one measured on a central window of the field."""
    diameter, how = settings.diameter_px(pixel_size)
    if diameter is not None:
        return diameter, how
    height, width = field_.shape
    y0, y1, x0, x1 = central_window(height, width, int(ESTIMATE_WINDOW / scale))
    window = rescale(field_.read(y0, y1, x0, x1), scale)
    working_px = settings.normalisation.target_pixel_size_um or pixel_size
    estimate = estimate_diameter(window, settings.objects, working_px)
    if estimate.diameter_px is None:
        return DEFAULT_DIAMETER_PX, f"default {DEFAULT_DIAMETER_PX:.0f} px ({how}; {estimate.how})"
    return estimate.diameter_px, f"{estimate.how} ({how})"


def _segment_one(field_: Field, settings: SegmentSettings, segmenters: dict, crops: SafeWriter,
                 taken: set[str], token: CancelToken) -> Job[tuple[ImageResult, list[dict]]]:
    """One field: its cells' crops written and their cells.csv rows."""
    from PIL import Image

    pixel_size = settings.pixel_size_um or field_.info.pixel_size_um
    if settings.pixel_size_um:
        field_.info.pixel_size_um = settings.pixel_size_um
        field_.info.pixel_size_source = "given by the user"
    scale = settings.normalisation.scale_for(pixel_size)
    diameter, how = _field_diameter(field_, settings, pixel_size, scale)
    if "segmenter" not in segmenters:  # one per run: a SAM model loads once, then is re-sized per field
        segmenters["segmenter"] = make_segmenter(settings, diameter)
    segmenter = segmenters["segmenter"]
    set_cell_diameter(segmenter, diameter)
    masks, tile_ids, result = yield from segment_field(field_, segmenter, settings, diameter, scale, token)
    result.notes.append(f"cell diameter {how}; pixel size {pixel_size or 'unknown'} "
                        f"({field_.info.pixel_size_source}); scale {scale:.4g}")
    height, width = field_.shape
    rows = []
    for number_in_image, (mask, tile) in enumerate(zip(masks, tile_ids)):
        if number_in_image % 32 == 31:
            field_.release_pages()  # crops of a huge field must not map it all in
        cell = make_cell(field_, mask, tile, scale, segmenter.name, taken)
        cell.touches_border = touches_border(mask, height, width)
        crop = cut_crop(field_, mask, settings.crop_size, settings.normalisation, scale,
                        settings.mask_background)  # framed with its own mask: no find_cell
        written = crops.save(Image.fromarray(crop).save, ("crops",), cell.cell_id, ".png")
        cell.crop_path = f"crops/{written.name}"
        rows.append(csv_row(cell))
    on_border = sum(1 for row in rows if row["touches_border"])
    if on_border:
        result.notes.append(f"{plural(on_border, 'cell')} touching the image border (kept, flagged)")
    result.cells = len(rows)
    return result, rows


def segment_images(inputs: list[str | Path], out_dir: str | Path, settings: SegmentSettings,
                   token: CancelToken | None = None) -> Job[SegmentSummary]:
    """Segment every image; one bad file is reported and skipped, finished images stay written."""
    token = token or CancelToken()
    requested = settings.segmenter
    settings, choice = resolved_settings(settings)  # ``auto``: SAM on a CUDA GPU, else classical
    out = Path(out_dir)
    with disk_errors(out, "write the segmentation results"):
        (out / "crops").mkdir(parents=True, exist_ok=True)
        images, problems = collect_images(inputs)
        csv_path = out / "cells.csv"
        segmenters: dict = {}
        results: list[ImageResult] = []
        taken: set[str] = set()  # cell ids (and so crop names) of this run: never one twice
        crops = SafeWriter(out)
        with open(csv_path, "w", newline="", encoding="utf-8", errors=DISPLAY_ERRORS) as handle:
            writer = SafeCsvWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for number, path in enumerate(images):
                token.raise_if_cancelled()
                yield Progress("images", number, len(images), path.name)
                t0 = time.perf_counter()
                try:
                    with Field(path) as field_:
                        result, rows = yield from _segment_one(field_, settings, segmenters, crops, taken, token)
                        writer.writerows(rows)
                        handle.flush()
                except BadImageError as exc:
                    result = ImageResult(str(path), problem=exc.problem)
                    problems.append(str(exc))
                result.seconds = time.perf_counter() - t0
                results.append(result)
        summary = SegmentSummary(
            app_version=__version__,
            settings={**asdict(settings), "normalisation": settings.normalisation.as_dict(),
                      "segmenter_requested": requested, "segmenter_choice": choice.note},
            images=len(images),
            cells=sum(r.cells for r in results),
            per_image=results,
            problems=problems,
        )
        (out / "segment.json").write_text(json.dumps(summary.as_dict(), indent=1, default=str))
    yield Progress("images", len(images), len(images))
    return summary
