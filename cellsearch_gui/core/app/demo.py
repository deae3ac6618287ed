"""The offline demo: a small PBC reference library and a few BCCD blood-smear fields, from the sample data
folder (CELLSEARCH_SAMPLE_DATA, or ../shared/data next to a source checkout)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cellsearch_gui
from cellsearch_gui.core.errors import DatasetError

SAMPLE_ENV = "CELLSEARCH_SAMPLE_DATA"
DEMO_CLASSES = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")
DEMO_MODELS = ["mobilenetv2", "efficientnet_lite0"]


def find_sample_data() -> Path | None:
    candidates = [os.environ.get(SAMPLE_ENV)]
    checkout = Path(cellsearch_gui.__file__).resolve().parents[1]  # the repository, in a source checkout
    candidates += [str(parent / "shared" / "data") for parent in (checkout, checkout.parent)]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if (path / "pbc_barcelona").is_dir() and (path / "bccd_fov").is_dir():
            return path
    return None


def build_demo(target: Path, per_class: int = 30, fields: int = 6) -> tuple[Path, Path]:
    """Copy a small library and a few fields into ``target``; returns (reference folder, fields folder)."""
    data = find_sample_data()
    if data is None:
        raise DatasetError(f"no sample data found: set {SAMPLE_ENV} to the folder holding pbc_barcelona and "
                           "bccd_fov")
    reference, images = Path(target) / "reference_pbc", Path(target) / "fields_bccd"
    for name in DEMO_CLASSES:
        (reference / name).mkdir(parents=True, exist_ok=True)
        for src in sorted((data / "pbc_barcelona" / name).iterdir())[:per_class]:
            shutil.copy2(src, reference / name / src.name)
    images.mkdir(parents=True, exist_ok=True)
    for src in sorted((data / "bccd_fov" / "JPEGImages").iterdir())[:fields]:
        shutil.copy2(src, images / src.name)
    return reference, images
