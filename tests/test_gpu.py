"""The CUDA path, run only where torch sees a GPU (benchmarks/gpu_check.sh runs it on the device machine;
CI has none, so these are skipped there): features on the GPU against the CPU, fp16 autocast within its
tolerance, pinned model inputs, and the pipeline with and without pinned memory."""

import numpy as np
import pytest
import torch
from zoo_helpers import crops

from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedOptions, embed_crops
from cellsearch_gui.core.embedding.runner import ModelRunner
from cellsearch_gui.core.io.dataset import CropSet
from cellsearch_gui.core.jobs import run_job

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
MODELS = ["mobilenetv2", "dinov2_vits14", "convnext_base"]
FP16_MIN_COSINE = 0.99  # the same stated tolerance as bf16 on the CPU (test_devices.py)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("model_id", MODELS)
def test_cuda_fp32_matches_the_cpu(model_id):
    images = crops(8, seed=3)
    cpu = ModelRunner(model_id, weights="random", device="cpu", precision="fp32").embed_arrays(images)
    gpu = ModelRunner(model_id, weights="random", device="cuda", precision="fp32").embed_arrays(images)
    assert _cosine(cpu, gpu).min() > 0.999  # TF32 convolutions and matmuls may differ slightly


@pytest.mark.parametrize("model_id", MODELS)
def test_cuda_fp16_autocast_stays_within_tolerance(model_id):
    images = crops(8, seed=3)
    fp32 = ModelRunner(model_id, weights="random", device="cuda", precision="fp32").embed_arrays(images)
    runner = ModelRunner(model_id, weights="random", device="cuda")
    assert runner.precision == "fp16" and runner.batch_size >= 32
    fp16 = runner.embed_arrays(images)
    assert fp16.dtype == np.float32 and _cosine(fp32, fp16).min() > FP16_MIN_COSINE


def test_model_inputs_are_pinned_on_cuda():
    runner = ModelRunner("mobilenetv2", weights="random", device="cuda")
    assert runner.input_batch(crops(2)).is_pinned()
    assert not ModelRunner("mobilenetv2", weights="random", device="cuda", pin_memory=False).input_batch(
        crops(2)).is_pinned()


def test_pipeline_with_and_without_pinned_memory_gives_the_same_features(tmp_path):
    from PIL import Image

    paths = []
    for i, image in enumerate(crops(40, seed=7)):
        paths.append(tmp_path / f"c{i}.png")
        Image.fromarray(image).save(paths[-1])
    results = []
    for pin in (True, False):
        options = EmbedOptions(weights="random", device="cuda", precision="fp32", batch_size=16, pin_memory=pin)
        results.append(run_job(embed_crops(CropSet(paths, [None] * len(paths)), ["mobilenetv2", "convnext_base"],
                                           EmbeddingCache(None), options)))
    assert len(results[0].paths) == 40
    assert np.allclose(results[0].features, results[1].features, atol=1e-5)
