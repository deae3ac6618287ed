"""Builders that turn a ModelSpec into a frozen torch module mapping (B,3,H,W) images to (B,dim) features.

One builder per family, each on the family's own library code: ``timm`` (ImageNet CNNs, DINOv2, ConvNeXt,
Swin), ``sam`` (segment-anything / MobileSAM image encoders), ``open_clip`` (CLIP image towers) and
``transformers`` (ViT-MAE). ``spec.options`` are keyword arguments for the family's constructor;
``tiny_spec`` uses them to build small configurations of the same code for fast tests.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path

from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.models.checkpoints import (
    is_safetensors,
    load_state_dict,
    readable_checkpoint,
    require_weights,
)
from cellsearch_gui.core.models.loading import (
    check_loaded,
    is_counter,
    load_checkpoint_strict,
    map_state_dict,
    refuse_checkpoint,
)
from cellsearch_gui.core.models.registry import ModelSpec
from cellsearch_gui.core.models.sam_net import build_sam
from cellsearch_gui.core.options import Pool

RANDOM_INIT = "random"


# ----------------------------------------------------------------------------------------------- timm

def _classifier_prefixes(model) -> tuple[str, ...]:
    names = model.pretrained_cfg.get("classifier") or ()
    return tuple(f"{n}." for n in ((names,) if isinstance(names, str) else names))


def _load_timm(model, spec: ModelSpec, checkpoint: Path) -> None:
    """timm's own checkpoint filter (original DINOv2/ConvNeXt/Swin formats, position-embedding resampling),
    then load by name or, for torchvision checkpoints, by order; the classifier is not needed."""
    state = load_state_dict(checkpoint)
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception:  # noqa: BLE001 - not this family's format; the mapping below decides
            pass
    head = _classifier_prefixes(model)
    body = {k: v for k, v in state.items() if not k.startswith(head) and not is_counter(k)}
    if set(body) == {k for k in model.state_dict() if not k.startswith(head) and not is_counter(k)}:
        state = body  # same names, with or without the classifier
    else:
        state = map_state_dict(state, model.state_dict(), checkpoint)
    load_checkpoint_strict(model, state, spec, checkpoint, optional=head)


POOL_MODES = tuple(Pool)


def _pool_tokens(tokens, prefix: int, pool: str):
    import torch

    cls, patches = tokens[:, 0], tokens[:, prefix:]
    if pool == "cls":
        return cls
    if pool == "mean":
        return patches.mean(dim=1)
    if pool == "cls+mean":
        return torch.cat([cls, patches.mean(dim=1)], dim=1)
    raise CellSearchError(f"unknown token pooling '{pool}' (use one of {', '.join(POOL_MODES)})")


def _timm_token_model(model, pool: str):
    import torch

    class TimmTokens(torch.nn.Module):
        """A timm ViT's final normed tokens, pooled: CLS, mean patch token (registers left out) or both."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return _pool_tokens(self.model.forward_features(x), self.model.num_prefix_tokens, pool)

    return TimmTokens()


def _build_timm(spec: ModelSpec, checkpoint: Path | None, seed: int):
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(spec.arch, pretrained=False, **spec.options)
    if checkpoint is not None:
        _load_timm(model, spec, checkpoint)
    model.reset_classifier(0)
    return _timm_token_model(model, spec.pool) if spec.pool else model


# ------------------------------------------------------------------------------------------------ SAM

def _build_sam_embedder(spec: ModelSpec, checkpoint: Path | None, seed: int):
    import torch

    encoder = build_sam(spec, checkpoint if checkpoint is not None else RANDOM_INIT, seed=seed).image_encoder

    class SamEmbedder(torch.nn.Module):
        """SAM image encoder; its neck output (B,256,H/16,W/16) averaged over space."""

        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, x):
            return self.encoder(x).mean(dim=(2, 3))

    return SamEmbedder()


# ------------------------------------------------------------------------------------------ OpenCLIP

def _build_open_clip(spec: ModelSpec, checkpoint: Path | None, seed: int):
    """The CLIP image tower alone (no text tower is built); checkpoints are full OpenCLIP checkpoints
    (``visual.*`` tensors are taken) or training checkpoints with a ``state_dict``."""
    import open_clip
    import torch
    from open_clip.model import _build_vision_tower, resize_pos_embed

    options = dict(spec.options)
    cfg = open_clip.get_model_config(spec.arch)
    if cfg is None:
        raise CellSearchError(f"open_clip has no model config '{spec.arch}' (for '{spec.id}')")
    vision_cfg = {**cfg["vision_cfg"], **options.pop("vision_cfg", {})}
    embed_dim = options.pop("embed_dim", cfg["embed_dim"])
    torch.manual_seed(seed)
    holder = torch.nn.Module()
    holder.visual = _build_vision_tower(embed_dim, vision_cfg, quick_gelu=options.pop("quick_gelu", False))
    if checkpoint is not None:
        state = {k: v for k, v in load_state_dict(checkpoint).items() if k.startswith("visual.")}
        if not state:
            raise CellSearchError(f"{checkpoint}: has no image tower ('visual.*' tensors); not an OpenCLIP "
                                  f"checkpoint for '{spec.id}'")
        resize_pos_embed(state, holder)
        load_checkpoint_strict(holder, state, spec, checkpoint)
    return holder.visual


# -------------------------------------------------------------------------------------- transformers

def _load_transformers(model_class, config, checkpoint: Path, spec: ModelSpec):
    """transformers' own ``from_pretrained`` on a single weights file (it renames the saved keys to the
    current module names and strips the task prefix, e.g. ViTMAEForPreTraining's ``vit.``). Extra tensors
    (a decoder) are ignored; missing or mis-shaped ones are an error, not a silent re-initialisation."""

    from transformers.utils import logging as hf_logging

    name = "model.safetensors" if is_safetensors(readable_checkpoint(checkpoint)) else "pytorch_model.bin"
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with tempfile.TemporaryDirectory() as folder:
            try:
                os.symlink(Path(checkpoint).resolve(), Path(folder) / name)
            except OSError:  # no symlinks (Windows without developer mode)
                shutil.copyfile(checkpoint, Path(folder) / name)
            model, info = model_class.from_pretrained(folder, config=config, local_files_only=True,
                                                      output_loading_info=True)
    except Exception as exc:  # noqa: BLE001 - whatever transformers raises, the file is refused by name
        raise refuse_checkpoint(checkpoint, spec, exc) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    check_loaded(checkpoint, spec, info["missing_keys"], wrong_shape=info["mismatched_keys"])
    return model


def _build_transformers(spec: ModelSpec, checkpoint: Path | None, seed: int):
    """ViT-MAE with masking off: mask_ratio 0 keeps every patch and ``noise = arange`` keeps them in order,
    so the same image always gives the same tokens."""
    import torch
    from transformers import ViTMAEConfig, ViTMAEModel

    if spec.arch != "vit_mae":
        raise CellSearchError(f"transformers architecture '{spec.arch}' of '{spec.id}' has no builder")
    torch.manual_seed(seed)
    config = ViTMAEConfig(**{**spec.options, "mask_ratio": 0.0})
    if checkpoint is None:
        model = ViTMAEModel(config)
    else:
        model = _load_transformers(ViTMAEModel, config, checkpoint, spec)
    pool = spec.pool or "cls"

    class MaeTokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            cfg = self.model.config
            n = (x.shape[2] // cfg.patch_size) * (x.shape[3] // cfg.patch_size)
            noise = torch.arange(n, device=x.device, dtype=torch.float32).expand(x.shape[0], -1)
            out = self.model(pixel_values=x, noise=noise,
                             interpolate_pos_encoding=tuple(x.shape[2:]) != (cfg.image_size, cfg.image_size))
            return _pool_tokens(out.last_hidden_state, 1, pool)

    return MaeTokens()


BUILDERS = {"timm": _build_timm, "sam": _build_sam_embedder, "open_clip": _build_open_clip,
            "transformers": _build_transformers}


def build_model(spec: ModelSpec, checkpoint: Path | str | None = None, seed: int = 0):
    """Build the frozen feature extractor.

    ``checkpoint=None`` loads the model's weights (imported, hub cache, or downloaded unless offline; an
    error with a hint when missing); ``checkpoint=RANDOM_INIT`` gives a random-initialised network
    (explicit, for controls and tests); a path loads that file.
    """
    if checkpoint is None:
        checkpoint = require_weights(spec)
    ckpt = None if checkpoint == RANDOM_INIT else Path(checkpoint)
    try:
        builder = BUILDERS[spec.family]
    except KeyError:
        raise CellSearchError(f"model family '{spec.family}' of '{spec.id}' has no builder") from None
    try:
        model = builder(spec, ckpt, seed)
    except CellSearchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a checkpoint that breaks the family's loader is refused by name
        if ckpt is None:
            raise
        raise refuse_checkpoint(ckpt, spec, exc) from None
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def check_checkpoint_loads(spec: ModelSpec, path: Path) -> None:
    """Build the model family's network from a checkpoint file; raises when it does not fit."""
    build_model(spec, checkpoint=path)


def tiny_spec(spec: ModelSpec) -> ModelSpec:
    """A small configuration of the same family code, for fast tests: fewer layers and a small input, the
    real width (so the embedding keeps its registered dimension). MobileSAM's TinyViT only runs at 1024 px."""
    if spec.family == "timm":
        if "dinov2" in spec.arch:
            opts, size = {"img_size": 56, "depth": 1}, 56
        elif spec.arch.startswith("convnext"):
            opts, size = {"depths": (1, 1, 1, 1)}, 64
        elif spec.arch.startswith("swin"):
            opts, size = {"depths": (1, 1, 1, 1), "img_size": 64, "window_size": 2}, 64
        else:
            opts, size = {}, 64
    elif spec.family == "sam":
        if spec.arch == "vit_t":
            opts, size = {"depths": [1, 1, 1, 1]}, 1024
        else:
            opts, size = {"img_size": 64, "depth": 2, "global_attn_indexes": (1,)}, 64
    elif spec.family == "open_clip":
        import open_clip

        size = 2 * open_clip.get_model_config(spec.arch)["vision_cfg"]["patch_size"]
        opts = {"vision_cfg": {"layers": 1, "image_size": size}}
    elif spec.family == "transformers":
        opts, size = {"num_hidden_layers": 1, "image_size": 32}, 32
    else:
        raise CellSearchError(f"no tiny configuration for family '{spec.family}'")
    return dataclasses.replace(spec, options={**spec.options, **opts}, input_size=size)
