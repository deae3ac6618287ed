"""Every registered backend, built with random weights from its real library code: small configurations
(fewer blocks, small input, real width) by default, the real configurations under ``-m slow``."""

import dataclasses

import numpy as np
import pytest
import torch
from zoo_helpers import EMBEDDERS, crops, tiny_registry  # noqa: F401 - fixture

from cellsearch_gui.core.embedding.runner import ModelRunner
from cellsearch_gui.core.models.backends import RANDOM_INIT, build_model, tiny_spec
from cellsearch_gui.core.models.registry import REGISTRY, get_spec, parse_model_list


@pytest.mark.parametrize("model_id", EMBEDDERS)
def test_backend_embeds_deterministically_with_registered_dimension(model_id, tiny_registry):
    spec = get_spec(model_id)
    real = tiny_registry[model_id]
    assert (spec.family, spec.arch, spec.dim) == (real.family, real.arch, real.dim)
    images = crops(2, seed=3)
    runner = ModelRunner(model_id, weights="random")
    out = runner.embed_arrays(images)
    assert out.shape == (2, spec.dim) and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.array_equal(out, runner.embed_arrays(images))  # same model, same input: same output
    rebuilt = ModelRunner(model_id, weights="random").embed_arrays(images)
    assert np.array_equal(out, rebuilt)  # same seed: same network
    assert not np.allclose(out[0], out[1])  # and it depends on the input


def test_clsmean_variant_starts_with_the_cls_embedding(tiny_registry):
    images = crops(2)
    cls = ModelRunner("dinov2_vits14", weights="random").embed_arrays(images)
    both = ModelRunner("dinov2_vits14_clsmean", weights="random").embed_arrays(images)
    assert both.shape == (2, 2 * cls.shape[1])
    assert np.allclose(both[:, : cls.shape[1]], cls, atol=1e-6)
    assert not np.allclose(both[:, cls.shape[1]:], cls, atol=1e-3)


def test_vitmae_is_deterministic_although_its_library_masks_at_random(tiny_registry):
    """transformers' ViTMAE shuffles patches by random noise on every call; with mask_ratio 0 and ordered
    noise the whole token sequence (not only the CLS token) is reproducible."""
    spec = get_spec("vitmae_base")
    model = build_model(spec, RANDOM_INIT)
    x = torch.randn(3, 3, spec.input_size, spec.input_size)
    with torch.inference_mode():
        assert torch.equal(model(x), model(x))
        assert model.model.config.mask_ratio == 0.0


def test_sam_models_embed_and_segment():
    for model_id in ("mobilesam", "sam_vit_b", "sam_vit_l", "sam_vit_h"):
        assert parse_model_list(model_id, role="embed") == [model_id]
        assert parse_model_list(model_id, role="segment") == [model_id]
        assert get_spec(model_id).input_size == 1024 and get_spec(model_id).dim == 256


def test_our_sam_vit_b_is_segment_anythings_vit_b():
    """The SAM builder (which exposes the encoder settings) builds the same network as segment-anything's."""
    from segment_anything import sam_model_registry

    from cellsearch_gui.core.models.sam_net import build_sam

    ours = build_sam(get_spec("sam_vit_b"), RANDOM_INIT).state_dict()
    theirs = sam_model_registry["vit_b"](checkpoint=None).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_hub_ids_match_the_libraries_pretrained_configs():
    import open_clip
    import timm

    for spec in REGISTRY.values():
        if spec.family == "timm" and spec.hub_id and spec.hub_id.startswith("timm/"):
            assert timm.models.get_pretrained_cfg(spec.arch).hf_hub_id == spec.hub_id, spec.id
        elif spec.family == "timm" and spec.hub_id:  # a third party's weights for a timm architecture
            assert timm.models.get_pretrained_cfg(spec.arch) is not None and spec.hub_id in spec.weights_source
    assert sum(s.family == "timm" and s.hub_id.startswith("timm/") for s in REGISTRY.values() if s.hub_id) >= 5
    clip = {"clip_vitb16": "laion2b_s34b_b88k", "clip_vitl14": "openai"}
    for model_id, tag in clip.items():
        spec = get_spec(model_id)
        cfg = open_clip.get_pretrained_cfg(spec.arch, tag)
        assert cfg["hf_hub"].rstrip("/") == spec.hub_id
        assert cfg.get("quick_gelu", False) == spec.options.get("quick_gelu", False)
        assert tuple(cfg["mean"]) == spec.mean and tuple(cfg["std"]) == spec.std
        assert open_clip.get_model_config(spec.arch)["embed_dim"] == spec.dim


def test_every_model_documents_its_layer_licence_and_source():
    for spec in REGISTRY.values():
        assert spec.layer and spec.licence and spec.weights_source, spec.id
        assert spec.sha256 or spec.url or spec.hub_id or spec.id == "efficientnet_lite0", spec.id


@pytest.mark.slow
@pytest.mark.parametrize("model_id", EMBEDDERS)
def test_real_configuration_builds_with_registered_dimension(model_id):
    """The registered (full-size) configuration, random weights, one crop at the registered input size."""
    spec = get_spec(model_id)
    model = build_model(spec, RANDOM_INIT)
    x = torch.randn(1, 3, spec.input_size, spec.input_size)
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (1, spec.dim) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert dataclasses.replace(tiny_spec(spec), options={}, input_size=spec.input_size) == \
        dataclasses.replace(spec, options={})


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["vit_l", "vit_h"])
def test_our_large_sams_are_segment_anythings(arch):
    from segment_anything import sam_model_registry

    from cellsearch_gui.core.models.sam_net import build_sam

    ours = build_sam(get_spec(f"sam_{arch}"), RANDOM_INIT).state_dict()
    theirs = sam_model_registry[arch](checkpoint=None).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
