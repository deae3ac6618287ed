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
from cellsearch_gui.core.io.images import collect_images
from cellsearch_gui.core.io.safe_paths import SafeWriter
from cellsearch_gui.core.io.spreadsheet import SafeCsvWriter
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.segmentation.fields import ImageResult, segment_field
from cellsearch_gui.core.segmentation.settings import SegmentSettings, make_segmenter


def segment_images(inputs: list[str | Path], out_dir: str | Path, settings: SegmentSettings,
                   token: CancelToken | None = None) -> Job[SegmentSummary]:
    """Segment every image; one bad file is reported and skipped, finished images stay written."""
    from PIL import Image

    token = token or CancelToken()
    out = Path(out_dir)
    with disk_errors(out, "write the segmentation results"):
        (out / "crops").mkdir(parents=True, exist_ok=True)
        images, problems = collect_images(inputs)
        csv_path = out / "cells.csv"
        segmenters = {}
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
                            cell = make_cell(field_, mask, tile, scale, segmenters[key].name, taken)
                            crop = cut_crop(field_, mask, settings.crop_size, settings.normalisation, scale,
                                            settings.mask_background)  # framed with its own mask: no find_cell
                            written = crops.save(Image.fromarray(crop).save, ("crops",), cell.cell_id, ".png")
                            cell.crop_path = f"crops/{written.name}"
                            rows.append(csv_row(cell))
                        writer.writerows(rows)
                        handle.flush()
                        result.cells = len(rows)
                except BadImageError as exc:
                    result = ImageResult(str(path), problem=exc.problem)
                    problems.append(str(exc))
                result.seconds = time.perf_counter() - t0
                results.append(result)
        summary = SegmentSummary(
            app_version=__version__,
            settings={**asdict(settings), "normalisation": settings.normalisation.as_dict()},
            images=len(images),
            cells=sum(r.cells for r in results),
            per_image=results,
            problems=problems,
        )
        (out / "segment.json").write_text(json.dumps(summary.as_dict(), indent=1, default=str))
    yield Progress("images", len(images), len(images))
    return summary
