"""Compute devices: which one to use, which precision, and out-of-memory handling."""

from __future__ import annotations

import gc

from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.options import Precision
from cellsearch_gui.core.validation import check_device


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def check_device_available(requested: str) -> None:
    """A clear error when ``requested`` (cuda, cuda:N, mps) is not on this machine, naming what is; the
    command line checks its --device with it before any work (``pick_device`` takes any name as given)."""
    check_device(requested)
    if requested in ("auto", "cpu"):
        return
    import torch

    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    has_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if requested.startswith("cuda"):
        index = int(requested.partition(":")[2] or 0)
        if index < n_cuda:
            return
    elif requested != "mps" or has_mps:
        return
    found = ["cpu"] + [f"cuda:{i}" for i in range(n_cuda)] + (["mps"] if has_mps else [])
    raise CellSearchError(f"device '{requested}' is not available on this machine (found: {', '.join(found)}); "
                          f"use --device auto or one of those")


def pick_precision(requested: str, device: str) -> str:
    """``auto``: fp16 on CUDA (autocast; features within the tolerance tested in test_devices.py), else fp32."""
    if requested not in PRECISIONS:
        raise CellSearchError(f"precision '{requested}' is not one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    return "fp16" if device.startswith("cuda") else "fp32"


PRECISIONS = tuple(Precision)


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def free_device_memory(device: str) -> None:
    """Return a released model's GPU memory. Nothing to do on the CPU: a full gc.collect() there would
    hold Python's lock for a quarter of a second and pause the window, for no gain."""
    import torch

    if device == "cpu":
        return
    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and getattr(torch, "mps", None) is not None and torch.backends.mps.is_available():
        torch.mps.empty_cache()
