"""The differential count of a sample: cells per class as a percentage with a 95 % confidence interval, plus the
cells counted, flagged as uncertain, reviewed and corrected by a person. Pure arithmetic over labels.

A cell's class is the user's label when there is one, else the classifier's prediction. A cell is uncertain
when it has no user label and the classifier answered it uncertain (its deciding weighted vote ambiguous:
Predictions.uncertain; for runs saved before that was kept, its vote entropy at or above the threshold). A cell with neither prediction nor label is not counted; it is reported.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile


class Interval(StrEnum):
    WILSON = "wilson"  # Wilson score interval (no continuity correction)
    EXACT = "exact"  # Clopper-Pearson exact binomial: the basis of Rümke's table for 100/200-cell counts


def wilson_interval(count: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``count / total``; (0, 0) for an empty sample."""
    if total <= 0:
        return 0.0, 0.0
    p = count / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def exact_interval(count: int, total: int, alpha: float = 0.05) -> tuple[float, float]:
    """Clopper-Pearson interval from the beta distribution; (0, 0) for an empty sample."""
    if total <= 0:
        return 0.0, 0.0
    from scipy.stats import beta

    low = 0.0 if count == 0 else float(beta.ppf(alpha / 2, count, total - count + 1))
    high = 1.0 if count == total else float(beta.ppf(1 - alpha / 2, count + 1, total - count))
    return low, high


def interval(count: int, total: int, method: str = Interval.WILSON) -> tuple[float, float]:
    if method == Interval.EXACT:
        return exact_interval(count, total)
    if method == Interval.WILSON:
        return wilson_interval(count, total)
    raise ValueError(f"unknown interval '{method}'; choose one of {', '.join(Interval)}")


@dataclass(frozen=True)
class CellCall:
    """What the differential needs of one cell."""

    sample: str
    predicted: str | None
    entropy: float | None
    user_label: str | None
    flagged: bool | None = None  # the classifier's own uncertain answer (Predictions.uncertain), when known

    @property
    def final(self) -> str | None:
        return self.user_label or self.predicted

    def uncertain(self, threshold: float) -> bool:
        if self.user_label or not self.predicted:
            return False
        if self.flagged is not None:
            return self.flagged
        return self.entropy is not None and abs(self.entropy) >= threshold


@dataclass(frozen=True)
class ClassCount:
    name: str
    count: int
    percent: float  # of the counted cells
    low: float  # 95 % interval, percent
    high: float


@dataclass
class SampleDifferential:
    sample: str
    counted: int  # cells with a class (prediction or user label)
    uncertain: int  # no user label, answered uncertain by the classifier
    reviewed: int  # cells with a user label
    corrected: int  # user label differs from the prediction
    unclassified: int  # neither prediction nor user label: not counted
    classes: list[ClassCount]
    notes: list[str] = field(default_factory=list)

    def count_of(self, name: str) -> int:
        return next((c.count for c in self.classes if c.name == name), 0)


def sample_differential(sample: str, calls: list[CellCall], classes: list[str], threshold: float,
                        method: str = Interval.WILSON) -> SampleDifferential:
    """One sample's table; every class of ``classes`` appears (0 where absent), then any other label used."""
    finals = Counter(c.final for c in calls if c.final)
    counted = sum(finals.values())
    names = list(classes) + sorted(set(finals) - set(classes))
    rows = []
    for name in names:
        low, high = interval(finals[name], counted, method)
        rows.append(ClassCount(name, finals[name], 100 * finals[name] / counted if counted else 0.0,
                               100 * low, 100 * high))
    uncertain = sum(1 for c in calls if c.uncertain(threshold))
    reviewed = sum(1 for c in calls if c.user_label)
    corrected = sum(1 for c in calls if c.user_label and c.user_label != c.predicted)
    unclassified = sum(1 for c in calls if not c.final)
    result = SampleDifferential(sample, counted, uncertain, reviewed, corrected, unclassified, rows)
    result.notes = _notes(result, len(calls))
    return result


def _notes(d: SampleDifferential, cells: int) -> list[str]:
    notes = []
    if cells == 0:
        notes.append("no cells in this sample")
    elif d.counted == 0:
        notes.append("no cell of this sample has a prediction yet: run the classification")
    if d.unclassified and d.counted:
        notes.append(f"{d.unclassified} cell(s) without a prediction are not counted")
    present = [c.name for c in d.classes if c.count]
    if len(present) == 1:
        notes.append(f"every counted cell is {present[0]}")
    if 0 < d.counted < 100:
        notes.append(f"only {d.counted} cells counted: the intervals are wide (a manual differential counts 100-200)")
    return notes


def differential(calls: Iterable[CellCall], classes: list[str], threshold: float, samples: list[str] | None = None,
                 method: str = Interval.WILSON) -> list[SampleDifferential]:
    """One table per sample, in the order of ``samples`` (named samples without cells included, empty), then
    any other sample the cells name, sorted."""
    by_sample: dict[str, list[CellCall]] = {name: [] for name in samples or []}
    for call in calls:
        by_sample.setdefault(call.sample, []).append(call)
    order = list(samples or []) + sorted(set(by_sample) - set(samples or []))
    return [sample_differential(name, by_sample[name], classes, threshold, method) for name in order]
