"""Devices and memory: precision choice and its tolerance, out-of-memory batch halving (with an injected
fake out-of-memory error), and loading several models one after another."""

import numpy as np
import pytest
import torch
from zoo_helpers import crops, tiny_registry  # noqa: F401 - fixture

from cellsearch_gui.core.embedding import job as embedding_job
from cellsearch_gui.core.embedding import runner as embedding_runner
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedOptions, embed_crops
from cellsearch_gui.core.embedding.runner import ModelRunner
from cellsearch_gui.core.errors import Cancelled, CellSearchError, OutOfMemoryError
from cellsearch_gui.core.io.dataset import CropSet
from cellsearch_gui.core.jobs import CancelToken, run_job
from cellsearch_gui.core.models.devices import pick_precision
from cellsearch_gui.core.models.registry import get_spec

BF16_MIN_COSINE = 0.99  # stated tolerance: bf16 autocast vs fp32, per crop


def test_precision_defaults():
    assert pick_precision("auto", "cuda") == "fp16" and pick_precision("auto", "cuda:1") == "fp16"
    assert pick_precision("auto", "cpu") == "fp32" and pick_precision("auto", "mps") == "fp32"
    assert pick_precision("bf16", "cpu") == "bf16"
    with pytest.raises(CellSearchError, match="precision 'half'"):
        pick_precision("half", "cpu")


@pytest.mark.parametrize("model_id", ["dinov2_vits14", "convnext_base", "clip_vitb16", "vitmae_base"])
def test_bf16_autocast_stays_within_tolerance_of_fp32(model_id, tiny_registry):
    images = crops(4, seed=2)
    fp32 = ModelRunner(model_id, weights="random", device="cpu", precision="fp32")
    bf16 = ModelRunner(model_id, weights="random", device="cpu", precision="bf16")
    a, b = fp32.embed_arrays(images), bf16.embed_arrays(images)
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() > BF16_MIN_COSINE, cosine
    assert b.dtype == np.float32
    assert not np.array_equal(a, b)  # autocast did run in bf16
    assert fp32.fingerprint != bf16.fingerprint and fp32.fingerprint.endswith(fp32.prep.tag())


class FakeGpuModel(torch.nn.Module):
    """Wraps a model; raises CUDA's out-of-memory error for batches larger than ``fits``."""

    def __init__(self, model, fits: int, error=torch.OutOfMemoryError):
        super().__init__()
        self.model, self.fits, self.error, self.batches = model, fits, error, []

    def forward(self, x):
        self.batches.append(x.shape[0])
        if x.shape[0] > self.fits:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        return self.model(x)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, RuntimeError])  # CUDA, MPS-style message
def test_out_of_memory_halves_the_batch_and_retries(tiny_registry, error):
    images = crops(7)
    expected = ModelRunner("convnext_base", weights="random", batch_size=8).embed_arrays(images)
    runner = ModelRunner("convnext_base", weights="random", batch_size=8)
    fake = FakeGpuModel(runner.load(), fits=2, error=error)
    runner._model = fake
    got = runner.embed_arrays(images)
    assert np.allclose(got, expected, atol=1e-5)
    assert runner.batch_size == 2
    assert fake.batches == [7, 4, 2, 2, 2, 1]  # 7 fails, 4 fails, then batches of 2 (and the rest)


def test_out_of_memory_at_batch_one_is_a_clear_error(tiny_registry):
    runner = ModelRunner("convnext_base", weights="random", batch_size=4)
    runner._model = FakeGpuModel(runner.load(), fits=0)
    with pytest.raises(OutOfMemoryError, match="'convnext_base' does not fit.*even one crop at a time"):
        runner.embed_arrays(crops(3))


def test_other_errors_are_not_mistaken_for_out_of_memory(tiny_registry):
    runner = ModelRunner("convnext_base", weights="random", batch_size=4)
    runner._model = FakeGpuModel(runner.load(), fits=0, error=ValueError)
    with pytest.raises(ValueError):
        runner.embed_arrays(crops(2))
    assert runner.batch_size == 4


def test_max_batch_caps_the_batch_of_large_input_models():
    assert ModelRunner("sam_vit_h", weights="random", batch_size=32).batch_size == 4


@pytest.fixture
def crop_set(tmp_path):
    from PIL import Image

    paths = []
    for i, image in enumerate(crops(7, seed=5)):
        paths.append(tmp_path / f"c{i}.png")
        Image.fromarray(image).save(paths[-1])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    paths.insert(3, tmp_path / "broken.png")
    return CropSet(paths, ["a"] * len(paths))


def _track_loads(monkeypatch):
    events = []
    load, release = ModelRunner.load, ModelRunner.release

    def tracked_load(self):
        if self._model is None:
            events.append(("load", self.spec.id))
        return load(self)

    def tracked_release(self):
        if self._model is not None:
            events.append(("release", self.spec.id))
        release(self)

    monkeypatch.setattr(embedding_runner.ModelRunner, "load", tracked_load)
    monkeypatch.setattr(embedding_runner.ModelRunner, "release", tracked_release)
    return events


def test_sequential_models_hold_one_model_at_a_time(tiny_registry, crop_set, monkeypatch):
    models = ["convnext_base", "dinov2_vits14", "clip_vitb16"]
    events = _track_loads(monkeypatch)
    together = EmbedOptions(weights="random", batch_size=3, sequential_models=False)
    progress = []
    interleaved = run_job(embed_crops(crop_set, models, EmbeddingCache(None), together), progress.append)
    assert [e[0] for e in events] == ["load"] * 3 + ["release"] * 3
    events.clear()
    alone = EmbedOptions(weights="random", batch_size=3, sequential_models=True)
    seq_progress = []
    sequential = run_job(embed_crops(crop_set, models, EmbeddingCache(None), alone), seq_progress.append)
    assert events == [(kind, m) for m in models for kind in ("load", "release")]
    assert np.allclose(sequential.features, interleaved.features, atol=1e-6)
    assert sequential.skipped == interleaved.skipped and len(sequential.skipped) == 1
    assert len(sequential.paths) == 7
    embed_steps = [p for p in seq_progress if p.stage == "embedding"]
    assert embed_steps[-1].done == embed_steps[-1].total == 3 * 8  # crop-model pairs, the broken one too
    assert [p.done for p in embed_steps] == sorted(p.done for p in embed_steps)
    assert "model 2 of 3" in embed_steps[4].message


def test_sequential_models_use_the_cache_and_stop_when_cancelled(tiny_registry, crop_set, monkeypatch):
    models = ["convnext_base", "dinov2_vits14"]
    cache = EmbeddingCache(None)
    options = EmbedOptions(weights="random", batch_size=2, sequential_models=True)
    run_job(embed_crops(crop_set, models, cache, options))
    events = _track_loads(monkeypatch)
    again = run_job(embed_crops(crop_set, models, cache, options))
    assert events == [] and len(again.paths) == 7  # everything came from the cache

    token = CancelToken()
    job = embed_crops(crop_set, models, EmbeddingCache(None), options, token)
    steps = 0
    with pytest.raises(Cancelled):
        for progress in job:
            steps += progress.stage == "embedding"
            if steps == 2:
                token.cancel()
    assert events[-1][0] == "release"  # the loaded model was freed on the way out


def test_gpu_defaults_to_sequential_models():
    assert embedding_job.use_sequential_models(None, "cuda", 3) and embedding_job.use_sequential_models(None, "mps", 2)
    assert not embedding_job.use_sequential_models(None, "cpu", 3)
    assert not embedding_job.use_sequential_models(None, "cuda", 1)  # one model: nothing to take turns
    assert embedding_job.use_sequential_models(True, "cpu", 2) and not embedding_job.use_sequential_models(False, "cuda", 2)


def test_batches_are_sized_to_the_device():
    small, sam = get_spec("mobilenetv2"), get_spec("sam_vit_h")
    assert embedding_runner.auto_batch_size("cpu", small) == 16 and embedding_runner.auto_batch_size("cuda", small) == 256
    assert embedding_runner.auto_batch_size("cpu", sam) == 4 and embedding_runner.auto_batch_size("cuda:1", sam) == 32
    assert ModelRunner("mobilenetv2", weights="random", device="cpu").batch_size == 16
    assert ModelRunner("mobilenetv2", weights="random", device="cpu", batch_size=8).batch_size == 8


def test_crop_readers_follow_the_device():
    assert embedding_job.use_read_workers(None, "cpu") == 1  # the CPU's cores run the models
    assert 1 <= embedding_job.use_read_workers(None, "cuda") <= 8
    assert embedding_job.use_read_workers(3, "cpu") == 3 and embedding_job.use_read_workers(0, "cuda") == 1


def test_pinned_memory_only_on_cuda():
    assert not ModelRunner("mobilenetv2", weights="random", device="cpu").pin_memory
    runner = ModelRunner("mobilenetv2", weights="random", device="cuda", pin_memory=False)
    assert not runner.pin_memory  # the option turns it off; nothing is loaded on the GPU here


@pytest.mark.parametrize("views", [1, 4])
def test_parallel_readers_and_read_ahead_give_the_same_features(tiny_registry, crop_set, views):
    models = ["convnext_base", "dinov2_vits14"]
    results = []
    for workers, prefetch, sequential in [(1, False, False), (3, True, False), (3, True, True)]:
        options = EmbedOptions(weights="random", batch_size=3, views=views, read_workers=workers,
                               prefetch=prefetch, sequential_models=sequential)
        results.append(run_job(embed_crops(crop_set, models, EmbeddingCache(None), options)))
    for other in results[1:]:
        assert np.array_equal(other.features, results[0].features)
        assert other.skipped == results[0].skipped and len(other.skipped) == 1
        assert other.paths == results[0].paths and len(other.paths) == 7


def test_input_batch_matches_the_reference_preprocessing(tiny_registry):
    images = crops(3, seed=4)
    runner = ModelRunner("convnext_base", weights="random")
    batch = runner.input_batch(images)
    assert batch.dtype == torch.uint8 and tuple(batch.shape[1:]) == (runner.spec.input_size,) * 2 + (3,)
    reference = torch.from_numpy(np.stack([embedding_runner.preprocess(im, runner.spec) for im in images]))
    with torch.inference_mode():
        expected = runner.load()(reference).numpy()
    assert np.array_equal(runner.collect(runner.launch(batch, images)), expected)


def test_launch_out_of_memory_falls_back_to_smaller_batches(tiny_registry):
    images = crops(4)
    expected = ModelRunner("convnext_base", weights="random", batch_size=4).embed_arrays(images)
    runner = ModelRunner("convnext_base", weights="random", batch_size=4)
    fake = FakeGpuModel(runner.load(), fits=2)
    runner._model = fake
    got = runner.collect(runner.launch(runner.input_batch(images), images))
    assert np.allclose(got, expected, atol=1e-5) and runner.batch_size == 2
    assert fake.batches == [4, 2, 2]


def test_cancel_keeps_the_batches_already_computed(tiny_registry, crop_set, monkeypatch):
    cache = EmbeddingCache(None)
    options = EmbedOptions(weights="random", batch_size=2)
    token = CancelToken()
    job = embed_crops(crop_set, ["convnext_base"], cache, options, token)
    with pytest.raises(Cancelled):
        for progress in job:
            if progress.stage == "embedding" and progress.done == 4:  # two batches (3 readable crops) run
                token.cancel()
    again = EmbedOptions(weights="random", batch_size=2)
    forwards = []
    original = ModelRunner._forward
    monkeypatch.setattr(ModelRunner, "_forward", lambda self, batch: forwards.append(len(batch)) or original(self, batch))
    run_job(embed_crops(crop_set, ["convnext_base"], cache, again))
    assert sum(forwards) == 7 - 3  # the first two batches came from the cache, the second one too


def test_pinned_path_runs_and_matches(tiny_registry, monkeypatch):
    """The CUDA branch (pin the input, copy it non-blocking) driven on the CPU with pinning faked."""
    images = crops(5, seed=9)
    expected = ModelRunner("convnext_base", weights="random", batch_size=2).embed_arrays(images)
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(len(self)) or self.clone())
    runner = ModelRunner("convnext_base", weights="random", batch_size=2)
    runner.pin_memory = True
    assert np.array_equal(runner.embed_arrays(images), expected) and pinned == [2, 2, 1]
