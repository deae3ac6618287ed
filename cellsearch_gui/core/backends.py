"""Builders that turn a ModelSpec into a frozen torch module mapping (B,3,H,W) images to (B,dim) features."""

from __future__ import annotations

from pathlib import Path

from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.registry import ModelSpec
from cellsearch_gui.core.weights import load_state_dict, require_weights

RANDOM_INIT = "random"


def _skip(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def map_state_dict(source: dict, target: dict, origin: str) -> dict:
    """Match a checkpoint to a model by name, or else by order and shape (e.g. torchvision -> timm)."""
    src = {k: v for k, v in source.items() if not _skip(k)}
    tgt = {k: v for k, v in target.items() if not _skip(k)}
    if set(src) == set(tgt):
        return src
    if len(src) != len(tgt):
        raise CellSearchError(
            f"{origin}: checkpoint has {len(src)} tensors but the architecture needs {len(tgt)}; "
            "it is for a different model"
        )
    mapped = {}
    for (skey, sval), (tkey, tval) in zip(src.items(), tgt.items()):
        if tuple(sval.shape) != tuple(tval.shape):
            raise CellSearchError(
                f"{origin}: tensor '{skey}' {tuple(sval.shape)} does not fit '{tkey}' "
                f"{tuple(tval.shape)}; the checkpoint is for a different model"
            )
        mapped[tkey] = sval
    return mapped


def _build_timm(spec: ModelSpec, checkpoint: Path | None, seed: int):
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(spec.arch, pretrained=False, **spec.options)
    if checkpoint is not None:
        state = map_state_dict(load_state_dict(checkpoint), model.state_dict(), str(checkpoint))
        missing, unexpected = model.load_state_dict(state, strict=False)
        real_missing = [k for k in missing if not _skip(k)]
        if real_missing or unexpected:
            raise CellSearchError(f"{checkpoint}: does not match {spec.arch} "
                                  f"(missing {real_missing[:3]}, unexpected {unexpected[:3]})")
    model.reset_classifier(0)
    return model


BUILDERS = {"timm": _build_timm}


def build_model(spec: ModelSpec, checkpoint: Path | str | None = None, seed: int = 0):
    """Build the frozen feature extractor.

    ``checkpoint=None`` loads the imported weights (error with a hint when missing);
    ``checkpoint=RANDOM_INIT`` gives a random-initialised network (explicit, for controls and tests).
    """
    if checkpoint is None:
        checkpoint = require_weights(spec)
    ckpt = None if checkpoint == RANDOM_INIT else Path(checkpoint)
    try:
        builder = BUILDERS[spec.family]
    except KeyError:
        raise CellSearchError(f"model family '{spec.family}' of '{spec.id}' has no builder") from None
    model = builder(spec, ckpt, seed)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def check_checkpoint_loads(spec: ModelSpec, path: Path) -> None:
    """Build the model family's network from a checkpoint file; raises when it does not fit."""
    if spec.family == "sam":
        from cellsearch_gui.core.segmentation.sam import build_sam

        build_sam(spec, path)
    else:
        build_model(spec, checkpoint=path)
