"""What the user dropped -> query cells: fields are segmented into crops, ready-made crops are used as they are."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from cellsearch_gui.core.app.segment import segment_images
from cellsearch_gui.core.crops.records import cell_from_row
from cellsearch_gui.core.errors import DatasetError
from cellsearch_gui.core.io.dataset import scan_class_folders
from cellsearch_gui.core.io.files import regular_file_problem
from cellsearch_gui.core.io.images import collect_images, is_image_name
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.segmentation.fields import ImageResult, field_note
from cellsearch_gui.core.segmentation.settings import SegmentSettings
from cellsearch_gui.core.types import Cell, crop_cell_id

FIELD_MIN_SIDE = 512  # an image at least this wide or tall is a field of view to segment, not a crop


def image_side(path: Path) -> int:
    """Largest side in pixels from the file header only; 0 when it cannot be read (reported later)."""
    if regular_file_problem(path):
        return 0
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
                return max(shape[-3:-1] if shape[-1] in (3, 4) else shape[-2:])
        from PIL import Image

        with Image.open(path) as image:
            return max(image.size)
    except Exception:  # noqa: BLE001 - unreadable files are reported by the step that reads them
        return 0


def _crop_cell(path: Path, label: str | None = None) -> Cell:
    return Cell(crop_cell_id(path), str(path), str(path), true_label=label)


def cells_from_csv(csv_path: Path) -> list[Cell]:
    """The cells of a segment job's cells.csv whose crop file is there."""
    cells = []
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                crop = csv_path.parent / (row.get("crop_path") or "")
                if not row.get("crop_path") or not crop.is_file():
                    continue
                try:
                    cells.append(cell_from_row(row, crop))
                except (KeyError, TypeError, ValueError) as exc:
                    raise DatasetError(f"{csv_path}, line {line}: not a cells.csv row from 'cellsearch segment' "
                                       f"(missing or non-numeric {exc}); segment the images again") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{csv_path}: unreadable cells.csv ({exc})") from None
    return cells


def sort_inputs(paths: list[str | Path], kind: str = "auto") -> tuple[list[Path], list[Cell], list[str]]:
    """(fields to segment, ready-made crop cells, notes). ``kind``: auto | fields | crops."""
    fields: list[Path] = []
    crops: list[Cell] = []
    notes: list[str] = []
    for item in map(Path, paths):
        if item.is_dir() and (item / "cells.csv").is_file():
            crops += cells_from_csv(item / "cells.csv")
            continue
        if item.is_dir() and kind != "fields" and _is_class_folder_set(item):
            labelled = scan_class_folders(item)
            notes += labelled.problems
            crops += [_crop_cell(p, lab) for p, lab in zip(labelled.paths, labelled.labels)]
            continue
        images, problems = collect_images([item])
        notes += problems
        for image in images:
            is_field = kind == "fields" or (kind == "auto" and image_side(image) >= FIELD_MIN_SIDE)
            (fields.append(image) if is_field else crops.append(_crop_cell(image)))
    return fields, crops, notes


def _is_class_folder_set(folder: Path) -> bool:
    subdirs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))]
    loose = [p for p in folder.iterdir() if p.is_file() and is_image_name(p)]
    return bool(subdirs) and not loose


def _segment_key(fields: list[Path], settings: SegmentSettings) -> str:
    stamp = [(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in fields]
    blob = json.dumps([stamp, asdict(settings)], default=str, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def segment_each(fields: list[Path], work_dir: Path, settings: SegmentSettings, token: CancelToken
                 ) -> Job[tuple[list[Cell], list[str], list[str]]]:
    """Segment field by field, each into its own folder: a finished field is never redone, so an
    interrupted run resumes at the first unfinished field (a folder counts once its segment.json exists).
    Returns the cells, the notes (one line per field: cells kept, left out and why, the cell size used)
    and the fields where no cell was found."""
    cells: list[Cell] = []
    notes: list[str] = []
    empty: list[str] = []
    for number, field_path in enumerate(fields):
        token.raise_if_cancelled()
        yield Progress("segmenting", number, len(fields), field_path.name)
        out = Path(work_dir) / "segmented" / _segment_key([field_path], settings)
        if not (out / "segment.json").is_file():
            for _ in segment_images([field_path], out, settings, token):
                token.raise_if_cancelled()
        summary = json.loads((out / "segment.json").read_text())
        notes += summary["problems"]
        for image in summary["per_image"]:
            if image.get("problem") is None:
                known = {k: v for k, v in image.items() if k in ImageResult.__dataclass_fields__}
                notes.append(field_note(ImageResult(**known)))
                if not image["cells"]:
                    empty.append(image["path"])
        cells += cells_from_csv(out / "cells.csv")
    yield Progress("segmenting", len(fields), len(fields))
    return cells, notes, empty


def collect_query_cells(paths: list[str | Path], work_dir: Path, settings: SegmentSettings, kind: str = "auto",
                        token: CancelToken | None = None) -> Job[tuple[list[Cell], list[str], list[str]]]:
    """Segment the fields (reusing finished ones) and gather every query cell; also the fields with no cell."""
    token = token or CancelToken()
    fields, cells, notes = sort_inputs(paths, kind)
    empty: list[str] = []
    if fields:
        segmented, seg_notes, empty = yield from segment_each(fields, work_dir, settings, token)
        cells, notes = segmented + cells, notes + seg_notes
    if not cells:
        raise DatasetError("no cells to classify: " + ("; ".join(notes[:3]) or "the dropped items hold no images"))
    return cells, notes, empty
