"""Issue 16, findings 1, 6 (entropy as text, cell-id collisions) and 8: files written from data stay inside
their folder, never overwrite one another, and CSVs neutralise formulas without turning numbers into text."""

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import file_snapshot, write_crop
from PIL import Image
from test_segmentation import RADIUS, disks_image

from cellsearch_gui.core.app.segment import segment_images
from cellsearch_gui.core.classify.ewc import Predictions
from cellsearch_gui.core.export import write_cells_csv, write_predictions_csv
from cellsearch_gui.core.jobs import run_job
from cellsearch_gui.core.project.library import export_library
from cellsearch_gui.core.segmentation.settings import SegmentSettings
from cellsearch_gui.core.types import Cell, FeatureSet


@pytest.mark.timeout(60)
def test_export_with_crops_writes_nothing_outside_its_folder(tmp_path):
    """Finding 1: a cell id or label that is a path (absolute, ``..``) must not steer the crop copy."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    crop = write_crop(tmp_path / "in" / "a.png")
    cells = [Cell(str(tmp_path / "victim"), str(crop), "x"), Cell("../../escaped", str(crop), "x"),
             Cell("ok", str(crop), "x")]
    rows = [(cells[0], "lab", 0.0, 1, None), (cells[1], "lab", 0.0, 1, None), (cells[2], "x", 0.0, 1, "../..")]
    out = tmp_path / "export" / "deep" / "cells.csv"
    assert write_cells_csv(out, rows, {}, with_crops=True) == 3
    assert victim.read_text() == "keep me" and not (tmp_path / "victim.png").exists()
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path / "export" / "escaped.png").exists()
    written = [Path(r["crop_path"]) for r in csv.DictReader(open(out, encoding="utf-8"))]
    crop_dir = (out.parent / "cells_crops").resolve()
    assert len(set(written)) == 3
    assert all(p.resolve().is_relative_to(crop_dir) and p.is_file() for p in written)


@pytest.mark.timeout(60)
def test_export_library_labels_cannot_leave_the_library(tmp_path):
    """Finding 1: ``project label`` accepts any text as a label; export-library files it inside DIR."""
    crop = write_crop(tmp_path / "in" / "a.png")
    labels = {"c1": "../..", "c2": "/abs/path", "c3": "..", "c4": "fine"}
    cells = [Cell(uid, str(crop), str(crop)) for uid in labels]
    workspace = SimpleNamespace(reference_dirs=[], store=None, cells=cells, user_labels=labels,
                                settings=SimpleNamespace(reference_pixel_size_um=None))
    out = tmp_path / "lib" / "out"
    before = file_snapshot(tmp_path / "in")
    info = export_library(workspace, out)
    assert sum(info["classes"].values()) == 4
    assert file_snapshot(tmp_path / "in") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "lib"]
    assert sorted(p.name for p in (tmp_path / "lib").iterdir()) == ["out"]
    files = [p for p in out.rglob("*") if p.is_file() and p.name != "library.json"]
    assert len(files) == 4 and all(p.resolve().is_relative_to(out.resolve()) for p in files)


def _predictions(entropy: list[float]) -> tuple[FeatureSet, Predictions, FeatureSet]:
    n = len(entropy)
    features = FeatureSet([Path(f"q{i}.png") for i in range(n)], [None] * n, np.zeros((n, 2), np.float32),
                          ["m"], [2], False, {})
    preds = Predictions(["a"] * n, np.ones(n, int), np.array(entropy), np.ones((n, 1)), ["a"],
                        np.zeros((n, 1), int), np.zeros((n, 1)))
    return features, preds, features


@pytest.mark.timeout(60)
def test_classify_out_keeps_negative_zero_entropy_a_number(tmp_path):
    """Finding 6, entropy as text: ``-0.0`` was written as the text ``'-0.0000``."""
    query, preds, ref = _predictions([-0.0, 0.5, -1e-9])
    write_predictions_csv(tmp_path / "p.csv", query, preds, ref)
    rows = list(csv.DictReader(open(tmp_path / "p.csv", encoding="utf-8")))
    assert [float(r["entropy"]) for r in rows] == [0.0, 0.5, 0.0]
    assert all(float(r["score_a"]) == 1.0 for r in rows)


@pytest.mark.timeout(120)
def test_same_named_fields_in_same_named_folders_keep_every_cell(tmp_path):
    """Finding 6, cell-id collisions: a/x/field.png and b/x/field.png gave the same ids; one crop was lost."""
    centres = [(100, 100), (100, 300), (300, 200)]
    for top in ("a", "b"):
        (tmp_path / top / "x").mkdir(parents=True)
        Image.fromarray(disks_image(400, centres)).save(tmp_path / top / "x" / "field.png")
    settings = SegmentSettings(cell_diameter_px=2 * RADIUS, tile_size=4096)
    out = tmp_path / "out"
    summary = run_job(segment_images([tmp_path / "a", tmp_path / "b"], out, settings))
    rows = list(csv.DictReader(open(out / "cells.csv", encoding="utf-8")))
    assert summary.cells == len(rows) == 6
    assert len({r["cell_id"] for r in rows}) == 6
    assert len({r["crop_path"] for r in rows}) == 6
    assert len(list((out / "crops").iterdir())) == 6


@pytest.mark.timeout(120)
def test_segment_cells_csv_neutralises_formulas(tmp_path, monkeypatch):
    """Finding 8: a source image named like a formula reached cells.csv as a live formula."""
    monkeypatch.chdir(tmp_path)
    name = '=HYPERLINK("x",1).png'
    Image.fromarray(disks_image(400, [(200, 200)])).save(tmp_path / name)
    run_job(segment_images([Path(name)], tmp_path / "out", SegmentSettings(cell_diameter_px=2 * RADIUS)))
    with open(tmp_path / "out" / "cells.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == 2
    assert not any(value[:1] in ("=", "+", "-", "@") for row in rows for value in row)
    assert rows[1][rows[0].index("source_image")] == "'" + name


@pytest.mark.timeout(120)
def test_project_export_and_export_library_from_the_cli_stay_inside(tmp_path):
    """Finding 1 end to end: hostile cell ids (from a query cells.csv) and labels (``project label``)."""
    from cellsearch_gui.cli import main
    from cellsearch_gui.core.app.session import Workspace

    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "victim.png").write_bytes(b"keep")
    crop = write_crop(tmp_path / "in" / "a.png")
    ids = [str(sentinel / "victim"), "../../sentinel/victim", "../victim", "plain"]
    ws = Workspace()
    ws.save(tmp_path / "p")
    ws.store.put_cells([Cell(uid, str(crop), str(crop)) for uid in ids])
    run = ws.store.start_run("classify", {})
    ws.store.finish_run(run, "finished", {}, predictions=[(uid, "..", 0.0, 1) for uid in ids])
    ws.close()
    (tmp_path / "labels.csv").write_text("cell_id,label\n" + "".join(
        f"{uid},{label}\n" for uid, label in zip(ids, ["../..", str(sentinel), "..", str(tmp_path / "abs")])))
    assert main(["project", "label", str(tmp_path / "p"), str(tmp_path / "labels.csv")]) == 0
    out = tmp_path / "out"
    assert main(["project", "export", str(tmp_path / "p"), str(out / "cells.csv"), "--with-crops"]) == 0
    assert main(["project", "export-library", str(tmp_path / "p"), str(out / "library")]) == 0
    assert file_snapshot(sentinel) == {"victim.png": b"keep"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "labels.csv", "out", "p", "sentinel"]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert len(written) == 1 + 4 + 4 + 1  # cells.csv, 4 crops, 4 library files, library.json
    assert all(p.resolve().is_relative_to(out.resolve()) for p in written)
