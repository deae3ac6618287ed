"""Crop preparation in worker processes, once per run (issue 18): the same pixels as the reader threads,
one preparation per crop whatever the number of models, Cancel within 2 s, and a worker that dies on a file
reports that file while the run goes on."""

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import PBC, needs_shared
from prep_crash_helpers import crashing_read_crop, slow_read_crop
from zoo_helpers import tiny_registry  # noqa: F401 - fixture

from cellsearch_gui.core.crops.prepare import preset
from cellsearch_gui.core.embedding import prep_workers, prepared
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedJob, EmbedOptions, embed_crops, use_prep_workers
from cellsearch_gui.core.embedding.prep_workers import CRASH_PROBLEM, PrepWorkers, read_crop
from cellsearch_gui.core.embedding.prepared import PreparedStore
from cellsearch_gui.core.errors import Cancelled
from cellsearch_gui.core.io.dataset import CropSet
from cellsearch_gui.core.jobs import CancelToken, run_job

MODELS = ["convnext_base", "dinov2_vits14", "clip_vitb16"]


def all_pbc_files() -> list[Path]:
    return sorted(f for c in sorted(PBC.iterdir()) if c.is_dir() for f in sorted(c.iterdir()))


def pbc_files(n: int) -> list[Path]:
    files = all_pbc_files()
    return files[:: max(1, len(files) // n)][:n]


def crop_set_of(tmp_path, n: int, extra: dict[str, bytes] | None = None) -> CropSet:
    paths = [Path(shutil.copy(f, tmp_path / f"{i:02d}{f.suffix}")) for i, f in enumerate(pbc_files(n))]
    for name, data in (extra or {}).items():
        (tmp_path / name).write_bytes(data)
        paths.insert(len(paths) // 2, tmp_path / name)
    return CropSet(paths, ["a"] * len(paths))


@needs_shared
@pytest.mark.parametrize("name", ["raw", "cell", "cell_clahe"])
def test_process_prepared_crops_equal_the_reader_threads(name):
    prep = preset(name)
    files = pbc_files(12)
    workers = PrepWorkers(2, prep)
    workers.plan([(str(f), f) for f in files])
    try:
        got = [workers.take(str(f), f) for f in files]
    finally:
        workers.close()
    for path, (image, problem, record) in zip(files, got):
        expected = read_crop(path, prep)
        assert problem is None and image.dtype == np.uint8
        assert np.array_equal(image, expected[0]) and record == expected[2]


@needs_shared
def test_embedding_with_processes_equals_the_thread_path(tiny_registry, tmp_path):
    crops = crop_set_of(tmp_path, 9, {"truncated.jpg": pbc_files(1)[0].read_bytes()[:400],
                                      "garbage.png": b"\x89PNG not really"})
    results = {}
    for workers, sequential in [(0, False), (2, False), (2, True)]:
        options = EmbedOptions(weights="random", batch_size=4, prep=preset("cell"), prep_workers=workers,
                               sequential_models=sequential)
        results[workers, sequential] = run_job(embed_crops(crops, MODELS, EmbeddingCache(None), options))
    reference = results[0, False]
    assert len(reference.paths) == 9 and {p.rsplit("/", 1)[-1] for p, _ in reference.skipped} == \
        {"truncated.jpg", "garbage.png"}  # the bad images are reported and the run goes on
    for other in results.values():
        assert np.array_equal(other.features, reference.features)
        assert other.skipped == reference.skipped and other.paths == reference.paths
        assert other.prep_notes == reference.prep_notes


@needs_shared
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("budget", [None, 0])  # 0: every kept crop goes through the temporary file
def test_each_crop_is_prepared_once_per_run(tiny_registry, tmp_path, monkeypatch, workers, budget):
    crops = crop_set_of(tmp_path, 8, {"broken.png": b"not a png"})
    calls = []
    monkeypatch.setattr(prepared, "read_crop", lambda path, prep: (calls.append(path), read_crop(path, prep))[1])
    monkeypatch.setattr(prepared, "MEMORY_BUDGET", 1 << 30 if budget is None else budget)
    options = EmbedOptions(weights="random", batch_size=3, prep=preset("cell"), prep_workers=workers,
                           sequential_models=True)
    job = EmbedJob(crops, MODELS, EmbeddingCache(None), options, CancelToken())
    result = run_job(job.run())
    assert job.crops_prepared == len(crops.paths) == 9  # three models, one preparation per crop
    if workers == 0:
        assert sorted(calls) == sorted(crops.paths)  # counted where the work is done, too
    together = run_job(embed_crops(crops, MODELS, EmbeddingCache(None),
                                   EmbedOptions(weights="random", batch_size=3, prep=preset("cell"),
                                                prep_workers=0, sequential_models=False)))
    assert np.array_equal(result.features, together.features) and len(result.paths) == 8
    assert result.skipped == together.skipped and result.prep_notes == together.prep_notes


def test_the_store_spills_to_a_temporary_file():
    store = PreparedStore(budget=1100)
    images = {f"k{i}": np.random.default_rng(i).integers(0, 255, (20 + i, 17, 3), np.uint8) for i in range(4)}
    for key, image in images.items():
        store.put(key, image)
    assert len(store.memory) == 1 and len(store.on_disk) == 3
    for key, image in images.items():
        assert np.array_equal(store.get(key), image)
    store.discard("k2")
    assert "k2" not in store and len(store) == 3
    store.close()


@needs_shared
def test_cancel_stops_within_two_seconds_with_worker_processes(tiny_registry, tmp_path, monkeypatch):
    crops = crop_set_of(tmp_path, 40)
    monkeypatch.setattr(prep_workers, "read_crop", slow_read_crop)  # the task the workers are given
    token = CancelToken()
    options = EmbedOptions(weights="random", batch_size=2, prep=preset("cell"), prep_workers=2)
    job = embed_crops(crops, ["convnext_base"], EmbeddingCache(None), options, token)
    cancelled_at = []

    def cancel():
        cancelled_at.append(time.perf_counter())
        token.cancel()

    timer = None
    with pytest.raises(Cancelled):
        for progress in job:
            if progress.stage == "embedding" and progress.done >= 4 and timer is None:
                timer = threading.Timer(0.3, cancel)  # while the workers are busy
                timer.start()
    stopped = time.perf_counter() - cancelled_at[0]
    assert stopped < 2.0, f"Cancel took {stopped:.2f} s"


@needs_shared
def test_a_worker_that_dies_reports_its_file_and_the_run_goes_on(tiny_registry, tmp_path, monkeypatch):
    crops = crop_set_of(tmp_path, 10, {"crash-me.png": all_pbc_files()[-1].read_bytes()})  # not among the 10
    expected = run_job(embed_crops(CropSet([p for p in crops.paths if p.name != "crash-me.png"], ["a"] * 10),
                                   ["convnext_base"], EmbeddingCache(None),
                                   EmbedOptions(weights="random", batch_size=4, prep=preset("cell"), prep_workers=0)))
    monkeypatch.setattr(prep_workers, "read_crop", crashing_read_crop)
    options = EmbedOptions(weights="random", batch_size=4, prep=preset("cell"), prep_workers=2)
    result = run_job(embed_crops(crops, ["convnext_base"], EmbeddingCache(None), options))
    assert result.skipped == [(str(tmp_path / "crash-me.png"), CRASH_PROBLEM)]
    assert result.paths == expected.paths and np.array_equal(result.features, expected.features)


def test_prep_workers_default_to_the_cores():
    assert use_prep_workers(0, "cuda", 10_000) == 0 and use_prep_workers(3, "cpu", 5) == 3
    assert use_prep_workers(None, "cuda", 10) == 0  # a few crops: processes would cost more than they save
    assert use_prep_workers(None, "cuda", 10_000) >= 1


def test_staging_buffers_hold_the_models_input(tiny_registry):
    from zoo_helpers import crops as random_crops

    from cellsearch_gui.core.embedding.runner import ModelRunner
    from cellsearch_gui.core.embedding.staging import Staging, StagingRing

    runner = ModelRunner("convnext_base", weights="random", batch_size=4)
    ring = StagingRing(runner)  # unpinned here: the CUDA path's code, on the CPU
    batches = [random_crops(n, seed=n) for n in (4, 3, 4, 2)]
    staged = [ring.input_batch(images) for images in batches]
    assert len({id(b.untyped_storage()) for b in staged[:3]}) == 3  # three buffers, then reused
    assert staged[3].untyped_storage().data_ptr() == staged[0].untyped_storage().data_ptr()
    for images, batch in zip(batches[3:], staged[3:]):
        assert np.array_equal(batch.numpy(), runner.input_batch(images).numpy())
    assert np.array_equal(ring.input_batch(batches[1]).numpy(), runner.input_batch(batches[1]).numpy())
    assert Staging().input_batch(runner, batches[0]).shape[0] == 4 and not Staging().rings  # CPU: unchanged path


@needs_shared
def test_crops_are_prepared_here_when_no_worker_process_can_run(tmp_path, monkeypatch):
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    class NoProcesses:  # every worker dies before it runs anything
        def submit(self, *args):
            future = Future()
            future.set_exception(BrokenProcessPool("no processes here"))
            return future

        def shutdown(self, **kwargs):
            pass

    workers = PrepWorkers(2, preset("raw"))
    monkeypatch.setattr(workers, "_new_pool", lambda n: NoProcesses())
    for path in crop_set_of(tmp_path, 3).paths:
        image, problem, _ = workers.take(str(path), path)
        assert problem is None and np.array_equal(image, read_crop(path, preset("raw"))[0])
    assert workers.in_process and not workers.crashes
