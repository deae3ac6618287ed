"""The one default for everything that changes a prediction, shared by the CLI and the window.

Chosen on PBC and BCCD only (docs/method.md, "Defaults"): crops prepared as `cell_device_colour` (the cell
found, centred, scaled by its own size, background masked, colours matched per device), the paper's
H / log k, and when no k of the schedule gets below the threshold, the k with the least ambiguous weighted
vote instead of the last k (which can be the whole library, where every class weighs the same).
`--prep raw --stopping paper` is the paper's configuration."""

from __future__ import annotations

from cellsearch_gui.core.classify.ewc import EWCParams
from cellsearch_gui.core.options import DeviceVote, EntropyNorm, Preset, StoppingRule

DEFAULT_MODELS = ("mobilenetv2", "efficientnet_lite0")
DEFAULT_PRESET = Preset.CELL_DEVICE_COLOUR.value
DEFAULT_EWC = EWCParams(entropy_norm=EntropyNorm.LOG_K.value, stopping=StoppingRule.LOWEST_ENTROPY.value)
# cells labelled on the query device join the library and also vote alone, weighted by leave-one-out
DEVICE_VOTE_DEFAULT = DeviceVote.LOO_MIX.value
