"""SAM networks: building the image encoder and the full model from a checkpoint."""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path

from cellsearch_gui.core.models.checkpoints import load_state_dict, require_weights
from cellsearch_gui.core.models.loading import load_checkpoint_strict
from cellsearch_gui.core.models.registry import ModelSpec

_VIT_ENCODERS = {
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}

_TINY_VIT = dict(img_size=1024, in_chans=3, num_classes=1000, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
                 num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
                 drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
                 layer_lr_decay=0.8)


def _tiny_vit_class():
    """Import MobileSAM's TinyViT without letting it overwrite timm's own tiny_vit registrations."""
    from timm.models import _registry

    saved = {name: value.copy() for name, value in vars(_registry).items()
             if name.startswith("_model") and isinstance(value, (dict, set))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mobile_sam.modeling.tiny_vit_sam import TinyViT
    for name, value in saved.items():
        current = getattr(_registry, name)
        current.clear()
        current.update(value)
    return TinyViT


def _image_encoder(spec: ModelSpec):
    """The image encoder with the real settings, overridden by ``spec.options`` (tests: fewer blocks, or
    a smaller ``img_size`` for the ViTs; TinyViT only runs at 1024 px)."""
    import torch
    from segment_anything.modeling import ImageEncoderViT

    if spec.arch == "vit_t":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _tiny_vit_class()(**{**_TINY_VIT, **spec.options})
    settings = dict(img_size=1024, patch_size=16, mlp_ratio=4, qkv_bias=True, use_rel_pos=True, window_size=14,
                    out_chans=256, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), **_VIT_ENCODERS[spec.arch])
    return ImageEncoderViT(**{**settings, **spec.options})


def _assemble(encoder):
    """segment-anything's Sam around an image encoder (prompt encoder and mask decoder as in build_sam)."""
    from segment_anything.modeling import (
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    size = encoder.img_size
    return Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(size // 16, size // 16),
                                     input_image_size=(size, size), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                                 transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )


def fit_position_tables(state: dict, model) -> dict:
    """Resample a checkpoint's position tables to the encoder's input size (a ViT built for fewer than
    1024 px): the absolute position embedding bicubically, the global blocks' relative tables linearly."""
    import torch.nn.functional as F

    target = model.state_dict()
    for key, value in list(state.items()):
        want = target.get(key)
        if want is None or want.shape == value.shape:
            continue
        if key.endswith("image_encoder.pos_embed") and value.ndim == 4:  # (1, H, W, C)
            state[key] = F.interpolate(value.permute(0, 3, 1, 2).float(), size=tuple(want.shape[1:3]),
                                       mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
        elif ".attn.rel_pos_" in key and value.ndim == 2:  # (2S-1, head_dim)
            state[key] = F.interpolate(value.T[None].float(), size=want.shape[0], mode="linear",
                                       align_corners=False)[0].T
    return state


def build_sam(spec: ModelSpec, checkpoint: Path | str | None = None, device: str = "cpu", seed: int = 0):
    """segment-anything ``Sam`` for vit_t/b/l/h; ``checkpoint='random'`` gives random weights (tests)."""
    import torch

    torch.manual_seed(seed)
    model = _assemble(_image_encoder(spec))
    if checkpoint != "random":
        path = Path(checkpoint) if checkpoint else require_weights(spec)
        load_checkpoint_strict(model, fit_position_tables(load_state_dict(path), model), spec, path)
    return model.eval().to(device)
