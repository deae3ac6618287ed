import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import SHARED_MODELS, needs_shared

from cellsearch_gui.core.embedding.runner import ModelRunner
from cellsearch_gui.core.errors import (
    CellSearchError,
    ChecksumMismatchError,
    UnknownModelError,
    WeightsMissingError,
)
from cellsearch_gui.core.models import checkpoints, install
from cellsearch_gui.core.models.backends import RANDOM_INIT, build_model
from cellsearch_gui.core.models.registry import get_spec, parse_model_list


def test_unknown_model_suggests_a_name():
    with pytest.raises(UnknownModelError, match="Did you mean 'mobilenetv2'"):
        parse_model_list("mobilenet_v2,efficientnet_lite0")


def test_missing_weights_is_an_error_with_a_hint():
    with pytest.raises(WeightsMissingError, match="cellsearch models import mobilenetv2 FILE"):
        ModelRunner("mobilenetv2")
    assert not checkpoints.status(get_spec("mobilenetv2")).present


def test_random_init_is_explicit_and_deterministic():
    a = ModelRunner("mobilenetv2", weights="random")
    img = [np.random.default_rng(0).integers(0, 255, (90, 80, 3), np.uint8)]
    out1, out2 = a.embed_arrays(img), ModelRunner("mobilenetv2", weights="random").embed_arrays(img)
    assert out1.shape == (1, 1280) and out1.dtype == np.float32
    assert np.array_equal(out1, out2)
    assert "random" in a.fingerprint


def test_import_rejects_wrong_checksum(tmp_path):
    fake = tmp_path / "fake.pth"
    torch.save({"w": torch.zeros(3)}, fake)
    with pytest.raises(ChecksumMismatchError, match="does not match the pinned checkpoint"):
        install.import_weights("mobilenetv2", fake)
    assert not checkpoints.weights_path(get_spec("mobilenetv2")).exists()


def test_import_rejects_unloadable_file_even_when_unpinned(tmp_path):
    fake = tmp_path / "fake.pth"
    torch.save({"w": torch.zeros(3)}, fake)
    with pytest.raises(CellSearchError, match="different model"):
        install.import_weights("mobilenetv2", fake, allow_unpinned=True)


def test_pickled_objects_are_never_loaded(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CellSearchError, match="not a loadable tensor checkpoint"):
        checkpoints.load_state_dict(path)


def test_native_timm_checkpoint_roundtrip(tmp_path):
    """A state dict saved from the same timm architecture loads by name and reproduces the outputs."""
    spec = get_spec("efficientnet_lite0")
    import timm

    torch.manual_seed(5)
    donor = timm.create_model(spec.arch, pretrained=False)
    path = tmp_path / "native.pth"
    torch.save(donor.state_dict(), path)
    model = build_model(spec, checkpoint=path)
    donor.reset_classifier(0)
    donor.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(model(x), donor(x))


def test_download_verifies_and_never_leaves_a_partial_file(tmp_path, monkeypatch):
    import dataclasses

    from cellsearch_gui.core.models import registry

    payload = tmp_path / "served.pth"
    torch.save({"w": torch.ones(2)}, payload)
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    wrong = dataclasses.replace(get_spec("mobilenetv2"), url=payload.as_uri(), sha256="0" * 64)
    monkeypatch.setitem(registry.REGISTRY, "mobilenetv2", wrong)
    with pytest.raises(ChecksumMismatchError, match="partial or wrong file was deleted"):
        checkpoints.download_weights("mobilenetv2")
    assert list(checkpoints.weights_dir().iterdir()) == []
    right = dataclasses.replace(wrong, sha256=digest)
    monkeypatch.setitem(registry.REGISTRY, "mobilenetv2", right)
    seen = []
    path = checkpoints.download_weights("mobilenetv2", progress=lambda d, t: seen.append(d))
    assert path.read_bytes() == payload.read_bytes() and seen
    assert json.loads((checkpoints.weights_dir() / "mobilenetv2.json").read_text())["sha256"] == digest


@needs_shared
def test_real_mobilenet_matches_torchvision(real_weights):
    """The order-mapped torchvision checkpoint gives the same network as torchvision's own model."""
    import torchvision

    spec = get_spec("mobilenetv2")
    tv = torchvision.models.mobilenet_v2()
    tv.load_state_dict(torch.load(SHARED_MODELS / "mobilenet_v2_imagenet.pth", weights_only=True))
    tv.eval()
    ours = build_model(spec)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        pooled = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(tv.features(x), 1), 1)
        assert torch.allclose(ours(x), pooled, atol=1e-4)


@needs_shared
def test_models_verify_detects_tampering(real_weights, tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "w"
    shutil.copytree(real_weights, folder)
    monkeypatch.setenv("CELLSEARCH_WEIGHTS_DIR", str(folder))
    assert checkpoints.status(get_spec("mobilenetv2"), verify=True).verified
    with open(folder / "mobilenetv2.pth", "r+b") as handle:
        handle.seek(5000)
        handle.write(b"\x00\x01\x02")
    assert checkpoints.status(get_spec("mobilenetv2"), verify=True).state == "CHECKSUM MISMATCH"
    assert RANDOM_INIT == "random"


def test_views_make_embeddings_rotation_invariant():
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    four = ModelRunner("mobilenetv2", weights="random", views=4)
    assert np.allclose(four.embed_arrays([img]), four.embed_arrays([np.rot90(img).copy()]), atol=1e-5)
    eight = ModelRunner("mobilenetv2", weights="random", views=8)
    assert np.allclose(eight.embed_arrays([img]), eight.embed_arrays([img[:, ::-1].copy()]), atol=1e-5)
    one = ModelRunner("mobilenetv2", weights="random")
    assert not np.allclose(one.embed_arrays([img]), one.embed_arrays([np.rot90(img).copy()]), atol=1e-3)
    assert four.fingerprint != one.fingerprint
    with pytest.raises(ValueError, match="views must be"):
        ModelRunner("mobilenetv2", weights="random", views=3)
