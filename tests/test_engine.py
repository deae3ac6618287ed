"""The shard path (core/app/sharded*.py, core/io/shards.py) and the Ray engine (cellsearch_gui/engine): the same
predictions and cells as the local jobs, resume, damaged shards, bad addresses, Ray missing, and a real
two-node local Ray cluster that loses a worker mid-run (slow)."""

from __future__ import annotations

import builtins
import csv
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import BCCD_WBC, PBC, SHARED, make_subset, needs_shared

from cellsearch_gui.cli import main
from cellsearch_gui.core.app.experiments import classify_job, load_inputs
from cellsearch_gui.core.app.segment import segment_images
from cellsearch_gui.core.app.sharded import LocalShards
from cellsearch_gui.core.app.sharded_jobs import sharded_classify_job, sharded_segment_job
from cellsearch_gui.core.classify.ewc import EWCParams
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedOptions
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.index.compressed import CompressedIndex, memory_plan
from cellsearch_gui.core.io.shards import ShardError, ShardStore
from cellsearch_gui.core.jobs import run_job
from cellsearch_gui.core.segmentation.settings import SegmentSettings

has_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                             reason="Ray is not installed (pip install 'cellsearch_gui[cluster]')")
BCCD_FOV = SHARED / "data" / "bccd_fov" / "JPEGImages"
MODELS = ["mobilenetv2"]
OPTIONS = EmbedOptions(device="cpu", batch_size=4)
PARAMS = EWCParams(k_max=8)


@pytest.fixture
def crops(tmp_path):
    ref = make_subset(PBC, tmp_path / "ref", ["eosinophil", "lymphocyte", "neutrophil"], 4)
    query = make_subset(BCCD_WBC, tmp_path / "query", ["eosinophil", "neutrophil"], 5)
    return load_inputs(ref, query)


def _same(a, b) -> None:
    (_, query_a, preds_a, _), (_, query_b, preds_b, _) = a, b
    assert query_a.cell_ids == query_b.cell_ids and query_a.paths == query_b.paths
    assert preds_a.labels == preds_b.labels
    np.testing.assert_array_equal(preds_a.neighbour_ids, preds_b.neighbour_ids)
    np.testing.assert_array_equal(preds_a.k_used, preds_b.k_used)
    np.testing.assert_allclose(query_a.features, query_b.features, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------- the shard store

def test_a_shard_is_written_whole_and_read_back_checked(tmp_path):
    store = ShardStore(tmp_path / "w", {"job": 1})
    store.write("s-00000", {"x": np.arange(6.0).reshape(2, 3)}, {"rows": 2}, {"crops/a.png": b"png"})
    again = ShardStore(tmp_path / "w", {"job": 1})
    assert again.done("s-00000") and again.record("s-00000") == {"rows": 2}
    np.testing.assert_array_equal(again.read("s-00000", "x"), np.arange(6.0).reshape(2, 3))
    with pytest.raises(ShardError, match="another job"):
        ShardStore(tmp_path / "w", {"job": 2})


def test_a_damaged_shard_is_named_dropped_and_the_others_kept(tmp_path):
    store = ShardStore(tmp_path / "w", {"job": 1})
    for i in range(3):
        store.write(f"s-{i:05d}", {"x": np.full(4, i)})
    path = tmp_path / "w" / "s-00001" / "x.npy"
    path.write_bytes(path.read_bytes()[:-3] + b"\xff\xff\xff")
    assert store.check() == ["s-00001"]
    assert "s-00001" in store.notes[0] and "damaged" in store.notes[0]
    assert ShardStore(tmp_path / "w", {"job": 1}).shards.keys() == {"s-00000", "s-00002"}


# ---------------------------------------------------------------------------------------- the shard path, no Ray

@needs_shared
def test_shards_give_the_local_predictions_and_a_rerun_resumes(crops, real_weights, tmp_path):
    local = run_job(classify_job(crops, MODELS, PARAMS, EmbeddingCache(None), OPTIONS))
    work = tmp_path / "work"
    sharded = run_job(sharded_classify_job(crops, MODELS, PARAMS, OPTIONS, LocalShards(), work, shard_size=4))
    _same(local, sharded)
    assert sharded[3]["shards_run"] == 6  # 12 reference + 10 query crops in shards of 4
    # damage one finished shard: the re-run says so, recomputes it alone and gives the same answers
    victim = work / "query-00001" / "model_mobilenetv2.npy"
    victim.write_bytes(victim.read_bytes()[:-8] + bytes(8))
    crops.notes.clear()
    again = run_job(sharded_classify_job(crops, MODELS, PARAMS, OPTIONS, LocalShards(), work, shard_size=4))
    _same(local, again)
    assert again[3]["shards_run"] == 1 and again[3]["shards_reused"] == 5
    assert any("query-00001" in note and "damaged" in note for note in crops.notes)


@needs_shared
def test_sharded_segmentation_gives_the_same_cells(tmp_path):
    fields = sorted(BCCD_FOV.glob("*.jpg"))[:3]
    settings = SegmentSettings(segmenter="classical", pixel_size_um=0.2)
    local = run_job(segment_images(fields, tmp_path / "local", settings))
    sharded = run_job(sharded_segment_job(fields, tmp_path / "sharded", settings, LocalShards(), 2))
    assert local.cells == sharded.cells > 0
    assert (tmp_path / "local" / "cells.csv").read_bytes() == (tmp_path / "sharded" / "cells.csv").read_bytes()
    for crop in (tmp_path / "local" / "crops").iterdir():
        assert (tmp_path / "sharded" / "crops" / crop.name).read_bytes() == crop.read_bytes()


# ---------------------------------------------------------------------------------------- the compressed index

def test_the_compressed_index_finds_neighbours_and_reranks_exactly(rng):
    centres = rng.normal(size=(8, 64)).astype(np.float32) * 4
    x = (centres[rng.integers(0, 8, 4000)] + rng.normal(size=(4000, 64))).astype(np.float32)
    index = CompressedIndex(pca=32, pq_bytes=8, nlist=16, nprobe=16)
    index.train(x, len(x))
    index.add_shards([x[:2000], x[2000:]])
    q = x[:20] + 0.01
    exact = np.argsort(((x[None] - q[:, None]) ** 2).sum(-1), axis=1)[:, :10]
    _, approx = index.search(q, 10)
    _, reranked = index.search(q, 10, vectors=lambda ids: x[ids], rerank=50)
    overlap = lambda ids: np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, ids)])  # noqa: E731
    assert overlap(reranked) > overlap(approx) and overlap(reranked) >= 0.95
    assert memory_plan(10**8, 2560)["index_gib"] < 8


# ---------------------------------------------------------------------------------------- bad input

def test_without_ray_the_message_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from cellsearch_gui.engine.ray_engine import RayShards

    with pytest.raises(CellSearchError, match=r"cellsearch_gui\[cluster\]"):
        RayShards().connect()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("resources, actors, options, note", [
    ({"CPU": 16.0, "GPU": 4.0}, 2, {"num_gpus": 1, "num_cpus": 1}, None),
    ({"CPU": 16.0, "GPU": 1.0}, 1, {"num_gpus": 1, "num_cpus": 1}, "1 GPUs: using 1 workers"),
    ({"CPU": 1.0}, 1, {"num_cpus": 1}, "room for 1 workers"),
])
def test_each_worker_takes_one_gpu_where_the_cluster_has_gpus(resources, actors, options, note):
    """Scheduling only (no GPU here): what each Ray actor asks for, from what the cluster advertises."""
    from cellsearch_gui.engine.ray_engine import RayShards

    engine = RayShards(workers=2)
    cluster = type("Cluster", (), {"cluster_resources": staticmethod(lambda: resources)})
    assert engine._actor_options(cluster) == (actors, options)
    assert (note is None and not engine.notes) or any(note in n for n in engine.notes)


def test_an_unreachable_cluster_is_a_message_not_a_hang(tmp_path, capsys):
    pytest.importorskip("ray")
    t0 = time.perf_counter()
    code = main(["segment", str(tmp_path), "--out", str(tmp_path / "out"), "--engine", "ray",
                 "--ray-address", f"127.0.0.1:{_free_port()}"])
    assert code == 2 and time.perf_counter() - t0 < 30
    assert "cannot reach a Ray cluster" in capsys.readouterr().err
    assert main(["segment", str(tmp_path), "--out", str(tmp_path / "o"), "--ray-workers", "2"]) == 2
    assert "only apply with --engine ray" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- a real Ray

def _ray_stop() -> None:
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True,
                   timeout=120)


@needs_shared
@has_ray
def test_ray_with_two_workers_gives_the_local_predictions(crops, real_weights, tmp_path):
    from cellsearch_gui.engine.ray_engine import RayShards

    local = run_job(classify_job(crops, MODELS, PARAMS, EmbeddingCache(None), OPTIONS))
    try:
        with RayShards(workers=2) as engine:
            on_ray = run_job(sharded_classify_job(crops, MODELS, PARAMS, OPTIONS, engine, tmp_path / "w", 4))
        _same(local, on_ray)
        # the CLI's evaluate on the Ray engine: the scores of its local engine
        common = ["evaluate", "--reference", str(tmp_path / "ref"), "--query", str(tmp_path / "query"), "--models",
                  "mobilenetv2", "--device", "cpu", "--batch-size", "4", "--k-max", "8", "--quiet", "--no-cache"]
        assert main([*common, "--engine", "ray", "--ray-workers", "2", "--work-dir", str(tmp_path / "w-cli"),
                     "--shard-size", "4", "--json", str(tmp_path / "ray.json")]) == 0
    finally:
        _ray_stop()
    assert main([*common, "--json", str(tmp_path / "local.json")]) == 0
    ray_scores, local_scores = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("ray", "local"))
    for key in ("balanced_accuracy", "macro_precision", "mean_k", "mean_entropy", "confusion"):
        assert ray_scores[key] == local_scores[key], key


@needs_shared
@has_ray
def test_a_worker_without_the_weights_stops_the_job_with_its_message(crops, tmp_path, monkeypatch):
    from cellsearch_gui.engine.ray_engine import RayShards

    monkeypatch.setenv("CELLSEARCH_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setenv("CELLSEARCH_OFFLINE", "1")
    try:
        with RayShards(workers=1) as engine, pytest.raises(CellSearchError, match="failed on a Ray worker"):
            run_job(sharded_classify_job(crops, MODELS, PARAMS, OPTIONS, engine, tmp_path / "w", 4))
    finally:
        _ray_stop()


def _tree(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    children: dict[int, list[int]] = {}
    for child, parent in zip(map(int, out[::2]), map(int, out[1::2])):
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


@pytest.mark.slow
@needs_shared
@has_ray
def test_a_real_cluster_loses_a_worker_node_and_every_cell_comes_once(real_weights, tmp_path):
    """`ray start --head` plus a second node joining by address; the job runs through the address; the
    second node is killed once shards are landing; the job completes with every query cell exactly once."""
    ref = make_subset(PBC, tmp_path / "ref", ["eosinophil", "lymphocyte", "neutrophil"], 4)
    query = make_subset(BCCD_WBC, tmp_path / "query", ["eosinophil", "neutrophil"], 16)
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
    port, env = _free_port(), {**os.environ, "RAY_AUTH_MODE": "disabled"}  # a private test cluster
    address = f"127.0.0.1:{port}"
    subprocess.run(ray_cli + ["start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"],
                   check=True, capture_output=True, env=env, timeout=300)
    second = subprocess.Popen(ray_cli + ["start", f"--address={address}", "--num-cpus=1", "--block"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        work, out = tmp_path / "work", tmp_path / "pred.csv"
        job = subprocess.Popen([sys.executable, "-m", "cellsearch_gui", "classify", "--reference", str(ref),
                                "--query", str(query), "--out", str(out), "--models", "mobilenetv2",
                                "--device", "cpu", "--batch-size", "2", "--k-max", "8", "--engine", "ray",
                                "--ray-address", address, "--ray-workers", "2", "--work-dir", str(work),
                                "--shard-size", "2", "--quiet"], env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 600
        while not list(work.glob("query-*/rows.npy")) and time.time() < deadline and job.poll() is None:
            time.sleep(0.5)
        assert job.poll() is None, "the job ended before a worker could be killed"
        for pid in reversed(_tree(second.pid)):  # the whole second node: its raylet and its workers
            subprocess.run(["kill", "-9", str(pid)], capture_output=True)
        _, err = job.communicate(timeout=900)
        assert job.returncode == 0, err
        assert "a worker died while running shard" in err, err  # a shard was lost and run again
        with open(out, newline="", encoding="utf-8") as handle:
            paths = [row["path"] for row in csv.DictReader(handle)]
        assert sorted(paths) == sorted(str(p) for p in query.rglob("*.jpg")) and len(set(paths)) == 32
        local = tmp_path / "local.csv"
        assert main(["classify", "--reference", str(ref), "--query", str(query), "--out", str(local), "--models",
                     "mobilenetv2", "--device", "cpu", "--batch-size", "2", "--k-max", "8", "--quiet"]) == 0
        pick = lambda f: [(r["path"], r["predicted_label"]) for r in csv.DictReader(open(f, encoding="utf-8"))]  # noqa: E731
        assert pick(out) == pick(local)
    finally:
        second.kill()
        _ray_stop()
        shutil.rmtree(tmp_path / "work", ignore_errors=True)


@needs_shared
@has_ray
def test_ray_workers_use_the_embedding_cache_so_a_second_run_embeds_nothing(real_weights, tmp_path, capsys):
    """Two workers write to one SQLite cache (WAL, busy wait); a second job on the same crops, in another work
    folder (so no shard is reused), takes every embedding from it."""
    ref = make_subset(PBC, tmp_path / "ref", ["eosinophil", "lymphocyte", "neutrophil"], 3)
    query = make_subset(BCCD_WBC, tmp_path / "query", ["eosinophil", "neutrophil"], 4)
    common = ["classify", "--reference", str(ref), "--query", str(query), "--models", "mobilenetv2", "--device",
              "cpu", "--batch-size", "4", "--k-max", "8", "--quiet", "--cache-dir", str(tmp_path / "cache"),
              "--engine", "ray", "--ray-workers", "2", "--shard-size", "4"]
    try:
        assert main([*common, "--out", str(tmp_path / "first.csv"), "--work-dir", str(tmp_path / "w1")]) == 0
        first = capsys.readouterr().err
        assert main([*common, "--out", str(tmp_path / "second.csv"), "--work-dir", str(tmp_path / "w2")]) == 0
        second = capsys.readouterr().err
    finally:
        _ray_stop()
    assert "embeddings on the workers: 17 computed, 0 from the embedding cache (0 of 5 shards reused" in first
    assert "embeddings on the workers: 0 computed, 17 from the embedding cache (0 of 5 shards reused" in second
    assert (tmp_path / "first.csv").read_bytes() == (tmp_path / "second.csv").read_bytes()
    cache = EmbeddingCache(tmp_path / "cache")
    assert cache.count() == 17 and cache.integrity() == "ok"  # the local engine finds them there too
    cache.close()


@needs_shared
@has_ray
def test_evaluate_shots_on_ray_gives_the_local_numbers(crops, real_weights, tmp_path):
    common = ["evaluate", "--reference", str(tmp_path / "ref"), "--query", str(tmp_path / "query"), "--models",
              "mobilenetv2", "--device", "cpu", "--batch-size", "4", "--k-max", "8", "--quiet", "--no-cache",
              "--shots", "2", "--shot-seeds", "2"]
    try:
        assert main([*common, "--engine", "ray", "--ray-workers", "2", "--work-dir", str(tmp_path / "w"),
                     "--shard-size", "4", "--json", str(tmp_path / "ray.json")]) == 0
    finally:
        _ray_stop()
    assert main([*common, "--json", str(tmp_path / "local.json")]) == 0
    ray_scores, local_scores = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("ray", "local"))
    assert ray_scores["shots"] == 2 and len(ray_scores["per_seed"]) == 2
    for key in ("balanced_accuracy", "macro_precision", "mean_k", "mean_entropy", "confusion", "per_seed"):
        assert ray_scores[key] == local_scores[key], key
