"""DinoBloom and RedDino (issue 15, point 7): the code path with random weights in each model's hub format: hub
cache (offline) and `models import`, embeddings reproduce the donor network, `models verify` checks the file."""

import numpy as np
import pytest
import torch
from zoo_helpers import crops, hub_cache, put_in_hub_cache, tiny_registry  # noqa: F401 - fixtures

from cellsearch_gui.cli import main
from cellsearch_gui.core.embedding.runner import ModelRunner, preprocess
from cellsearch_gui.core.models.registry import get_spec

BLOOD_MODELS = ["dinobloom_s", "dinobloom_b", "reddino_s", "reddino_b"]


def _donor_file(spec, path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    donor = timm.create_model(spec.arch, pretrained=False, **spec.options).eval()
    save_file(donor.state_dict(), str(path))
    return lambda x: donor.forward_features(x)[:, 0]


def _expected(encode, images, spec):
    with torch.inference_mode():
        return encode(torch.from_numpy(np.stack([preprocess(im, spec) for im in images]))).numpy()


@pytest.mark.parametrize("model_id", BLOOD_MODELS)
def test_hub_cache_weights_load_offline_and_verify(model_id, tiny_registry, hub_cache, tmp_path, monkeypatch):
    spec = get_spec(model_id)
    assert spec.licence == "Apache-2.0" and spec.hub_id and spec.pool == "cls"
    encode = _donor_file(spec, tmp_path / "model.safetensors")
    put_in_hub_cache(hub_cache, spec.hub_id, "model.safetensors", tmp_path / "model.safetensors")
    monkeypatch.setenv("CELLSEARCH_OFFLINE", "1")
    images = crops(2, seed=4)
    got = ModelRunner(model_id).embed_arrays(images)
    assert got.shape == (2, spec.dim)
    assert np.allclose(got, _expected(encode, images, spec), atol=1e-5)
    assert main(["models", "verify", model_id]) == 0


def test_import_from_file(tiny_registry, tmp_path, capsys):
    spec = get_spec("dinobloom_s")
    encode = _donor_file(spec, tmp_path / "model.safetensors")
    assert main(["models", "import", "dinobloom_s", str(tmp_path / "model.safetensors")]) == 0
    assert "imported dinobloom_s" in capsys.readouterr().out
    images = crops(2, seed=5)
    assert np.allclose(ModelRunner("dinobloom_s").embed_arrays(images), _expected(encode, images, spec), atol=1e-5)
