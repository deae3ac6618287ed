"""The offline demo: a small PBC reference library (the five white-cell classes) with its features stored
for the default models, and a few BCCD blood-smear fields, built once from the sample data folder
(CELLSEARCH_SAMPLE_DATA, or ../shared/data next to a source checkout)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cellsearch_gui
from cellsearch_gui.core.app.libraries import embed_library_job
from cellsearch_gui.core.app.run import DEFAULT_MODELS, AnalysisSettings
from cellsearch_gui.core.errors import DatasetError
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.io.atomic import write_text_atomic
from cellsearch_gui.core.project.library import LIBRARY_FILE, read_library_info

SAMPLE_ENV = "CELLSEARCH_SAMPLE_DATA"
DEMO_CLASSES = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")
DEMO_MODELS = list(DEFAULT_MODELS)
DEMO_PER_CLASS, DEMO_FIELDS = 60, 6
DEMO_DIAMETER_PX = 160  # white cells in the 640x480 BCCD fields
DEMO_LIBRARY, DEMO_IMAGES = "pbc_library", "bccd_fields"
DEMO_DEVICE = "CellaVision DM96 (PBC, Barcelona)"


def find_sample_data() -> Path | None:
    candidates = [os.environ.get(SAMPLE_ENV)]
    checkout = Path(cellsearch_gui.__file__).resolve().parents[1]  # the repository, in a source checkout
    candidates += [str(parent / "shared" / "data") for parent in (checkout, checkout.parent)]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if (path / "pbc_barcelona").is_dir() and (path / "bccd_fov").is_dir():
            return path
    return None


def build_demo(target: Path, per_class: int = 30, fields: int = DEMO_FIELDS, data: Path | None = None
               ) -> tuple[Path, Path]:
    """Copy a small library and a few fields into ``target``; returns (reference folder, fields folder)."""
    data = data or find_sample_data()
    if data is None:
        raise DatasetError(f"no sample data found: set {SAMPLE_ENV} to the folder holding pbc_barcelona and "
                           "bccd_fov")
    reference, images = Path(target) / DEMO_LIBRARY, Path(target) / DEMO_IMAGES
    for name in DEMO_CLASSES:
        (reference / name).mkdir(parents=True, exist_ok=True)
        for src in sorted((data / "pbc_barcelona" / name).iterdir())[:per_class]:
            shutil.copy2(src, reference / name / src.name)
    images.mkdir(parents=True, exist_ok=True)
    for src in sorted((data / "bccd_fov" / "JPEGImages").iterdir())[:fields]:
        shutil.copy2(src, images / src.name)
    return reference, images


def demo_settings() -> AnalysisSettings:
    """The window's default settings with the demo's models and the cell size of its fields."""
    return AnalysisSettings(models=list(DEMO_MODELS), cell_diameter_px=DEMO_DIAMETER_PX)


def installed_demo() -> tuple[Path, Path] | None:
    """(library, fields) of the demo that setup.sh built in the checkout (``demo/``), when it is there."""
    target = Path(cellsearch_gui.__file__).resolve().parents[1] / "demo"
    return (target / DEMO_LIBRARY, target / DEMO_IMAGES) if demo_is_built(target) else None


def demo_is_built(target: Path) -> bool:
    """The demo's library holds its features (written last) and its fields are there."""
    library = Path(target) / DEMO_LIBRARY
    return (library / LIBRARY_FILE).is_file() and bool(read_library_info(library).get("features")) and \
        (Path(target) / DEMO_IMAGES).is_dir()


def build_demo_job(target: Path, per_class: int = DEMO_PER_CLASS, fields: int = DEMO_FIELDS,
                   data: Path | None = None, device: str = "auto", token: CancelToken | None = None
                   ) -> Job[tuple[Path, Path]]:
    """The demo library with its features stored (embedded once, here), and its fields; a demo already
    built in ``target`` is kept as it is."""
    target = Path(target)
    if demo_is_built(target):
        return target / DEMO_LIBRARY, target / DEMO_IMAGES
    yield Progress("copying the demo images", 0, 1)
    reference, images = build_demo(target, per_class, fields, data)
    write_text_atomic(reference / LIBRARY_FILE, json.dumps({"format": 1, "device": DEMO_DEVICE, "pixel_size_um": None,
                                                            "sources": ["PBC (Acevedo et al. 2020), CC BY 4.0"]}))
    yield from embed_library_job(reference, demo_settings(), device, token=token)
    return reference, images
