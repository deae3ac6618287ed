"""One cell record keyed by its id: cells.csv round trip, ids carried by features and saved runs, joins by id,
and the crop recipe behind every cache fingerprint."""

import csv

import numpy as np
import pytest
from zoo_helpers import crops, tiny_registry  # noqa: F401 - fixture

from cellsearch_gui.core.app.run import cells_of
from cellsearch_gui.core.crops.prepare import CropPrep, preset
from cellsearch_gui.core.crops.records import CSV_COLUMNS, cell_from_row, csv_row
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedOptions, embed_crops
from cellsearch_gui.core.embedding.recipe import CropRecipe
from cellsearch_gui.core.embedding.runner import ModelRunner
from cellsearch_gui.core.io.dataset import CropSet
from cellsearch_gui.core.jobs import run_job
from cellsearch_gui.core.models.registry import get_spec
from cellsearch_gui.core.project.arrays import load_run_arrays, save_run_arrays
from cellsearch_gui.core.types import Cell, FeatureSet, crop_cell_id


def _segmented_cell() -> Cell:
    return Cell("f_y000010_x000020", "crops/f_y000010_x000020.png", "/data/f.tif", (15, 5, 25, 15), (20.0, 10.5),
                80, "10x10:3,4", tile=2, area_um2=None, pixel_size_um=None, pixel_size_source="unknown",
                scale=0.5, segmenter="classical", score=0.9)


def test_cells_csv_round_trip(tmp_path):
    cell = _segmented_cell()
    path = tmp_path / "cells.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerow(csv_row(cell))
    with open(path, newline="", encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    assert list(row) == CSV_COLUMNS
    back = cell_from_row(row, tmp_path / cell.crop_path)
    assert back == Cell(**{**cell.as_dict(), "crop_path": str(tmp_path / cell.crop_path)})


def _crop_set(tmp_path, ids=None) -> CropSet:
    from PIL import Image

    paths = []
    for i, image in enumerate(crops(4, seed=2)):
        paths.append(tmp_path / f"c{i}.png")
        Image.fromarray(image).save(paths[-1])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    paths.insert(1, tmp_path / "broken.png")
    return CropSet(paths, [None] * len(paths), cell_ids=ids)


def test_features_carry_the_cell_ids_of_the_crops_kept(tiny_registry, tmp_path):
    options = EmbedOptions(weights="random", batch_size=2)
    given = _crop_set(tmp_path, ids=[f"cell{i}" for i in range(5)])
    features = run_job(embed_crops(given, ["convnext_base"], EmbeddingCache(None), options))
    assert features.cell_ids == ["cell0", "cell2", "cell3", "cell4"]  # the broken crop is left out
    by_file = run_job(embed_crops(CropSet(given.paths, given.labels), ["convnext_base"], EmbeddingCache(None),
                                  options))
    assert by_file.cell_ids == [crop_cell_id(p) for p in by_file.paths]
    assert np.array_equal(by_file.features, features.features)
    assert given.subset([4, 0]).ids() == ["cell4", "cell0"]


def test_rows_join_their_cells_by_id_and_old_runs_by_path():
    cells = [Cell("a", "a.png", "a.png"), Cell("b", "b.png", "b.png")]
    features = FeatureSet(["b.png", "a.png"], [None, None], np.zeros((2, 1), np.float32), ["m"], [1], False, {},
                          cell_ids=["b", "a"])
    assert [c.cell_id for c in cells_of(features, cells)] == ["b", "a"]
    features.cell_ids = []  # a run saved before feature sets kept ids
    assert [c.cell_id for c in cells_of(features, cells)] == ["b", "a"]
    features.cell_ids = ["b", "gone"]
    assert cells_of(features, cells) is None


def test_saved_runs_keep_the_cell_ids(tmp_path):
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    sets = [FeatureSet([f"{i}.png" for i in range(3)], ["a", "b", "a"], x, ["m"], [2], False, {"m": "fp"},
                       per_model={"m": x}, cell_ids=[f"{kind}{i}" for i in range(3)]) for kind in ("r", "q")]
    save_run_arrays(tmp_path, 1, *sets)
    ref, query = load_run_arrays(tmp_path, 1)
    assert ref.cell_ids == ["r0", "r1", "r2"] and query.cell_ids == ["q0", "q1", "q2"]


def test_the_recipe_keeps_the_fingerprints_of_existing_caches():
    runner = ModelRunner("mobilenetv2", weights="random", device="cpu", prep=preset("cell"), views=4,
                         precision="bf16")
    assert runner.recipe == CropRecipe.for_model(get_spec("mobilenetv2"), preset("cell"))
    assert runner.fingerprint == ("mobilenetv2|random-seed0|224|resize-square-v1|" + preset("cell").tag()
                                  + "|views=4|bf16")
    raw = ModelRunner("mobilenetv2", weights="random", device="cpu", precision="fp32")
    assert raw.fingerprint == "mobilenetv2|random-seed0|224|resize-square-v1|raw"


@pytest.mark.parametrize("side", [40, 400])
def test_the_recipe_resizes_and_normalises_as_the_model_expects(side):
    spec = get_spec("mobilenetv2")
    recipe = CropRecipe.for_model(spec, CropPrep())
    image = np.random.default_rng(1).integers(0, 255, (side, side, 3), np.uint8)
    resized = recipe.resize(image)
    assert resized.shape == (224, 224, 3) and resized.dtype == np.uint8
    x = recipe.model_input(image)
    expected = (resized.astype(np.float32) / 255 - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    assert np.array_equal(x, expected.transpose(2, 0, 1))
