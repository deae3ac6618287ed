"""export-library on a full disk: one clear message, no traceback (issue 16, finding 4)."""

import errno
import shutil
from types import SimpleNamespace

import pytest

from cellsearch_gui.core.io.atomic import DiskError
from cellsearch_gui.core.project.library import export_library
from cellsearch_gui.core.types import Cell


def test_export_library_on_a_full_disk_is_a_clear_message(tmp_path, monkeypatch):
    crop = tmp_path / "c1.png"
    crop.write_bytes(b"\x89PNG fake")
    workspace = SimpleNamespace(reference_dirs=[], store=None, cells=[Cell("c1", str(crop), str(crop))],
                                user_labels={"c1": "neutrophil"},
                                settings=SimpleNamespace(reference_pixel_size_um=None))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copy2", full)
    with pytest.raises(DiskError, match="disk is full"):
        export_library(workspace, tmp_path / "library")
    assert not (tmp_path / "library" / "library.json").exists()
