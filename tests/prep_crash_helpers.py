"""Crop preparation tasks for the worker-process tests: importable by name in the worker processes."""

import os
import time
from pathlib import Path

from cellsearch_gui.core.crops.prepare import CropPrep
from cellsearch_gui.core.embedding.prep_workers import read_crop


def crashing_read_crop(path: Path, prep: CropPrep):
    """read_crop, except that the worker process dies on a file named crash*: a crash inside a decoder."""
    if Path(path).name.startswith("crash"):
        os._exit(3)
    return read_crop(path, prep)


def slow_read_crop(path: Path, prep: CropPrep):
    """read_crop taking at least 0.2 s a crop: a run long enough to be cancelled in the middle."""
    time.sleep(0.2)
    return read_crop(path, prep)
