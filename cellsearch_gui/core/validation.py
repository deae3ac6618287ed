"""The domain of every numeric and choice setting, stated once: the settings dataclasses check their fields
against it, the CLI's argument types are made from it, and the GUI's spin boxes take their ranges from it.
A value outside its domain raises ``InvalidSetting`` with a message naming the setting, its domain and the value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from numbers import Integral, Real

from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.options import (
    VIEWS,
    CellObjects,
    ColourMode,
    Device,
    DeviceVote,
    EntropyNorm,
    FeatureStorage,
    IndexKind,
    Metric,
    Precision,
    Preset,
    QueryKind,
    ScaleMode,
    Segmenter,
    StoppingRule,
    Weights,
)


class InvalidSetting(CellSearchError, ValueError):
    """A setting outside its domain (a ValueError too, for callers that caught the older errors)."""


@dataclass(frozen=True)
class Range:
    """An int or float domain: bounds (``low_open``/``high_open`` exclude them); None allowed when ``optional``."""

    name: str
    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        lo = None if self.low is None else (">" if self.low_open else ">=") + f" {_num(self.low)}"
        hi = None if self.high is None else ("<" if self.high_open else "<=") + f" {_num(self.high)}"
        if lo and hi and not self.low_open and not self.high_open:
            return f"{what} from {_num(self.low)} to {_num(self.high)}"
        return " and ".join([f"{what} {lo}" if lo else what] + ([hi] if hi else []))

    def problem(self, value) -> str | None:
        """None when ``value`` is in the domain, else 'must be ..., got ...' (for messages)."""
        if value is None and self.optional:
            return None
        wrong = f"must be {self.describe()}, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, Real):
            return wrong
        if self.kind is int and not isinstance(value, Integral):
            return wrong
        if not math.isfinite(value):
            return wrong
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return wrong
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return wrong
        return None

    def check(self, value, error: type[Exception] = InvalidSetting):
        """``value`` unchanged when it is in the domain; else ``error`` naming the setting."""
        if (problem := self.problem(value)) is not None:
            raise error(f"{self.name} {problem}")
        return value

    def parse(self, text: str):
        """Text (a command-line value) -> a value in the domain, or InvalidSetting ('must be ...')."""
        try:
            value = self.kind(text.strip())
        except (TypeError, ValueError):
            raise InvalidSetting(f"must be {self.describe()}, got {text!r}") from None
        if (problem := self.problem(value)) is not None:
            raise InvalidSetting(problem.replace(f"got {value!r}", f"got {text!r}"))
        return value

    def spin_range(self, fallback_high: float) -> tuple[float, float]:
        """(minimum, maximum) for a spin box: open bounds nudged inside, no bound -> the fallback."""
        step = 1 if self.kind is int else 0.001
        low = 0 if self.low is None else self.low + (step if self.low_open else 0)
        high = fallback_high if self.high is None else min(fallback_high, self.high - (step if self.high_open else 0))
        return low, high


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Choice:
    """One of an option vocabulary's values."""

    name: str
    options: tuple[str, ...]
    optional: bool = False

    def problem(self, value) -> str | None:
        if (value is None and self.optional) or (isinstance(value, str) and value in self.options):
            return None
        return f"unknown {self.name} {_quote(value)}; choose one of {', '.join(self.options)}"

    def check(self, value, error: type[Exception] = InvalidSetting):
        if (problem := self.problem(value)) is not None:
            raise error(problem)
        return value

    def parse(self, text: str) -> str:
        return self.check(text.strip())


def _quote(value) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)


def choice(name: str, options: type[StrEnum], optional: bool = False) -> Choice:
    return Choice(name, tuple(member.value for member in options), optional)


# the EWC vote
K_MIN = Range("k_min", int, 1, 10**9)
K_MAX = Range("k_max", int, 1, 10**9)
ENTROPY_THRESHOLD = Range("entropy threshold", float, 0.0, 1.0)
GROWTH = Range("k growth factor", float, 1.0, 1000.0, low_open=True)
METRIC = choice("metric", Metric)
ENTROPY_NORM = choice("entropy normalisation", EntropyNorm)
STOPPING = choice("stopping rule", StoppingRule)
DEVICE_VOTE = choice("device vote", DeviceVote)
INDEX_KIND = choice("index", IndexKind)

# embedding
BATCH_SIZE = Range("batch size", int, 1, 65536, optional=True)
READ_WORKERS = Range("read workers", int, 0, 256, optional=True)  # 0: one
PREP_WORKERS = Range("crop preparation processes", int, 0, 256, optional=True)  # 0: on the reader threads
VIEW_COUNT = Choice("views", tuple(str(v) for v in VIEWS))
SEED = Range("seed", int, 0, 2**32 - 1)
PRECISION = choice("precision", Precision)
WEIGHTS = choice("weights", Weights)

# crops and segmentation
PIXEL_SIZE = Range("pixel size (um/px)", float, 0.0, 1000.0, low_open=True, optional=True)
CROP_SIZE = Range("crop size", int, 16, 4096)
CELL_FRACTION = Range("cell fraction", float, 0.0, 1.0, low_open=True)
DETAIL = Range("detail (blur sigma)", float, 0.0, 100.0)
DIAMETER_PX = Range("cell diameter (px)", float, 0.0, 10000.0, low_open=True, optional=True)
DIAMETER_UM = Range("cell diameter (um)", float, 0.0, 10000.0, low_open=True, optional=True)
AREA_FRACTION = Range("area fraction", float, 0.0, 1000.0, low_open=True)
TILE_SIZE = Range("tile size", int, 64, 65536)
OVERLAP = Range("tile overlap", int, 0, 65536, optional=True)
SCALE_MODE = choice("scale mode", ScaleMode)
COLOUR_MODE = choice("colour mode", ColourMode)
CELL_OBJECTS = choice("cell objects", CellObjects)
SEGMENTER = choice("segmenter", Segmenter)
PRESET = choice("preprocessing preset", Preset)

# experiments and the app
SPLIT = Range("split", float, 0.0, 1.0, low_open=True, high_open=True, optional=True)
TOP = Range("top", int, 0, 10**6)
SHOTS = Range("shots", int, 0)  # labelled cells per class of the new device; 0: plain evaluation
SHOT_SEEDS = Range("shot seeds", int, 0)
RAY_WORKERS = Range("ray workers", int, 1)
SHARD_SIZE = Range("shard size", int, 1)
RERANK = Range("re-rank factor", int, 0, 10_000)
PQ_BYTES = Range("PQ bytes", int, 1, 4096)
NLIST = Range("inverted lists", int, 0, 10**7)
PCA_DIMS = Range("PCA dimensions", int, 2, 100_000)
SIGMA_FRAC = Range("sigma fraction", float, 0.0, 100.0, low_open=True)
MAX_CELLS = Range("max cells", int, 2, 10**8)
QUERY_KIND = choice("query kind", QueryKind)
FEATURE_STORAGE = choice("feature storage", FeatureStorage)

_CUDA_N = re.compile(r"cuda:\d{1,3}")


def device_problem(value) -> str | None:
    """None for auto, cpu, cuda, cuda:N or mps; else the message."""
    if isinstance(value, str) and (value in {d.value for d in Device} or _CUDA_N.fullmatch(value)):
        return None
    return f"unknown device {_quote(value)}; choose auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"


def check_device(value, error: type[Exception] = InvalidSetting) -> str:
    if (problem := device_problem(value)) is not None:
        raise error(problem)
    return value


def check_views(value, error: type[Exception] = InvalidSetting) -> int:
    if isinstance(value, bool) or value not in VIEWS:
        raise error(f"views must be one of {', '.join(map(str, VIEWS))}, got {value!r}")
    return value


def check_k_pair(k_min: int, k_max: int, error: type[Exception] = InvalidSetting) -> None:
    K_MIN.check(k_min, error)
    K_MAX.check(k_max, error)
    if k_max < k_min:
        raise error(f"need k_min <= k_max, got k_min={k_min}, k_max={k_max}")
