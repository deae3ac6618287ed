"""Typed results of the app's jobs. Each ``as_dict()`` gives the JSON the CLI writes, keys in field order."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cellsearch_gui.core.segmentation.fields import ImageResult


class JsonRecord:
    """``as_dict()`` for a result dataclass: fields in declaration order, optional ones left out when None."""

    OPTIONAL: tuple[str, ...] = ()  # keys present only when set (None: absent, as before typed results)

    def as_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.name in self.OPTIONAL:
                continue
            out[f.name] = value.as_dict() if isinstance(value, JsonRecord) else value
        return out

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]


@dataclass(frozen=True)
class EvaluateResult(JsonRecord):
    """Scores of one classification of a labelled query set, with its provenance (``cellsearch evaluate``)."""

    # scores (classify.evaluation.evaluate_predictions)
    balanced_accuracy: float
    macro_precision: float
    accuracy: float
    classes: list[str]
    confusion: list[list[int]]
    per_class: dict[str, dict[str, float]]
    # provenance (experiments.provenance)
    app_version: str
    models: list[str]
    model_fingerprints: dict[str, str]
    weights: str
    per_model_l2: bool
    views: int
    preprocessing: dict[str, Any]
    params: dict[str, Any]
    # the run
    n_reference: int
    n_query: int
    reference_counts: dict[str, int]
    mean_k: float
    mean_entropy: float
    index_kind: str
    skipped: list[dict[str, str]]
    notes: list[str]
    preprocessing_notes: list[dict[str, str]]
    timings_s: dict[str, float]
    baselines: dict[str, dict] | None = None  # with --baselines only
    # accuracy of the most confident 100/80/60/40 % of the scored cells (classify.coverage)
    coverage: dict[str, dict[str, float]] | None = None
    # cells answered uncertain (an ambiguous deciding vote: Predictions.uncertain) and the scores of each part
    certainty: dict | None = None
    # calibrated confidence (classify.calibration) against the truth: ECE, Brier, reliability, accuracy above levels
    calibration: dict | None = None
    # with --shots N only (app.shots): the scores above are means over the seeds
    shots: int | None = None
    shot_seeds: list[int] | None = None
    per_seed: list[dict[str, Any]] | None = None
    device_vote: str | None = None  # how the labelled cells voted (classify.device_vote)

    OPTIONAL = ("baselines", "coverage", "certainty", "calibration", "shots", "shot_seeds", "per_seed", "device_vote")


@dataclass(frozen=True)
class SearchResult(JsonRecord):
    """Model subsets x hyper-parameters (x crop preparations), best first (``cellsearch search-combinations``)."""

    ranking: list[dict[str, Any]]
    n_reference: int
    n_validation: int
    models: list[str]
    grid: dict[str, list]
    preprocessing: dict[str, dict[str, Any]]
    per_model_l2: bool
    skipped: list[dict[str, str]]
    notes: list[str]
    timings_s: dict[str, float]


@dataclass(frozen=True)
class Suggestion(JsonRecord):
    """The best setting on a few labelled cells of a new device, as AnalysisSettings fields plus its scores."""

    preprocessing: str
    models: list[str]
    params: dict[str, Any]
    balanced_accuracy: float
    macro_precision: float
    n_labelled: int


@dataclass(frozen=True)
class SuggestResult(SearchResult):
    suggestion: Suggestion


@dataclass(frozen=True)
class TransferReport(JsonRecord):
    """A reference library scored on another device's labelled cells under both stopping rules."""

    reference: list[str]
    query: str
    models: list[str]
    preprocessing: dict[str, Any]
    params: dict[str, Any]
    by_stopping_rule: dict[str, dict[str, Any]]
    n_reference: int
    n_query: int
    notes: list[str]
    skipped: list[tuple[str, str]]


@dataclass(frozen=True)
class ModelAnalysis(JsonRecord):
    """Class separation per model and RBF CKA between models (``cellsearch analyse-models``)."""

    # classify.analysis.analyse
    n_cells: int
    classes: list[str]
    pca_dims_max: int
    sigma_frac: float
    models: list[str]
    dims: dict[str, int]
    class_similarity: dict[str, dict[str, float]]
    cka_rbf: list[list[float]]
    # provenance and the run
    app_version: str
    model_fingerprints: dict[str, str]
    weights: str
    class_counts: dict[str, int]
    skipped: list[dict[str, str]]
    timings_s: dict[str, float]


@dataclass(frozen=True)
class SegmentSummary(JsonRecord):
    """What ``segment_images`` did (written as segment.json next to the crops)."""

    app_version: str
    settings: dict[str, Any]
    images: int
    cells: int
    per_image: list[ImageResult]
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "per_image": [dataclasses.asdict(r) for r in self.per_image]}

    @property
    def images_done(self) -> int:
        return self.images - sum(1 for r in self.per_image if r.problem)
