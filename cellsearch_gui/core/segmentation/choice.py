"""The default segmenter, one rule for the app and ``segment``: ``auto`` is prompted SAM on a CUDA GPU
(SAM ViT-B when its weights are here, else MobileSAM) and the classical segmenter on the CPU. Resolved at
run time; what actually ran is recorded (segment.json, the run's provenance and notes)."""

from __future__ import annotations

from dataclasses import dataclass

from cellsearch_gui.core.models.checkpoints import locate_weights
from cellsearch_gui.core.models.devices import pick_device
from cellsearch_gui.core.models.registry import get_spec
from cellsearch_gui.core.options import Segmenter

GPU_SEGMENTERS = (Segmenter.SAM_VIT_B, Segmenter.MOBILESAM)  # first one whose weights are here


@dataclass(frozen=True)
class SegmenterChoice:
    segmenter: str  # what runs: never ``auto``
    device: str  # where it runs (the classical segmenter: cpu)
    why: str  # one line for the notes

    @property
    def note(self) -> str:
        return f"segmenter {self.segmenter} on {self.device} ({self.why})"


def _has_weights(segmenter: str) -> bool:
    try:
        return locate_weights(get_spec(segmenter)) is not None
    except Exception:  # noqa: BLE001 - an unreadable weights folder counts as no weights
        return False


def resolve_segmenter(requested: str, device: str = "auto", checkpoint: str | None = None) -> SegmenterChoice:
    """The segmenter and device that run for ``requested`` (``auto`` resolved; others kept as given)."""
    if requested == Segmenter.CLASSICAL:
        return SegmenterChoice(Segmenter.CLASSICAL.value, "cpu", "as asked")
    picked = pick_device(device)
    if requested != Segmenter.AUTO:
        return SegmenterChoice(requested, picked, "as asked")
    if not picked.startswith("cuda"):
        return SegmenterChoice(Segmenter.CLASSICAL.value, "cpu", f"auto: no CUDA GPU ({picked})")
    for name in GPU_SEGMENTERS:
        if (checkpoint and name == Segmenter.MOBILESAM) or _has_weights(name):
            return SegmenterChoice(name.value, picked, f"auto: CUDA GPU found, {name.value} weights present")
    return SegmenterChoice(Segmenter.CLASSICAL.value, "cpu",
                           "auto: CUDA GPU found but no SAM weights (cellsearch models download mobilesam)")

