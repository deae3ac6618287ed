"""Putting a checkpoint's tensors into a network, strictly: every tensor the network needs comes from the
checkpoint with its shape, and nothing is left over. A checkpoint for another model is an error that says
so, never a silently half-initialised network. One loader for every family (timm, OpenCLIP, SAM) and one
verdict, which transformers' own loader reports through too."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.models.registry import ModelSpec

DIFFERENT_MODEL = "the checkpoint is for a different model"


def is_counter(key: str) -> bool:
    """BatchNorm's step counters: kept by some checkpoints, dropped by others, never needed."""
    return key.endswith("num_batches_tracked")


def map_state_dict(source: dict, target: dict, origin: str | Path) -> dict:
    """Match a checkpoint to a model by name, or else by order and shape (e.g. torchvision -> timm)."""
    src = {k: v for k, v in source.items() if not is_counter(k)}
    tgt = {k: v for k, v in target.items() if not is_counter(k)}
    if set(src) == set(tgt):
        return src
    if len(src) != len(tgt):
        raise CellSearchError(f"{origin}: checkpoint has {len(src)} tensors but the architecture needs "
                              f"{len(tgt)}; it is for a different model")
    mapped = {}
    for (skey, sval), (tkey, tval) in zip(src.items(), tgt.items()):
        if tuple(sval.shape) != tuple(tval.shape):
            raise CellSearchError(f"{origin}: tensor '{skey}' {tuple(sval.shape)} does not fit '{tkey}' "
                                  f"{tuple(tval.shape)}; {DIFFERENT_MODEL}")
        mapped[tkey] = sval
    return mapped


def refuse_unfit(origin: str | Path, spec: ModelSpec, exc: Exception, last_line: bool = True) -> CellSearchError:
    """The error for a checkpoint the loader itself rejected (mis-shaped tensors)."""
    lines = str(exc).strip().splitlines() or [exc.__class__.__name__]
    detail = (lines[-1] if last_line else lines[0]).strip()[:200]
    return CellSearchError(f"{origin}: does not fit '{spec.id}' ({detail}); {DIFFERENT_MODEL}")


UNREADABLE = ("UnpicklingError", "PickleError", "SafetensorError", "HeaderTooLarge", "InvalidHeader",
              "BadZipFile", "EOFError")


def refuse_checkpoint(origin: str | Path, spec: ModelSpec, exc: Exception) -> CellSearchError:
    """The error for any failure while a family's loader read ``origin``: an unreadable or refused file
    (pickled objects, damaged archive or header) or one that does not fit the network."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    text = " ".join(str(exc).split())
    if names & set(UNREADABLE) or "weights only load failed" in text.lower() or "pickle" in text.lower():
        detail = "it holds pickled objects, which are never run" if "weights only" in text.lower() else text[:160]
        return CellSearchError(f"{origin}: not a loadable tensor checkpoint for '{spec.id}' "
                               f"({exc.__class__.__name__}: {detail})")
    return refuse_unfit(origin, spec, exc, last_line=False)


def check_loaded(origin: str | Path, spec: ModelSpec, missing: Iterable[str], unexpected: Iterable[str] = (),
                 wrong_shape: Iterable[str] = (), optional: tuple[str, ...] = ()) -> None:
    """Raise unless the load was complete: no needed tensor missing (``optional`` prefixes aside, e.g. a
    classifier head that is dropped), none left over, none of the wrong shape."""
    missing = [k for k in missing if not is_counter(k) and not k.startswith(optional)]
    problems = [f"{what} {sorted(keys)[:3]}" for what, keys in
                (("missing", missing), ("unexpected", list(unexpected)), ("wrong shape", list(wrong_shape))) if keys]
    if problems:
        raise CellSearchError(f"{origin}: not a '{spec.id}' checkpoint ({', '.join(problems)}); {DIFFERENT_MODEL}")


def load_checkpoint_strict(module, state: dict, spec: ModelSpec, origin: str | Path,
                           optional: tuple[str, ...] = ()) -> None:
    """Load ``state`` into the torch ``module``, refusing anything but a complete, exact fit."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise refuse_unfit(origin, spec, exc) from None
    check_loaded(origin, spec, missing, unexpected, optional=optional)
