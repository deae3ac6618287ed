"""The app's Qt-free analysis flow: dropped fields -> segmented cells -> predictions -> labels -> export."""

import csv
import shutil

import numpy as np
import pytest

from cellsearch_gui.core.classify.review import typicality
from conftest import PBC, SHARED, WBC5, make_subset, needs_shared

from cellsearch_gui.core.app import run
from cellsearch_gui.core.app.inputs import sort_inputs
from cellsearch_gui.core.app.run import pca_2d, pipeline_job
from cellsearch_gui.core.app.session import Workspace, sample_per_class
from cellsearch_gui.core.export import EXPORT_COLUMNS, export_cells_csv
from cellsearch_gui.core.jobs import run_job

FOV = SHARED / "data" / "bccd_fov" / "JPEGImages"


@pytest.fixture
def small_project(tmp_path, real_weights):
    ref = make_subset(PBC, tmp_path / "ref", WBC5, 6)
    fields = tmp_path / "fields"
    fields.mkdir()
    for name in ("BloodImage_00001.jpg", "BloodImage_00003.jpg", "BloodImage_00005.jpg", "BloodImage_00008.jpg"):
        shutil.copy(FOV / name, fields / name)
    ws = Workspace(tmp_path / "project")
    ws.add_reference_dir(ref)
    ws.add_query_paths([fields])
    ws.settings.models = ["mobilenetv2"]
    ws.settings.preprocessing = "cell"
    return ws


@needs_shared
def test_fields_are_segmented_and_classified_then_labels_grow_the_index(small_project, tmp_path):
    ws = small_project
    ws.save()  # a project store: the run, cells, predictions and labels are recorded
    progress = []
    result = run_job(pipeline_job(ws.plan("cpu")), progress.append)
    ws.apply(result)
    assert {p.stage for p in progress} >= {"segmenting", "embedding", "classifying"}
    assert len(ws.cells) >= 2
    assert all(c.bbox and c.source_image.endswith(".jpg") for c in ws.cells)
    assert result.predictions.labels[0] in WBC5
    queue = ws.review_queue()
    teaching = result.predictions.ambiguity * typicality(result.query.features)  # classify.review
    assert sorted(queue) == list(range(len(ws.cells))) and teaching[queue[0]] == teaching.max()

    n_ref = len(result.reference.labels)
    ws.set_label(queue[0], "monocyte")
    assert ws.device_curve() == []  # one labelled cell: nothing to leave out
    ws.set_label(queue[1], "lymphocyte")
    curve = ws.device_curve()
    assert [p["n_labelled"] for p in curve] == [2] and 0 <= curve[0]["library"] <= 1
    ws.set_label(queue[1], "")
    assert ws.add_to_reference([queue[0]]) == 1
    assert len(result.reference.labels) == n_ref + 1
    assert result.classifier.index.size == n_ref + 1
    # the added cell's nearest reference is now itself, at distance 0
    assert ws.neighbours(queue[0])[0].reference_index == n_ref
    assert ws.neighbours(queue[0])[0].distance == pytest.approx(0, abs=1e-4)
    assert queue[0] not in ws.review_queue()

    out = tmp_path / "export" / "cells.csv"
    assert export_cells_csv(ws, out, with_crops=True) == len(ws.cells)
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert list(rows[0]) == EXPORT_COLUMNS
    assert all(0.0 <= float(r["confidence"]) <= 1.0 for r in rows)  # calibrated, kept with every call
    labelled = [r for r in rows if r["user_label"]]
    assert len(labelled) == 1 and labelled[0]["user_label"] == "monocyte"
    assert (out.parent / "cells_crops" / "monocyte").is_dir()

    ws.save()
    with pytest.raises(Exception, match="in use by the CellSearch window"):
        Workspace.open(ws.folder)  # the project lock
    store = ws.store
    run = store.last_finished_run()
    stored = store.predictions(run["id"])
    assert set(store.confidences(run["id"])) == set(stored)  # the project keeps each call's confidence
    assert len(stored) == len(ws.cells)
    assert stored[ws.cells[0].cell_id][0] == result.predictions.labels[0]
    assert run["provenance"]["model_fingerprints"]["mobilenetv2"].startswith("mobilenetv2|b03531")
    assert [h[0] for h in store.label_history(ws.cells[queue[0]].cell_id)] == ["monocyte"]
    ws.close()
    again = Workspace.open(ws.folder)
    assert again.user_labels == ws.user_labels and again.settings == ws.settings
    assert again.query_paths == ws.query_paths and again.reference_dirs == ws.reference_dirs
    assert again.extra_references() == ((ws.cells[queue[0]].crop_path, "monocyte"),)  # part of the next run
    assert again.restore()  # the last run from the project's own memory-mapped arrays, no image read
    assert [c.cell_id for c in again.cells] == [c.cell_id for c in ws.cells]
    assert np.allclose(again.result.query.features, ws.result.query.features)
    assert again.result.predictions.labels == ws.result.predictions.labels
    assert again.result.notes[-1] == "no saved index"  # built, then saved beside the arrays
    assert again.restore() and again.result.notes[-1] == "index read from the project"
    index_file = next((ws.folder / "features").glob("run-*/index.faiss"))
    index_file.write_bytes(index_file.read_bytes()[:100])  # a truncated index file
    assert again.restore() and again.result.notes[-1].startswith("saved index damaged")
    assert again.result.predictions.labels == ws.result.predictions.labels
    again.close()


def test_dropped_items_are_sorted_into_fields_and_crops(tmp_path):
    from PIL import Image

    Image.new("RGB", (640, 480)).save(tmp_path / "field.png")
    Image.new("RGB", (100, 100)).save(tmp_path / "crop.png")
    fields, crops, notes = sort_inputs([tmp_path / "field.png", tmp_path / "crop.png", tmp_path / "nothing"])
    assert [f.name for f in fields] == ["field.png"]
    assert [c.crop_path for c in crops] == [str(tmp_path / "crop.png")]
    assert any("nothing" in n for n in notes)


def test_pca_axes_are_orthonormal_and_sign_stable(rng):
    x = rng.normal(size=(50, 8)) * np.arange(1, 9)
    mean, axes = pca_2d(x.astype(np.float32))
    assert np.allclose(axes @ axes.T, np.eye(2), atol=1e-5)
    _, axes_flipped = pca_2d(-x.astype(np.float32))
    assert np.allclose(np.abs(axes), np.abs(axes_flipped), atol=1e-4)


def test_pca_of_a_large_library_matches_the_exact_axes(rng):

    centres = rng.normal(size=(6, 300)) * 4
    x = (centres[rng.integers(0, 6, 30_000)] + rng.normal(size=(30_000, 300))).astype(np.float32)
    mean, axes = pca_2d(x)  # a 20,000-row sample, randomized SVD
    exact = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)[2][:2]
    assert len(x) > run.PCA_PLOT_SAMPLE and min(x.shape) > 256
    assert np.allclose(np.abs(np.sum(axes * exact, axis=1)), 1, atol=1e-3)
    assert np.allclose(mean, x.mean(axis=0), atol=1e-4)


def test_plot_sample_keeps_every_class():
    labels = ["common"] * 99_000 + ["rare"] * 50 + ["middle"] * 950
    rows = sample_per_class(labels, 10_000)
    picked = [labels[i] for i in rows]
    assert 9_900 <= len(rows) <= 10_100 and len(set(rows.tolist())) == len(rows)
    assert picked.count("rare") == 50 and picked.count("middle") == 100 and (np.diff(rows) > 0).all()
    assert (sample_per_class(labels[:500], 10_000) == np.arange(500)).all()
