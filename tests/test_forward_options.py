"""Forward-pass options (embedding/forward.py) give the features of the plain pass, within float tolerance,
on the CPU: channels-last, SDPA on/off, torch.compile with batches padded to one shape, and several models
at once. Their speed is measured on the GPU (bench_models.py --forward, gpu_check.sh)."""

import numpy as np
import pytest
from zoo_helpers import crops

from cellsearch_gui.core.embedding.forward import ForwardOptions, embed_concurrently, fused_attention_share
from cellsearch_gui.core.embedding.runner import ModelRunner


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _features(model_id, images, **options):
    runner = ModelRunner(model_id, weights="random", device="cpu", precision="fp32", batch_size=4,
                         forward=ForwardOptions(**options))
    return runner.embed_arrays(images), runner


def test_channels_last_gives_the_same_features():
    images = crops(5, seed=1)
    plain, _ = _features("mobilenetv2", images)
    nhwc, runner = _features("mobilenetv2", images, channels_last=True)
    import torch

    conv = next(m for m in runner.load().modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert _cosine(plain, nhwc).min() > 0.9999


def test_timm_vits_already_use_sdpa_and_switching_it_keeps_the_features():
    images = crops(3, seed=2)
    plain, runner = _features("dinov2_vits14", images)
    used, blocks = fused_attention_share(runner.load())
    assert blocks == 12 and used == blocks  # timm's default: F.scaled_dot_product_attention
    manual, runner = _features("dinov2_vits14", images, sdpa=False)
    assert fused_attention_share(runner.load()) == (0, 12)
    assert _cosine(plain, manual).min() > 0.9999


def test_compiled_model_with_padded_fixed_batches_gives_the_same_features(monkeypatch):
    """5 crops in batches of 4: the last batch is padded to 4 rows, and the padding rows are dropped."""
    import torch

    shapes = []

    def fake_compile(model, **kwargs):  # the wrapper's contract: one input shape; no C++ build here
        def forward(x):
            shapes.append(tuple(x.shape))
            return model(x)
        return forward

    monkeypatch.setattr(torch, "compile", fake_compile)
    images = crops(5, seed=3)
    plain, _ = _features("mobilenetv2", images)
    compiled, _ = _features("mobilenetv2", images, compile="cudagraphs", channels_last=True)
    assert set(shapes) == {(4, 3, 224, 224)} and len(shapes) == 2
    assert compiled.shape == plain.shape and _cosine(plain, compiled).min() > 0.9999


@pytest.mark.slow
def test_real_torch_compile_on_the_cpu():
    images = crops(3, seed=4)
    plain, _ = _features("mobilenetv2", images)
    compiled, _ = _features("mobilenetv2", images, compile="compile")
    assert _cosine(plain, compiled).min() > 0.999


def test_two_models_at_once_give_each_model_s_own_features():
    images = crops(4, seed=5)
    runners = [ModelRunner(m, weights="random", device="cpu", precision="fp32") for m in ("mobilenetv2",
                                                                                         "efficientnet_lite0")]
    alone = [r.embed_arrays(images) for r in runners]
    together = embed_concurrently(runners, images)
    for a, b in zip(alone, together):
        assert a.shape == b.shape and _cosine(a, b).min() > 0.9999


def test_unknown_compile_mode_is_refused():
    with pytest.raises(ValueError, match="compile must be one of"):
        ForwardOptions(compile="fast")
    assert ForwardOptions().tag() == "default" and ForwardOptions(channels_last=True, compile="compile").tag() == (
        "channels_last+compile")
    for text in ("default", "channels_last", "no_sdpa", "sdpa+cudagraphs", "channels_last+compile"):
        assert ForwardOptions.parse(text).tag() == text
    with pytest.raises(ValueError, match="unknown forward option"):
        ForwardOptions.parse("flash")
