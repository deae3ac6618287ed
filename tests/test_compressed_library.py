"""A library's compressed index (core/app/compressed_library.py, core/index/library_index.py): built once
from the library shard by shard, searched by the core's EWC, locally, through shards and on Ray; with
every candidate re-ranked it gives the exact classifier's predictions; a missing, damaged or mismatched
index is a message naming the file. The library is synthetic: tiny crops whose 1,280-d features are put
in the embedding cache beforehand, so no network runs."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from cellsearch_gui.cli import main
from cellsearch_gui.core.app.compressed_library import (
    build_compressed_job,
    compressed_classify_job,
    model_fingerprints,
)
from cellsearch_gui.core.app.confidence import with_confidence
from cellsearch_gui.core.app.experiments import classify_job, load_inputs
from cellsearch_gui.core.app.sharded import LocalShards
from cellsearch_gui.core.app.sharded_jobs import sharded_classify_job
from cellsearch_gui.core.classify.ewc import EWCParams
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedOptions
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.index.library_index import INDEX_FILE, LibraryIndexError
from cellsearch_gui.core.io.checksums import content_key
from cellsearch_gui.core.jobs import run_job

MODELS = ["mobilenetv2"]
OPTIONS = EmbedOptions(weights="random", device="cpu", batch_size=8)  # raw crops; fingerprints need no weights
PARAMS = EWCParams(k_max=32)
CLASSES = {"basophil": 60, "lymphocyte": 100, "neutrophil": 150}  # imbalanced: the class weights matter
BUILD = {"metric": "l2", "pca": 64, "pq_bytes": 16, "nlist": 2}


def _write_crops(root, counts: dict, rng, centres, dim_noise: float = 1.0):
    vectors = {}
    for number, (label, n) in enumerate(counts.items()):
        (root / label).mkdir(parents=True)
        for i in range(n):
            path = root / label / f"{label}_{i:04d}.png"
            Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(path)
            vectors[content_key(path)] = (centres[number] + dim_noise * rng.normal(size=1280)).astype(np.float32)
    return vectors


@pytest.fixture
def world(tmp_path):
    """A 310-cell library and 45 labelled queries whose features wait in the embedding cache."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(len(CLASSES), 1280)) * 0.12
    vectors = _write_crops(tmp_path / "lib", CLASSES, rng, centres)
    vectors |= _write_crops(tmp_path / "query", {c: 15 for c in CLASSES}, rng, centres)
    cache = EmbeddingCache(tmp_path / "cache")
    cache.put_many(model_fingerprints(MODELS, OPTIONS)["mobilenetv2"], vectors)
    yield tmp_path, cache
    cache.close()


def _inputs(root):
    return load_inputs(root / "lib", root / "query")


def _build(root, cache, **changes):
    return run_job(build_compressed_job(root / "lib", MODELS, cache, changes.pop("options", OPTIONS),
                                        **{**BUILD, **changes}, shard_size=128))


def test_reranking_every_candidate_gives_the_exact_predictions(world):
    root, cache = world
    meta = _build(root, cache)
    assert meta["n_cells"] == 310 and meta["nlist"] == 2 and len(meta["vector_shards"]) == 3
    exact_ref, _, exact, _ = run_job(classify_job(_inputs(root), MODELS, PARAMS, cache, OPTIONS))
    ref, query, preds, timings = run_job(compressed_classify_job(_inputs(root), root / "lib", MODELS, PARAMS,
                                                                 cache, OPTIONS, rerank=10))
    assert ref.paths == exact_ref.paths and ref.labels == exact_ref.labels  # ids map to the same cells
    assert preds.labels == exact.labels and preds.classes == exact.classes
    np.testing.assert_array_equal(preds.neighbour_ids, exact.neighbour_ids)
    np.testing.assert_array_equal(preds.k_used, exact.k_used)
    np.testing.assert_allclose(preds.scores, exact.scores)
    np.testing.assert_allclose(preds.distances, exact.distances, rtol=1e-4)
    assert preds.index_kind == "compressed+rerank10" and "index_open" in timings
    # the calibrated confidence: the library's cells left out one at a time, as for exact search
    exact_confidence, calibration = with_confidence(PARAMS, exact_ref, exact)
    same, own = with_confidence(PARAMS, ref, preds)
    assert own is preds.calibration and own.n_library == calibration.n_library == 310
    np.testing.assert_allclose(same.confidence, exact_confidence.confidence)


def test_the_codes_alone_agree_mostly_and_the_agreement_is_reported(world, capsys):
    root, cache = world
    _build(root, cache)
    exact = run_job(classify_job(_inputs(root), MODELS, PARAMS, cache, OPTIONS))[2]
    codes = run_job(compressed_classify_job(_inputs(root), root / "lib", MODELS, PARAMS, cache, OPTIONS, 0))[2]
    agreement = float(np.mean(np.array(codes.labels) == np.array(exact.labels)))
    with capsys.disabled():
        print(f"\ncompressed codes only vs exact: EWC agreement {agreement:.3f} on {len(exact.labels)} queries")
    assert codes.index_kind == "compressed" and agreement > 0.5  # measured, not required to be 1


def test_a_missing_damaged_or_mismatched_index_is_a_message_naming_it(world):
    root, cache = world
    job = lambda **kw: run_job(compressed_classify_job(_inputs(root), root / "lib", MODELS, PARAMS, cache,  # noqa: E731
                                                       kw.get("options", OPTIONS), 0))
    with pytest.raises(LibraryIndexError, match="has no compressed index for mobilenetv2.*library compress"):
        job()
    meta = _build(root, cache)
    per_model_l2 = EmbedOptions(weights="random", device="cpu", batch_size=8, per_model_l2=True)
    with pytest.raises(LibraryIndexError, match="holds compressed indexes for other settings: mobilenetv2"):
        job(options=per_model_l2)
    index_file = root / "lib" / "_index" / f"compressed-{meta['key']}" / INDEX_FILE
    good = index_file.read_bytes()
    index_file.write_bytes(good[: len(good) // 2])
    with pytest.raises(LibraryIndexError, match=f"{index_file}.*damaged"):
        job()
    index_file.write_bytes(good)
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(root / "lib" / "basophil" / "new.png")
    with pytest.raises(LibraryIndexError, match="another listing of .*311"):
        job()


def test_a_library_too_small_for_the_codebooks_is_refused(world):
    root, cache = world
    with pytest.raises(CellSearchError, match="at least 256"):
        run_job(build_compressed_job(root / "query", MODELS, cache, OPTIONS, **BUILD))


def test_through_shards_the_index_goes_to_the_workers_once(world):
    root, cache = world
    _build(root, cache)
    local = run_job(compressed_classify_job(_inputs(root), root / "lib", MODELS, PARAMS, cache, OPTIONS, 2))
    inputs = _inputs(root)
    sharded = run_job(sharded_classify_job(inputs, MODELS, PARAMS, OPTIONS, LocalShards(), root / "w", 16, None,
                                           cache, (root / "lib", 2)))
    assert sharded[2].labels == local[2].labels and sharded[1].paths == local[1].paths
    np.testing.assert_array_equal(sharded[2].neighbour_ids, local[2].neighbour_ids)
    assert sharded[3]["shards_run"] == 3 and sharded[3]["embeddings_computed"] == 0  # 45 queries, no library
    assert sharded[3]["embeddings_from_cache"] == 45


def test_the_cli_builds_the_index_and_classifies_against_it(world, capsys):
    root, _ = world
    common = ["--models", "mobilenetv2", "--random-init", "--prep", "raw", "--device", "cpu", "--cache-dir",
              str(root / "cache"), "--quiet"]
    assert main(["library", "compress", str(root / "lib"), *common, "--pca", "64", "--pq-bytes", "16",
                 "--nlist", "2"]) == 0
    assert "compressed index of 310 cells" in capsys.readouterr().out
    classify = ["classify", "--reference", str(root / "lib"), "--query", str(root / "query"), "--k-max", "32",
                *common]
    assert main([*classify, "--out", str(root / "exact.csv")]) == 0
    assert main([*classify, "--out", str(root / "compressed.csv"), "--index", "compressed", "--rerank", "10"]) == 0
    rows = [list(csv.DictReader(open(root / f"{name}.csv", encoding="utf-8"))) for name in ("exact", "compressed")]
    assert [r["predicted_label"] for r in rows[0]] == [r["predicted_label"] for r in rows[1]]
    assert [r["top_neighbours"].split(":")[0] for r in rows[0]] == [r["top_neighbours"].split(":")[0] for r in rows[1]]
    assert main([*classify, "--out", str(root / "x.csv"), "--rerank", "3"]) == 2
    assert "--rerank only applies with --index compressed" in capsys.readouterr().err
    evaluate = ["evaluate", *classify[1:5], "--k-max", "32", *common]
    assert main([*evaluate, "--json", str(root / "exact.json")]) == 0
    assert main([*evaluate, "--json", str(root / "compressed.json"), "--index", "compressed", "--rerank", "10"]) == 0
    scores = [json.loads((root / f"{name}.json").read_text()) for name in ("exact", "compressed")]
    assert scores[0]["confusion"] == scores[1]["confusion"] and scores[1]["index_kind"] == "compressed+rerank10"
    assert main([*evaluate, "--index", "compressed", "--shots", "2"]) == 2
    assert "--shots needs the library's fp32 features" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")
def test_on_ray_workers_classify_against_the_shipped_index(world):
    from cellsearch_gui.engine.ray_engine import RayShards
    from test_engine import _ray_stop

    root, cache = world
    _build(root, cache)
    local = run_job(compressed_classify_job(_inputs(root), root / "lib", MODELS, PARAMS, cache, OPTIONS, 2))
    try:
        with RayShards(workers=2) as engine:
            on_ray = run_job(sharded_classify_job(_inputs(root), MODELS, PARAMS, OPTIONS, engine, root / "w", 16,
                                                  None, cache, (root / "lib", 2)))
    finally:
        _ray_stop()
    assert on_ray[2].labels == local[2].labels
    np.testing.assert_array_equal(on_ray[2].neighbour_ids, local[2].neighbour_ids)
    assert on_ray[3]["embeddings_computed"] == 0


def _copy_library(root, name: str):
    import shutil

    shutil.copytree(root / "lib", root / name)
    return root / name


def test_an_engine_builds_the_index_this_process_builds(world):
    """library compress on an engine (here LocalShards, Ray's stand-in): the same vectors, classes and
    predictions as the build in this process; a re-run runs no shard."""
    from cellsearch_gui.core.index.library_index import LibraryIndex

    root, cache = world
    other = _copy_library(root, "lib_engine")
    here = _build(root, cache)
    there = run_job(build_compressed_job(other, MODELS, cache, OPTIONS, **BUILD, shard_size=128,
                                         engine=LocalShards()))
    assert there["vector_shards"] == here["vector_shards"] and there["label_ids"] == here["label_ids"]
    assert there["notes"] == ["3 shards embedded on the workers (0 crop-model embeddings computed, 310 found in "
                              "the embedding cache)"]
    ids = np.arange(310)
    np.testing.assert_array_equal(LibraryIndex.open(here["folder"]).vectors()(ids),
                                  LibraryIndex.open(there["folder"]).vectors()(ids))
    inputs = load_inputs(other, root / "query")
    a = run_job(compressed_classify_job(_inputs(root), root / "lib", MODELS, PARAMS, cache, OPTIONS, 0))[2]
    b = run_job(compressed_classify_job(inputs, other, MODELS, PARAMS, cache, OPTIONS, 0))[2]
    assert a.labels == b.labels
    np.testing.assert_array_equal(a.neighbour_ids, b.neighbour_ids)  # codes only: the same trained index
    again = run_job(build_compressed_job(other, MODELS, cache, OPTIONS, **BUILD, shard_size=128,
                                         engine=LocalShards()))
    assert again["notes"][0].startswith("0 of 3 shards embedded on the workers")


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")
def test_the_cli_compresses_a_library_on_ray_workers(world, capsys):
    from test_engine import _ray_stop

    root, _ = world
    common = ["--models", "mobilenetv2", "--random-init", "--prep", "raw", "--device", "cpu", "--cache-dir",
              str(root / "cache"), "--quiet", "--pca", "64", "--pq-bytes", "16", "--nlist", "2"]
    try:
        assert main(["library", "compress", str(root / "lib"), *common, "--engine", "ray", "--ray-workers", "2",
                     "--shard-size", "128"]) == 0
    finally:
        _ray_stop()
    out = capsys.readouterr().out
    assert "compressed index of 310 cells" in out and "310 found in the embedding cache" in out
    assert main(["library", "compress", str(root / "lib"), *common, "--ray-workers", "2"]) == 2
    assert "--ray-workers only apply with --engine ray" in capsys.readouterr().err
