"""Labelled crop folders (DIR/<class>/<image>) and unlabelled query folders."""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellsearch_gui.core.errors import DatasetError
from cellsearch_gui.core.io.files import display_path, is_inside, nfc, regular_file_problem
from cellsearch_gui.core.io.images import is_image_name
from cellsearch_gui.core.types import crop_cell_id


@dataclass
class CropSet:
    """Crop files with optional labels; ``problems`` lists what was skipped and why."""

    paths: list[Path]
    labels: list[str | None]
    problems: list[str] = field(default_factory=list)
    cell_ids: list[str] | None = None  # one per path; None: each file is its own cell (types.crop_cell_id)

    def ids(self) -> list[str]:
        return list(self.cell_ids) if self.cell_ids is not None else [crop_cell_id(p) for p in self.paths]

    @property
    def labelled(self) -> bool:
        return bool(self.labels) and all(label is not None for label in self.labels)

    @property
    def classes(self) -> list[str]:
        return sorted({label for label in self.labels if label is not None})

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))

    def subset(self, indices) -> "CropSet":
        idx = list(indices)
        ids = None if self.cell_ids is None else [self.cell_ids[i] for i in idx]
        return CropSet([self.paths[i] for i in idx], [self.labels[i] for i in idx], list(self.problems), ids)

    def restrict(self, classes: list[str]) -> "CropSet":
        wanted = set(classes)
        return self.subset(i for i, label in enumerate(self.labels) if label in wanted)

    def __len__(self) -> int:
        return len(self.paths)


def keep_shared_classes(ref: CropSet, query: CropSet) -> tuple[CropSet, CropSet, list[str]]:
    """Both sets restricted to the classes they share, and the classes left out (sorted)."""
    common = sorted(set(ref.classes) & set(query.classes))
    left_out = sorted(set(ref.classes) ^ set(query.classes))
    return ref.restrict(common), query.restrict(common), left_out


def keep_classes(ref: CropSet, classes: list[str] | None) -> tuple[CropSet, list[str]]:
    """The library restricted to ``classes`` (None or empty: all), and a note for each chosen class it
    lacks (a typo, or a class of another library)."""
    if not classes:
        return ref, []
    present = set(ref.labels)
    notes = [f"class '{c}' was chosen but the reference library has no such class; known: "
             f"{', '.join(ref.classes)}" for c in classes if c not in present]
    kept = ref.restrict(classes)
    if not len(kept):
        raise DatasetError(f"none of the chosen classes ({', '.join(classes)}) is in the reference library; "
                           f"its classes: {', '.join(ref.classes)}")
    return kept, notes


def _hidden(path: Path) -> bool:
    return path.name.startswith((".", "_"))


METADATA_SUFFIXES = {".csv", ".md", ".txt", ".json", ".xml"}


def _images_in(folder: Path, problems: list[str], is_class_folder: bool = True, root: Path | None = None,
               seen: set[str] | None = None) -> list[Path]:
    """Image files directly in ``folder``. Special files, broken links, links leaving ``root`` and files
    already met through another link are skipped with a note."""
    found = []
    seen = set() if seen is None else seen
    for path in sorted(folder.iterdir()):
        if _hidden(path) or path.is_dir():
            continue
        shown = display_path(path)
        if not is_image_name(path):
            if is_class_folder or path.suffix.lower() not in METADATA_SUFFIXES:
                problems.append(f"{shown}: not an image file (extension '{path.suffix or 'none'}'), skipped")
            continue
        problem = regular_file_problem(path)
        if problem:
            problems.append(f"{shown}: {problem}, skipped")
        elif root is not None and not is_inside(path, root):
            problems.append(f"{shown}: a link leading outside the library ({display_path(root)}), not followed")
        elif os.path.realpath(path) in seen:
            problems.append(f"{shown}: the same file as another image reached through a link, used once")
        else:
            seen.add(os.path.realpath(path))
            found.append(path)
    return found


def _class_folders(root: Path, problems: list[str]) -> list[tuple[str, Path]]:
    """(class name in NFC, folder) for each class folder; links leaving the library and second links to
    one folder are skipped with a note."""
    by_target: dict[str, Path] = {}
    folders = []
    for folder in sorted(root.iterdir()):
        if _hidden(folder) or not folder.is_dir():
            continue
        target = os.path.realpath(folder)
        if not is_inside(folder, root):
            problems.append(f"{display_path(folder)}: class folder is a link leading outside the library "
                            f"({display_path(root)}), not followed")
        elif target in by_target:
            problems.append(f"{display_path(folder)}: a link to class folder '{display_path(by_target[target].name)}'"
                            ", not a class of its own, skipped")
        else:
            by_target[target] = folder
            folders.append((nfc(folder.name), folder))
    return folders


def scan_class_folders(root: str | Path) -> CropSet:
    """Read DIR/<class>/<image>; folders starting with '_' or '.' are not classes. Class names are NFC
    (one name however it is spelt); links never lead outside the library or duplicate a class."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{display_path(root)}: not a folder")
    problems: list[str] = []
    paths, labels = [], []
    seen: set[str] = set()
    for label, class_dir in _class_folders(root, problems):
        images = _images_in(class_dir, problems, root=root, seen=seen)
        if not images:
            problems.append(f"{display_path(class_dir)}: class folder '{display_path(class_dir.name)}' holds no "
                            "images, skipped")
        paths += images
        labels += [label] * len(images)
    if not paths:
        raise DatasetError(f"{display_path(root)}: no labelled images found; expected one sub-folder per class "
                           "(DIR/<class>/<image>)")
    return CropSet(paths, labels, problems)


def scan_query(root: str | Path) -> CropSet:
    """A query folder: class folders (labelled, can be scored) or a flat folder of images (unlabelled)."""
    root = Path(root)
    if root.is_file():
        return CropSet([root], [None])
    if not root.is_dir():
        problem = regular_file_problem(root) if os.path.lexists(root) else "no such file or folder"
        raise DatasetError(f"{display_path(root)}: {problem}")
    if (root / "cells.csv").is_file():
        return read_cells_csv(root / "cells.csv")
    problems: list[str] = []
    flat = _images_in(root, problems, is_class_folder=False)
    if flat:
        return CropSet(flat, [None] * len(flat), problems)
    return scan_class_folders(root)


def stratified_split(labels: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): each class gives round(fraction * n) samples, at least one if n > 1."""
    if not 0 < fraction < 1:
        raise DatasetError(f"split fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    keep, held = [], []
    for label in sorted(set(labels)):
        idx = np.flatnonzero(labels_arr == label)
        rng.shuffle(idx)
        n_held = int(round(fraction * len(idx)))
        n_held = min(max(n_held, 1 if len(idx) > 1 else 0), len(idx) - 1)
        held += idx[:n_held].tolist()
        keep += idx[n_held:].tolist()
    return np.array(sorted(keep)), np.array(sorted(held))


def read_cells_csv(path: Path) -> CropSet:
    """Crops written by `cellsearch segment`; a 'label' column, when filled in, makes them labelled."""

    paths, labels, problems = [], [], []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "crop_path" not in reader.fieldnames:
            raise DatasetError(f"{display_path(path)}: not a cells.csv from 'cellsearch segment' (no crop_path column)")
        for line, row in enumerate(reader, start=2):
            crop = path.parent / (row.get("crop_path") or "")
            if not row.get("crop_path") or not crop.is_file():
                problems.append(f"{display_path(path)}:{line}: crop file '{row.get('crop_path')}' is missing, skipped")
                continue
            paths.append(crop)
            labels.append(nfc(row["label"]) if row.get("label") else None)
    if not paths:
        raise DatasetError(f"{display_path(path)}: lists no existing crops")
    return CropSet(paths, labels, problems)


def load_reference(dirs) -> CropSet:
    sets = [scan_class_folders(d) for d in dirs]
    if not sets:
        raise DatasetError("no reference library: add a folder with one sub-folder of cell images per class")
    return CropSet(sum((s.paths for s in sets), []), sum((s.labels for s in sets), []),
                   sum((s.problems for s in sets), []))
