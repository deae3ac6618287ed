"""How a model's forward pass runs on the card: channels-last weights for CNNs, SDPA (fused) attention in
the ViTs, torch.compile (optionally with CUDA graphs) for fixed batch shapes, and several models at once
on one device. Every option leaves the features equal within float tolerance (tests/test_forward_options.py);
each is measured on the GPU by ``benchmarks/bench_models.py --forward ...``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

COMPILE_MODES = ("none", "compile", "cudagraphs")  # cudagraphs: torch.compile mode 'reduce-overhead'


@dataclass(frozen=True)
class ForwardOptions:
    channels_last: bool = False  # NHWC weights and activations (CNNs on tensor cores)
    sdpa: bool | None = None  # timm ViT blocks' fused attention forced on/off; None: timm's own choice
    compile: str = "none"  # one of COMPILE_MODES; batches are padded to a fixed size so it compiles once

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")

    @property
    def fixed_batch(self) -> bool:
        return self.compile != "none"

    @classmethod
    def parse(cls, text: str) -> ForwardOptions:
        """From a ``tag()``: 'default', or parts joined by '+' (channels_last, sdpa, no_sdpa, compile,
        cudagraphs)."""
        parts = set(text.split("+")) - {"", "default"}
        unknown = parts - {"channels_last", "sdpa", "no_sdpa", *COMPILE_MODES}
        if unknown:
            raise ValueError(f"unknown forward option(s): {', '.join(sorted(unknown))}")
        sdpa = True if "sdpa" in parts else False if "no_sdpa" in parts else None
        compile_ = next((m for m in COMPILE_MODES if m in parts), "none")
        return cls("channels_last" in parts, sdpa, compile_)

    def tag(self) -> str:
        """Short text for benchmark rows ("default" for the defaults)."""
        parts = (["channels_last"] if self.channels_last else []) + {None: [], True: ["sdpa"], False: ["no_sdpa"]}[self.sdpa]
        return "+".join(parts + ([self.compile] if self.fixed_batch else [])) or "default"


def attention_modules(model) -> list:
    """timm attention blocks that have a fused-attention switch (``fused_attn``)."""
    return [m for m in model.modules() if hasattr(m, "fused_attn")]


def fused_attention_share(model) -> tuple[int, int]:
    """(blocks using SDPA, blocks with the switch): what timm already does for this model."""
    blocks = attention_modules(model)
    return sum(1 for m in blocks if m.fused_attn), len(blocks)


def prepare_model(model, options: ForwardOptions):
    """``model`` (built, on its device) with the options applied; the compiled wrapper when compiling."""
    import torch

    if options.sdpa is not None:
        for block in attention_modules(model):
            block.fused_attn = options.sdpa
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if options.compile == "compile":
        model = torch.compile(model, dynamic=False)
    elif options.compile == "cudagraphs":
        model = torch.compile(model, mode="reduce-overhead", dynamic=False)
    return model


def padded(x, size: int):
    """A batch padded with zeros to ``size`` rows (a compiled model sees one shape), and its real length."""
    import torch

    n = x.shape[0]
    if n >= size:
        return x, n
    out = torch.cat([x, x.new_zeros((size - n, *x.shape[1:]))])
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out, n


def embed_concurrently(runners: Sequence, images: list[np.ndarray]) -> list[np.ndarray]:
    """Each runner's features of ``images``, the models running at the same time on one device (a thread and,
    on CUDA, a stream each): small models leave the card idle between their kernels, which another fills."""
    import threading

    import torch

    results: list = [None] * len(runners)
    errors: list[BaseException] = []

    def one(index: int) -> None:
        runner = runners[index]
        try:
            if runner.device.startswith("cuda"):
                with torch.cuda.stream(torch.cuda.Stream(device=runner.device)):
                    results[index] = runner.embed_arrays(images)
                    torch.cuda.current_stream().synchronize()
            else:
                results[index] = runner.embed_arrays(images)
        except BaseException as exc:  # noqa: BLE001 - raised on the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(runners))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
