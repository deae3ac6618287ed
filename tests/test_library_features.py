"""Issue 17, a fast first run: a library carries its features (DIR/_features, keyed by model fingerprint), so
loading it embeds nothing when the fingerprint matches and embeds, with a note, when it does not; each cell
in library.json carries its device; `cellsearch library embed` and `library demo` make them."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
from conftest import BCCD_WBC, PBC, colour_class_folders, needs_shared

from cellsearch_gui.cli import main
from cellsearch_gui.core.app.run import AnalysisSettings, embed_options
from cellsearch_gui.core.app.session import Workspace
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedOptions, embed_crops
from cellsearch_gui.core.embedding.library_features import FEATURES_DIR, feature_files
from cellsearch_gui.core.embedding.runner import ModelRunner
from cellsearch_gui.core.io.dataset import load_reference, scan_class_folders
from cellsearch_gui.core.jobs import run_job
from cellsearch_gui.core.project.library import cell_devices, embed_library, export_library, read_library_info

RANDOM = EmbedOptions(weights="random", device="cpu")
CLASSES = {"red": (200, 40, 40), "blue": (40, 40, 200)}


@pytest.fixture
def library(tmp_path):
    return colour_class_folders(tmp_path / "lib", CLASSES, per_class=4, seed=3)


@pytest.fixture
def count_loads(monkeypatch):
    """How many times a model was built (nothing embedded: zero)."""
    loads = []
    real_load = ModelRunner.load

    def load(self):
        loads.append(self.spec.id)
        return real_load(self)

    monkeypatch.setattr(ModelRunner, "load", load)
    return loads


def embed(folder, options=RANDOM, models=("mobilenetv2",)):
    return run_job(embed_crops(load_reference([folder]), list(models), EmbeddingCache(None), options))


def test_a_library_with_its_features_embeds_nothing(library, count_loads):
    info = run_job(embed_library(library, ["mobilenetv2"], RANDOM, EmbeddingCache(None)))
    assert count_loads == ["mobilenetv2"]
    files = feature_files(library)
    assert [f.parent.name for f in files] == [FEATURES_DIR] and len(files) == 1
    assert info["features"][0]["model"] == "mobilenetv2" and info["features"][0]["cells"] == 8
    assert read_library_info(library)["features"] == info["features"]
    assert scan_class_folders(library).classes == ["blue", "red"]  # _features is not a class

    count_loads.clear()
    loaded = embed(library)  # a fresh, empty cache: only the library's own files
    assert count_loads == [] and loaded.notes == []
    count_loads.clear()
    computed = run_job(embed_crops(load_reference([library]), ["mobilenetv2"], EmbeddingCache(None), RANDOM))
    assert np.array_equal(loaded.features, computed.features) and loaded.paths == computed.paths


def test_another_fingerprint_embeds_with_a_note(library, count_loads):
    run_job(embed_library(library, ["mobilenetv2"], RANDOM, EmbeddingCache(None)))
    count_loads.clear()
    other = dataclasses.replace(RANDOM, seed=1)  # other weights: another fingerprint
    result = embed(library, other)
    assert count_loads == ["mobilenetv2"]
    assert len(result.notes) == 1 and "mobilenetv2" in result.notes[0] and "embedded now" in result.notes[0]
    count_loads.clear()
    embed(library, RANDOM, models=("mobilenetv2", "efficientnet_lite0"))  # a model the library lacks
    assert count_loads == ["efficientnet_lite0"]


def test_a_cell_added_after_embedding_is_the_only_one_embedded(library, monkeypatch):
    run_job(embed_library(library, ["mobilenetv2"], RANDOM, EmbeddingCache(None)))
    shutil.copy(library / "red" / "0.png", library / "red" / "extra.png")  # same content: nothing to embed
    colour_class_folders(library / "new", {"green": (40, 200, 40)}, per_class=1, seed=5)
    shutil.move(library / "new" / "green", library / "green")
    (library / "new").rmdir()
    embedded = []
    real_collect = ModelRunner.collect
    monkeypatch.setattr(ModelRunner, "collect", staticmethod(lambda launched: embedded.append(
        len(rows := real_collect(launched))) or rows))
    result = embed(library)
    assert sum(embedded) == 1 and len(result.paths) == 10
    info = run_job(embed_library(library, ["mobilenetv2"], RANDOM, EmbeddingCache(None)))
    assert len(info["cells"]) == 10 and info["features"][0]["cells"] == 10  # library.json follows the folder


def test_a_damaged_feature_file_is_a_note_and_the_cells_are_embedded(library, count_loads):
    run_job(embed_library(library, ["mobilenetv2"], RANDOM, EmbeddingCache(None)))
    feature_files(library)[0].write_bytes(b"not a zip")
    count_loads.clear()
    result = embed(library)
    assert count_loads == ["mobilenetv2"] and len(result.paths) == 8


def test_embed_library_uses_the_settings_of_a_run(library, count_loads):
    """The CLI's `library embed` stores what the window's analysis (embed_options) looks up."""
    assert main(["library", "embed", str(library), "--models", "mobilenetv2", "--random-init", "--device", "cpu",
                 "--quiet"]) == 0
    count_loads.clear()
    settings = AnalysisSettings(models=["mobilenetv2"], weights="random")
    embed(library, embed_options(settings, "cpu"))
    assert count_loads == []


def test_library_json_gives_each_cell_its_device(tmp_path):
    scope_a = colour_class_folders(tmp_path / "scope_a", CLASSES, per_class=2, seed=1)
    (scope_a / "library.json").write_text(json.dumps({"format": 1, "device": "scope A"}))
    plain = colour_class_folders(tmp_path / "plain", CLASSES, per_class=1, seed=2)
    workspace = Workspace()
    workspace.reference_dirs = [str(scope_a), str(plain)]
    info = export_library(workspace, tmp_path / "out")
    devices = [cell["device"] for cell in info["cells"]]
    assert devices == ["scope A"] * 4 + ["plain"] * 2
    assert all((tmp_path / "out" / cell["file"]).is_file() for cell in info["cells"])
    assert cell_devices(tmp_path / "out")[info["cells"][0]["file"]] == "scope A"
    assert cell_devices(plain)[""] == "plain"  # a plain folder: its name
    named = export_library(workspace, tmp_path / "named", device="scope B")
    assert [c["device"] for c in named["cells"]] == ["scope A"] * 4 + ["scope B"] * 2


@needs_shared
def test_the_demo_library_loads_without_embedding(tmp_path, real_weights, count_loads):
    """`library demo` builds a PBC white-cell library with its features; a run with the window's settings
    then embeds none of the library's cells."""
    assert main(["library", "demo", str(tmp_path / "demo"), "--per-class", "2", "--fields", "1", "--device", "cpu",
                 "--quiet", "--data", str(PBC.parent)]) == 0
    library = tmp_path / "demo" / "pbc_library"
    info = read_library_info(library)
    assert {f["model"] for f in info["features"]} == {"mobilenetv2", "efficientnet_lite0"}
    assert {c["device"] for c in info["cells"]} == {info["device"]} and info["device"]
    assert len(list((tmp_path / "demo" / "bccd_fields").iterdir())) == 1
    count_loads.clear()
    settings = AnalysisSettings()
    options = embed_options(settings, "cpu")
    features = run_job(embed_crops(load_reference([library]), settings.models, EmbeddingCache(None), options))
    assert count_loads == [] and len(features.paths) == 10
    assert BCCD_WBC.is_dir()  # the fields came from the sample data beside it


def test_the_window_run_takes_the_library_features(library, tmp_path, count_loads, capsys):
    """The window's Run (pipeline_job over a Workspace) embeds only the query cells when the library carries
    features made with its settings, and says so when they were made with other ones."""
    from cellsearch_gui.core.app.run import pipeline_job

    queries = colour_class_folders(tmp_path / "queries", CLASSES, per_class=2, seed=9)
    settings = AnalysisSettings(models=["mobilenetv2"], weights="random")
    options = dataclasses.replace(embed_options(settings, "cpu"), prep=dataclasses.replace(
        embed_options(settings, "cpu").prep, pixel_size_um=settings.reference_pixel_size_um))
    run_job(embed_library(library, ["mobilenetv2"], options, EmbeddingCache(None)))
    workspace = Workspace()
    workspace.settings = settings
    workspace.reference_dirs = [str(library)]
    workspace.query_paths = [str(p) for p in sorted(queries.rglob("*.png"))]
    embedded = []
    real_collect = ModelRunner.collect
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ModelRunner, "collect", staticmethod(lambda launched: embedded.append(
            len(rows := real_collect(launched))) or rows))
        result = run_job(pipeline_job(workspace.plan("cpu")))
    assert sum(embedded) == 4 and len(result.reference.paths) == 8 and result.notes == []

    note = "stored mobilenetv2 features were made with other weights or another crop preparation"
    assert main(["classify", "--reference", str(library), "--query", str(queries), "--models", "mobilenetv2",
                 "--random-init", "--device", "cpu", "--out", str(tmp_path / "p.csv"), "--quiet"]) == 0
    assert note not in capsys.readouterr().err  # the CLI's defaults are the window's (issue 15)
    assert main(["classify", "--reference", str(library), "--query", str(queries), "--models", "mobilenetv2",
                 "--random-init", "--device", "cpu", "--prep", "raw", "--out", str(tmp_path / "p.csv"),
                 "--quiet"]) == 0
    assert note in capsys.readouterr().err


def test_raw_features_serve_any_part_of_the_library(library, count_loads):
    """Without device colour the fingerprint does not depend on which crops are embedded, so a held-out
    split (`evaluate --split`) takes both of its parts from the library's features."""
    run_job(embed_library(library, ["mobilenetv2"], RANDOM, EmbeddingCache(None)))  # CropPrep(): preset raw
    count_loads.clear()
    part = load_reference([library]).subset([0, 3, 5])
    features = run_job(embed_crops(part, ["mobilenetv2"], EmbeddingCache(None), RANDOM))
    assert count_loads == [] and len(features.paths) == 3
