"""Library cells know their device (library.json); cells of the query's device vote as that device's labelled
cells, in evaluate (--query-device) and in the window (query microscope), issue 15."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from cellsearch_gui.cli import main
from cellsearch_gui.core.app.run import AnalysisSettings, device_rows
from cellsearch_gui.core.app.shots import score_zero_shot
from cellsearch_gui.core.classify.device_vote import DeviceAwareClassifier
from cellsearch_gui.core.classify.ewc import EWCParams
from cellsearch_gui.core.project.library import crop_devices, device_note, library_devices, rows_of_device
from cellsearch_gui.core.types import FeatureSet
from tests.conftest import colour_class_folders


def _features(paths, labels, x) -> FeatureSet:
    return FeatureSet(list(paths), list(labels), x, ["m"], [x.shape[1]], False, {"m": "f"})


def _two_device_library(root, per_class: int = 4):
    """A library of red/blue crops in which the first two cells of each class come from 'scope-b'."""
    lib = colour_class_folders(root, {"red": (200, 40, 40), "blue": (40, 40, 200)}, per_class, seed=0)
    cells = []
    for folder in sorted(p for p in lib.iterdir() if p.is_dir()):
        for n, crop in enumerate(sorted(folder.iterdir())):
            cells.append({"file": f"{folder.name}/{crop.name}", "class": folder.name,
                          "device": "scope-b" if n < 2 else "scope-a"})
    (lib / "library.json").write_text(json.dumps({"format": 1, "device": "scope-a", "cells": cells}))
    return lib, cells


def test_each_library_cell_keeps_its_device(tmp_path):
    lib, cells = _two_device_library(tmp_path / "lib")
    paths = [lib / c["file"] for c in cells]
    assert crop_devices(paths) == [c["device"] for c in cells]
    assert rows_of_device(paths, "scope-b") == [i for i, c in enumerate(cells) if c["device"] == "scope-b"]
    assert rows_of_device(paths, "") == [] and rows_of_device(paths, "elsewhere") == []
    plain = colour_class_folders(tmp_path / "plain", {"red": (200, 40, 40)}, 2, seed=1)
    assert library_devices([lib, plain]) == ["plain", "scope-a", "scope-b"]  # no library.json: the folder name
    assert "no library cell comes from device 'x'" in device_note(paths, "x", [])
    assert device_note(paths, "scope-b", [0, 1]).startswith("2 library cells come from device 'scope-b'")


def test_the_window_run_counts_library_cells_of_the_query_device_as_labelled_there(tmp_path):
    lib, cells = _two_device_library(tmp_path / "lib")
    ref = _features([lib / c["file"] for c in cells], [c["class"] for c in cells],
                    np.zeros((len(cells), 2), np.float32))
    labelled_here = {str(ref.paths[-1])}
    assert device_rows(ref, labelled_here) == [len(cells) - 1]
    expected = sorted({i for i, c in enumerate(cells) if c["device"] == "scope-b"} | {len(cells) - 1})
    assert device_rows(ref, labelled_here, "scope-b") == expected
    assert AnalysisSettings().query_device == ""  # the default: a new device
    with pytest.raises(ValueError):
        AnalysisSettings(query_device=3)


def _swapped_device():
    """Library of a, b at (0,0) and (3,0); on device 'b-scope' the classes sit the other way round, and the
    library already holds 6 cells of that device."""
    rng = np.random.default_rng(4)
    ref = np.concatenate([rng.normal((0, 0), 0.3, (60, 2)), rng.normal((3, 0), 0.3, (60, 2)),
                          rng.normal((3, 0), 0.3, (3, 2)), rng.normal((0, 0), 0.3, (3, 2))]).astype(np.float32)
    labels = ["a"] * 60 + ["b"] * 60 + ["a"] * 3 + ["b"] * 3
    query = np.concatenate([rng.normal((3, 0), 0.3, (10, 2)), rng.normal((0, 0), 0.3, (10, 2))]).astype(np.float32)
    return (_features([f"c{i}.png" for i in range(len(labels))], labels, ref),
            _features([f"q{i}.png" for i in range(20)], ["a"] * 10 + ["b"] * 10, query))


def test_library_cells_of_the_query_device_change_predictions_as_the_device_vote_says():
    ref, query = _swapped_device()
    params = EWCParams(k_min=3, k_max=64, stopping="lowest_entropy")
    known = list(range(120, 126))
    as_device = score_zero_shot(ref, query, params, known, "loo_mix")
    as_new = score_zero_shot(ref, query, params, [], "loo_mix")
    assert as_new["balanced_accuracy"] < 0.2  # the library alone is wrong on this device
    assert as_device["balanced_accuracy"] == 1.0  # its own 6 cells outvote it, by leave-one-out choice
    clf = DeviceAwareClassifier(params, "loo_mix").fit(ref.features, ref.labels, known)
    assert clf.fit_record.alpha < 1.0 and clf.predict(query.features).labels == query.labels


def test_evaluate_query_device_records_which_library_cells_voted_as_the_device(tmp_path):
    lib, _ = _two_device_library(tmp_path / "lib", per_class=5)
    query = colour_class_folders(tmp_path / "query", {"red": (190, 50, 40), "blue": (40, 50, 190)}, 3, seed=2)
    out = tmp_path / "r.json"
    common = ["evaluate", "--reference", str(lib), "--query", str(query), "--models", "mobilenetv2",
              "--random-init", "--no-cache", "--quiet", "--json", str(out)]
    assert main([*common, "--query-device", "scope-b"]) == 0
    data = json.loads(out.read_text())
    assert any(n.startswith("4 library cells come from device 'scope-b'") for n in data["notes"])
    assert data["n_query"] == 6 and data["calibration"]["n_device"] == 4
    assert main([*common, "--query-device", "nowhere"]) == 0
    assert any("no library cell comes from device 'nowhere'" in n for n in json.loads(out.read_text())["notes"])


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")
def test_evaluate_query_device_on_ray_gives_the_local_numbers(tmp_path):
    """The crops are embedded on Ray workers; the device's library cells are found by path on the driver."""
    lib, _ = _two_device_library(tmp_path / "lib", per_class=5)
    query = colour_class_folders(tmp_path / "query", {"red": (190, 50, 40), "blue": (40, 50, 190)}, 3, seed=2)
    common = ["evaluate", "--reference", str(lib), "--query", str(query), "--models", "mobilenetv2",
              "--random-init", "--no-cache", "--quiet", "--query-device", "scope-b"]
    try:
        assert main([*common, "--engine", "ray", "--ray-workers", "1", "--work-dir", str(tmp_path / "w"),
                     "--json", str(tmp_path / "ray.json")]) == 0
    finally:
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True,
                       timeout=120)
    assert main([*common, "--json", str(tmp_path / "local.json")]) == 0
    on_ray, local = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("ray", "local"))
    assert on_ray["calibration"]["n_device"] == local["calibration"]["n_device"] == 4
    assert any(n.startswith("4 library cells come from device 'scope-b'") for n in on_ray["notes"])
    for key in ("balanced_accuracy", "macro_precision", "confusion", "n_query", "calibration"):
        assert on_ray[key] == local[key], key


def test_the_window_lists_the_libraries_devices_and_saves_the_choice(window, tmp_path):
    lib, _ = _two_device_library(tmp_path / "lib")
    window.controller.add_reference(lib)
    panel = window.model_panel
    assert [panel.query_device.itemText(i) for i in range(panel.query_device.count())] == ["", "scope-a", "scope-b"]
    panel.query_device.setCurrentText("scope-b")
    assert window.controller.workspace.settings.query_device == "scope-b"
