"""Weights for the model zoo: each family's native checkpoint format goes through `cellsearch models import`
and reproduces the original network; the hub cache, offline mode and damaged downloads."""

import hashlib
import json

import numpy as np
import pytest
import torch
from zoo_helpers import crops, hub_cache, put_in_hub_cache, tiny_registry  # noqa: F401 - fixtures

from cellsearch_gui.cli import main
from cellsearch_gui.core.embedding.runner import ModelRunner, preprocess
from cellsearch_gui.core.errors import ChecksumMismatchError, WeightsMissingError
from cellsearch_gui.core.models import checkpoints, hub, install
from cellsearch_gui.core.models.registry import get_spec


def _batch(images, spec):
    return torch.from_numpy(np.stack([preprocess(im, spec) for im in images]))


def _timm_donor(spec, **extra):
    import timm

    return timm.create_model(spec.arch, pretrained=False, **{**spec.options, **extra}).eval()


def save_dinov2_safetensors(spec, path):
    """timm's hub format: model.safetensors of the timm model."""
    from safetensors.torch import save_file

    donor = _timm_donor(spec)
    save_file(donor.state_dict(), str(path))
    return lambda x: donor.forward_features(x)[:, 0]


def save_timm_pth(spec, path):
    """torch.save of a timm state dict, classifier included."""
    donor = _timm_donor(spec)
    torch.save(donor.state_dict(), path)
    donor.reset_classifier(0)
    return donor


def save_open_clip_training_checkpoint(spec, path):
    """An OpenCLIP training checkpoint: full CLIP (text tower too) under 'state_dict', DDP 'module.' keys."""
    import open_clip

    cfg = open_clip.get_model_config(spec.arch)
    vision = {**cfg["vision_cfg"], **spec.options["vision_cfg"]}
    text = {**cfg["text_cfg"], "layers": 1}
    donor = open_clip.CLIP(cfg["embed_dim"], vision, text, quick_gelu=spec.options.get("quick_gelu", False)).eval()
    torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in donor.state_dict().items()}},
               path)
    return donor.encode_image


def save_open_clip_hub_file(spec, path):
    """The hub's open_clip_pytorch_model.bin: a plain state dict of the full CLIP model."""
    import open_clip

    cfg = open_clip.get_model_config(spec.arch)
    vision = {**cfg["vision_cfg"], **spec.options["vision_cfg"]}
    donor = open_clip.CLIP(cfg["embed_dim"], vision, {**cfg["text_cfg"], "layers": 1},
                           quick_gelu=spec.options.get("quick_gelu", False)).eval()
    torch.save(donor.state_dict(), path)
    return donor.encode_image


def save_vitmae_pretrained_folder(spec, path):
    """transformers save_pretrained of ViTMAEForPreTraining (encoder under 'vit.', plus the decoder)."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    donor = ViTMAEForPreTraining(ViTMAEConfig(**spec.options, mask_ratio=0.0)).eval()
    donor.save_pretrained(path)

    def encode(x):
        n = (x.shape[2] // 16) ** 2
        noise = torch.arange(n, dtype=torch.float32).expand(x.shape[0], -1)
        return donor.vit(pixel_values=x, noise=noise).last_hidden_state[:, 1:].mean(dim=1)

    return encode


def save_sam_pth(spec, path):
    """A segment-anything checkpoint: the whole Sam (encoder, prompt encoder, mask decoder)."""
    from cellsearch_gui.core.models.sam_net import build_sam

    donor = build_sam(spec, "random", seed=7)
    torch.save(donor.state_dict(), path)
    return lambda x: donor.image_encoder(x).mean(dim=(2, 3))


NATIVE = {
    "dinov2_vits14": ("model.safetensors", save_dinov2_safetensors),
    "convnext_base": ("convnext.pth", save_timm_pth),
    "swin_base": ("swin.pth", save_timm_pth),
    "clip_vitb16": ("epoch_3.pt", save_open_clip_training_checkpoint),
    "clip_vitl14": ("open_clip_pytorch_model.bin", save_open_clip_hub_file),
    "vitmae_base": ("saved_model", save_vitmae_pretrained_folder),
    "sam_vit_b": ("sam_vit_b_01ec64.pth", save_sam_pth),
}


@pytest.mark.parametrize("model_id", sorted(NATIVE))
def test_native_checkpoint_imports_and_reproduces_the_model(model_id, tiny_registry, tmp_path, capsys):
    spec = get_spec(model_id)
    name, save = NATIVE[model_id]
    torch.manual_seed(7)
    target = tmp_path / name
    encode = save(spec, target)
    assert main(["models", "import", model_id, str(target)]) == 0
    assert f"imported {model_id}" in capsys.readouterr().out
    images = crops(2, seed=1)
    with torch.inference_mode():
        expected = encode(_batch(images, spec)).float().numpy()
    runner = ModelRunner(model_id)
    got = runner.embed_arrays(images)
    assert np.allclose(got, expected, atol=1e-5, rtol=1e-4), np.abs(got - expected).max()
    assert not np.allclose(got, ModelRunner(model_id, weights="random").embed_arrays(images), atol=1e-3)
    # no pinned sha256: the import recorded the file's own hash, `models verify` checks it
    stored = checkpoints.weights_path(spec)
    record = json.loads((checkpoints.weights_dir() / f"{stored.stem}.json").read_text())
    assert record["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest() == runner.weights_id
    assert main(["models", "verify", model_id]) == 0
    assert " ok " in capsys.readouterr().out


def test_mobilesam_checkpoint_needs_allow_unpinned_when_it_is_not_the_pinned_file(tiny_registry, tmp_path):
    spec = get_spec("mobilesam")
    encode = save_sam_pth(spec, tmp_path / "mobile_sam.pt")
    with pytest.raises(ChecksumMismatchError, match="does not match the pinned checkpoint"):
        install.import_weights("mobilesam", tmp_path / "mobile_sam.pt")
    install.import_weights("mobilesam", tmp_path / "mobile_sam.pt", allow_unpinned=True)
    image = crops(1)
    with torch.inference_mode():
        expected = encode(_batch(image, spec)).numpy()
    assert np.allclose(ModelRunner("mobilesam").embed_arrays(image), expected, atol=1e-5)


def test_position_tables_are_resampled_to_the_input_size(tiny_registry, tmp_path):
    """Released DINOv2 weights are for 518 px and SAM's for 1024 px; both load into smaller inputs."""
    import dataclasses

    from cellsearch_gui.core.models.backends import build_model
    from cellsearch_gui.core.models.sam_net import build_sam

    dino = get_spec("dinov2_vits14")  # 56 px here
    donor = _timm_donor(dino, img_size=112)
    torch.save(donor.state_dict(), tmp_path / "dino112.pth")
    model = build_model(dino, tmp_path / "dino112.pth")
    assert model.model.pos_embed.shape[1] == 1 + (56 // 14) ** 2
    random_qkv = build_model(dino, "random").model.blocks[0].attn.qkv.weight
    assert not torch.equal(model.model.blocks[0].attn.qkv.weight, random_qkv)

    sam = get_spec("sam_vit_b")  # 64 px here
    big = dataclasses.replace(sam, options={**sam.options, "img_size": 128})
    torch.save(build_sam(big, "random", seed=3).state_dict(), tmp_path / "sam128.pth")
    small = build_sam(sam, tmp_path / "sam128.pth")
    assert small.image_encoder.pos_embed.shape[1:3] == (4, 4)


def test_missing_weights_offline_say_how_to_import(monkeypatch, hub_cache, tmp_path, capsys):
    monkeypatch.setenv("CELLSEARCH_OFFLINE", "1")
    for model_id in ("dinov2_vitb14", "clip_vitl14", "vitmae_base", "sam_vit_h"):
        with pytest.raises(WeightsMissingError, match=f"offline mode is on.*cellsearch models import {model_id} FILE"):
            ModelRunner(model_id)
    monkeypatch.delenv("CELLSEARCH_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (tmp_path / "ref" / "a").mkdir(parents=True)
    from PIL import Image

    Image.fromarray(crops(1)[0]).save(tmp_path / "ref" / "a" / "x.png")
    assert main(["classify", "--reference", str(tmp_path / "ref"), "--query", str(tmp_path / "ref"), "--out",
                 str(tmp_path / "p.csv"), "--models", "convnext_base", "--offline", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "offline mode is on" in err and "cellsearch models import convnext_base FILE" in err
    assert not hub.offline_mode()  # --offline lasts for one command only


def test_hub_cache_is_used_offline_and_verified(tiny_registry, hub_cache, tmp_path, monkeypatch, capsys):
    spec = get_spec("dinov2_vits14")
    encode = save_dinov2_safetensors(spec, tmp_path / "model.safetensors")
    link = put_in_hub_cache(hub_cache, spec.hub_id, "model.safetensors", tmp_path / "model.safetensors")
    monkeypatch.setenv("CELLSEARCH_OFFLINE", "1")
    runner = ModelRunner("dinov2_vits14")
    assert runner.weights_id == link.resolve().name  # the cache's content address is the sha256
    image = crops(1)
    with torch.inference_mode():
        assert np.allclose(runner.embed_arrays(image), encode(_batch(image, spec)).numpy(), atol=1e-5)
    assert main(["models", "list"]) == 0
    assert any(line.startswith("dinov2_vits14 ") and "hub cache" in line
               for line in capsys.readouterr().out.splitlines())
    assert main(["models", "verify", "dinov2_vits14"]) == 0
    with open(link.resolve(), "r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01\x02\x03")
    assert main(["models", "verify", "dinov2_vits14"]) == 1
    assert "CHECKSUM MISMATCH" in capsys.readouterr().out


def test_imported_weights_take_precedence_over_the_hub_cache(tiny_registry, hub_cache, tmp_path):
    spec = get_spec("convnext_base")
    torch.manual_seed(1)
    save_timm_pth(spec, tmp_path / "hub.pth")
    put_in_hub_cache(hub_cache, spec.hub_id, "pytorch_model.bin", tmp_path / "hub.pth")
    torch.manual_seed(2)
    save_timm_pth(spec, tmp_path / "local.pth")
    install.import_weights("convnext_base", tmp_path / "local.pth")
    assert ModelRunner("convnext_base").weights_id == hashlib.sha256((tmp_path / "local.pth").read_bytes()).hexdigest()


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("CELLSEARCH_OFFLINE", raising=False)


def _not_on_hub():
    from huggingface_hub.errors import RemoteEntryNotFoundError

    err = RemoteEntryNotFoundError.__new__(RemoteEntryNotFoundError)
    Exception.__init__(err, "404 Entry not found")
    return err


def test_first_use_downloads_through_the_hub(tiny_registry, hub_cache, online, tmp_path, monkeypatch):
    """No local weights and online: the first ModelRunner fetches the file through huggingface_hub into its
    cache (a repository without safetensors falls back to pytorch_model.bin); the next use finds it there."""
    import huggingface_hub

    spec = get_spec("vitmae_base")
    save_vitmae_pretrained_folder(spec, tmp_path / "served")
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        if filename == "model.safetensors":
            raise _not_on_hub()
        from safetensors.torch import load_file

        torch.save(load_file(str(tmp_path / "served" / "model.safetensors")), tmp_path / "pytorch_model.bin")
        return str(put_in_hub_cache(hub_cache, repo_id, filename, tmp_path / "pytorch_model.bin"))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    first = ModelRunner("vitmae_base")
    assert calls == [("facebook/vit-mae-base", "model.safetensors"), ("facebook/vit-mae-base", "pytorch_model.bin")]
    assert first.embed_arrays(crops(1)).shape == (1, 768)
    calls.clear()
    ModelRunner("vitmae_base")
    assert calls == []  # found in the cache


def test_damaged_or_interrupted_downloads_are_never_used(tiny_registry, hub_cache, online, tmp_path, monkeypatch):
    import huggingface_hub

    spec = get_spec("swin_base")
    save_timm_pth(spec, tmp_path / "good.pth")

    def corrupt(repo_id, filename, **kwargs):  # content does not match its content address
        return str(put_in_hub_cache(hub_cache, repo_id, filename, tmp_path / "good.pth", blob_name="a" * 64))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", corrupt)
    with pytest.raises(ChecksumMismatchError, match="damaged.*deleted"):
        ModelRunner("swin_base")
    assert not list(hub_cache.rglob("a" * 64)) and hub.cached_file(spec) is None

    def interrupted(repo_id, filename, **kwargs):
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", interrupted)
    with pytest.raises(WeightsMissingError, match="nothing partial is kept.*cellsearch models import swin_base"):
        ModelRunner("swin_base")
    assert hub.cached_file(spec) is None and not checkpoints.weights_path(spec).exists()


def test_models_list_shows_every_model_with_role_and_state(capsys):
    from cellsearch_gui.core.models.registry import REGISTRY

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert set(rows) == set(REGISTRY)
    assert "segment,embed" in rows["sam_vit_h"] and "missing" in rows["clip_vitb16"]
    assert rows["dinov2_vitl14_clsmean"].split()[1:3] == ["2048", "224"]


def test_first_use_downloads_a_url_model_into_the_weights_folder(online, tmp_path, monkeypatch):
    """SAM, MobileSAM and MobileNetV2 come from a URL: fetched on first use, checked, then used."""
    import dataclasses

    import timm

    from cellsearch_gui.core.models import registry

    spec = get_spec("mobilenetv2")
    torch.save(timm.create_model(spec.arch, pretrained=False).state_dict(), tmp_path / "served.pth")
    digest = hashlib.sha256((tmp_path / "served.pth").read_bytes()).hexdigest()
    served = dataclasses.replace(spec, url=(tmp_path / "served.pth").as_uri(), sha256=digest)
    monkeypatch.setitem(registry.REGISTRY, "mobilenetv2", served)
    runner = ModelRunner("mobilenetv2")
    assert runner.weights_id == digest and checkpoints.weights_path(spec).is_file()
    assert [p.name for p in checkpoints.weights_dir().iterdir() if p.name.startswith(".")] == []  # no partial file


@pytest.mark.parametrize("source_id, target_id, save", [
    ("dinov2_vitb14", "dinov2_vits14", save_dinov2_safetensors),  # same family, other width
    ("sam_vit_b", "sam_vit_l", save_sam_pth),
    ("clip_vitb16", "clip_vitl14", save_open_clip_hub_file),
    ("convnext_base", "vitmae_base", save_timm_pth),  # another family altogether
    ("swin_base", "clip_vitb16", save_timm_pth),
])
def test_a_checkpoint_for_another_model_is_refused(source_id, target_id, save, tiny_registry, tmp_path, capsys):
    path = tmp_path / "other.pth"
    save(get_spec(source_id), path)
    assert main(["models", "import", target_id, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and ("different model" in err or "not a" in err or "not an" in err), err
    assert not checkpoints.weights_path(get_spec(target_id)).exists()
