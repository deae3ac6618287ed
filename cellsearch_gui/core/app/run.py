"""One analysis as the app runs it: settings, the pipeline job (segment -> embed -> classify) and its result."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cellsearch_gui.core import validation
from cellsearch_gui.core.app.experiments import Inputs, embed_both, provenance
from cellsearch_gui.core.app.inputs import collect_query_cells
from cellsearch_gui.core.classify.ewc import PARAM_DOMAINS, EWCParams, Predictions
from cellsearch_gui.core.crops.prepare import preset
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedOptions
from cellsearch_gui.core.io.dataset import CropSet, keep_classes, load_reference
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.options import (
    VIEWS,
    CellObjects,
    FeatureStorage,
    QueryKind,
    Segmenter,
    Weights,
)
from cellsearch_gui.core.app.defaults import DEFAULT_EWC, DEFAULT_MODELS, DEFAULT_PRESET, DEVICE_VOTE_DEFAULT
from cellsearch_gui.core.classify.device_vote import DeviceAwareClassifier
from cellsearch_gui.core.project import open_project
from cellsearch_gui.core.project.arrays import load_run_arrays, save_run_arrays
from cellsearch_gui.core.project.index_file import load_index, save_index
from cellsearch_gui.core.project.library import rows_of_device
from cellsearch_gui.core.segmentation.settings import SegmentSettings, resolved_settings
from cellsearch_gui.core.types import Cell, FeatureSet



SETTINGS_VERSION = 1  # 0: settings saved before they carried a version (same fields)


@dataclass
class AnalysisSettings:
    """Everything that decides a result; saved with the project and in the app's settings."""

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    weights: str = Weights.PRETRAINED.value  # or random (controls and tests)
    params: dict = field(default_factory=lambda: DEFAULT_EWC.as_dict())  # the CLI's defaults too (app/defaults)
    preprocessing: str = DEFAULT_PRESET  # a preset of crops.prepare.PRESETS
    views: int = 1
    segmenter: str = Segmenter.AUTO.value  # SAM on a CUDA GPU, else classical (segmentation/choice.py)
    objects: str = CellObjects.NUCLEATED.value
    cell_diameter_px: float | None = None  # typical cell size in the fields; None: measured on each field
    drop_border_cells: bool = SegmentSettings.drop_border_cells  # default: kept, flagged touches_border
    query_kind: str = QueryKind.AUTO.value
    reference_pixel_size_um: float | None = None
    query_pixel_size_um: float | None = None
    batch_size: int | None = None  # None: sized to the device
    feature_storage: str = FeatureStorage.FLOAT32.value  # float16: half the disk for a run's feature arrays
    device_vote: str = DEVICE_VOTE_DEFAULT  # how cells labelled here vote (classify.device_vote)
    # the microscope the query images come from, as library.json names devices: library cells from it vote as
    # cells labelled here do ("": a device none of the library's cells come from; CLI --query-device)
    query_device: str = ""
    classes: list[str] | None = None  # the library classes the classifier is built on; None: all (CLI --classes)
    version: int = SETTINGS_VERSION

    def __post_init__(self) -> None:
        """Every field checked against its domain (core/validation.py); ``from_dict`` repairs saved ones."""
        for name, problem in _problems(asdict(self)).items():
            raise validation.InvalidSetting(f"setting {name}: {problem}")  # the first one found

    def ewc_params(self) -> EWCParams:
        known = {f.name for f in dataclasses.fields(EWCParams)}
        return EWCParams(**{k: v for k, v in self.params.items() if k in known}).validate()

    @classmethod
    def from_dict(cls, raw: dict) -> AnalysisSettings:
        """Settings saved by this or any other version: unknown fields are dropped, missing ones take their
        defaults, a value outside its domain (a preset this version lacks...) falls back to the default
        (``load`` says which); the result is current-version."""
        return cls.load(raw)[0]

    @classmethod
    def load(cls, raw: dict) -> tuple[AnalysisSettings, list[str]]:
        """``from_dict`` with a note for every saved value replaced by its default."""
        defaults = asdict(cls())
        known = set(defaults) - {"version"}
        values = {k: v for k, v in (raw if isinstance(raw, dict) else {}).items() if k in known}
        notes = []
        for name, problem in _problems(values).items():
            notes.append(f"saved setting {name}: {problem}; using the default {defaults[name]!r}")
            values[name] = defaults[name]
        if "params" in values:
            values["params"], param_notes = _repair_params(values["params"])
            notes += param_notes
        return cls(**values), notes

    def as_dict(self) -> dict:
        return asdict(self)


def embed_options(settings: AnalysisSettings, device: str) -> EmbedOptions:
    """How the analysis embeds crops (each set's pixel size is set where it is embedded: embed_both)."""
    return EmbedOptions(weights=settings.weights, device=device, batch_size=settings.batch_size,
                        prep=preset(settings.preprocessing), views=settings.views)


_FIELD_CHECKS = {
    "weights": validation.WEIGHTS.problem,
    "preprocessing": validation.PRESET.problem,
    "views": lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v in VIEWS
    else f"views must be one of {', '.join(map(str, VIEWS))}, got {v!r}",
    "segmenter": validation.SEGMENTER.problem,
    "objects": validation.CELL_OBJECTS.problem,
    "cell_diameter_px": validation.DIAMETER_PX.problem,
    "drop_border_cells": lambda v: None if isinstance(v, bool) else f"must be true or false, got {v!r}",
    "query_kind": validation.QUERY_KIND.problem,
    "reference_pixel_size_um": validation.PIXEL_SIZE.problem,
    "query_pixel_size_um": validation.PIXEL_SIZE.problem,
    "batch_size": validation.BATCH_SIZE.problem,
    "feature_storage": validation.FEATURE_STORAGE.problem,
    "device_vote": validation.DEVICE_VOTE.problem,
    "query_device": lambda v: None if isinstance(v, str) else f"must be a device name (text), got {v!r}",
    "models": lambda v: None if isinstance(v, list) and v and all(isinstance(m, str) and m for m in v)
    else f"must be a non-empty list of model ids, got {v!r}",
    "params": lambda v: None if isinstance(v, dict) else f"must be a mapping, got {v!r}",
    "classes": lambda v: None if v is None or isinstance(v, list) and v and all(isinstance(c, str) and c for c in v)
    else f"must be a non-empty list of class names or null (all classes), got {v!r}",
}


def _problems(values: dict) -> dict[str, str]:
    """{field: what is wrong} for the values outside their domain."""
    return {name: problem for name, check in _FIELD_CHECKS.items()
            if name in values and (problem := check(values[name])) is not None}


def _repair_params(params: dict) -> tuple[dict, list[str]]:
    """Saved EWC parameters without the values outside their domain (those then take EWCParams' defaults);
    a k_min > k_max pair is dropped whole."""
    kept, notes = dict(params), []
    for key, domain in PARAM_DOMAINS.items():
        if key in kept and (problem := domain.problem(kept[key])) is not None:
            notes.append(f"saved classifier setting {key}: {problem}; using the default")
            del kept[key]
    try:
        EWCParams(**{k: v for k, v in kept.items() if k in PARAM_DOMAINS})
    except validation.InvalidSetting as exc:
        notes.append(f"saved classifier settings: {exc}; using the default k_min and k_max")
        kept.pop("k_min", None)
        kept.pop("k_max", None)
    return kept, notes


@dataclass(frozen=True)
class RunPlan:
    """An immutable snapshot of what to run, taken on the GUI thread."""

    reference_dirs: tuple[str, ...]
    query_paths: tuple[str, ...]
    settings: AnalysisSettings
    work_dir: Path
    cache_dir: Path
    device: str = "auto"
    project: Path | None = None  # record cells, the run and its predictions in this project's store
    extra_references: tuple[tuple[str, str], ...] = ()  # (crop, label) of query cells added to the library


@dataclass
class AnalysisResult:
    cells: list[Cell]
    reference: FeatureSet
    query: FeatureSet
    classifier: DeviceAwareClassifier  # reads like an EWCClassifier
    predictions: Predictions
    pca_mean: np.ndarray
    pca_axes: np.ndarray  # (2, D)
    notes: list[str]
    timings_s: dict
    models: list[str]
    provenance: dict = field(default_factory=dict)

    def project(self, features: np.ndarray) -> np.ndarray:
        return features @ self.pca_axes.T - self.pca_mean @ self.pca_axes.T  # no (N, D) temporary


PCA_PLOT_SAMPLE = 20_000  # reference rows the scatter's axes are fitted on
KEPT_NEIGHBOURS = 64  # nearest references kept per query cell for the gallery (the vote uses up to k_max)


def _class_balanced(features: np.ndarray, labels: list, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the class means, and rows (at most PCA_PLOT_SAMPLE / C per class) centred on it and scaled by
    1 / sqrt(rows of their class): their covariance gives every class the same weight, so a large or far
    class (platelets in a blood library) cannot take PC 1 alone."""
    rng, values = np.random.default_rng(seed), np.asarray(labels, dtype=object)
    names = sorted(set(labels) - {None})
    quota = max(1, PCA_PLOT_SAMPLE // len(names))
    groups = [np.flatnonzero(values == name) for name in names]
    groups = [np.sort(rng.choice(g, quota, replace=False)) if len(g) > quota else g for g in groups]
    mean = np.mean([features[g].mean(axis=0, dtype=np.float64) for g in groups], axis=0).astype(np.float32)
    return mean, np.concatenate([(np.asarray(features[g], np.float32) - mean) / np.float32(np.sqrt(len(g)))
                                 for g in groups])


def pca_2d(features: np.ndarray, seed: int = 0, labels: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the two leading principal axes of the reference cells, sign fixed for stable plots; with
    ``labels``, class-balanced (``_class_balanced``; rows labelled None are left out). Fitted on at most PCA_PLOT_SAMPLE rows with a randomized
    SVD, so a 100,000-cell library takes well under a second instead of a minute and ~10 GB (a full SVD)."""
    mean = features.mean(axis=0, dtype=np.float64).astype(np.float32)
    if len(features) < 2:
        return mean, np.eye(2, features.shape[1], dtype=np.float32)
    if labels is not None and len(set(labels) - {None}) > 1:
        mean, centred = _class_balanced(features, labels, seed)
    else:
        rows = np.arange(len(features))
        if len(rows) > PCA_PLOT_SAMPLE:
            rows = np.sort(np.random.default_rng(seed).choice(len(rows), PCA_PLOT_SAMPLE, replace=False))
        centred = np.asarray(features[rows], dtype=np.float32) - mean
    if min(centred.shape) <= 256:
        axes = np.linalg.svd(centred, full_matrices=False)[2][:2]
    else:  # randomized SVD (Halko et al.): a 12-wide range sketch refined by 4 power iterations
        sketch = np.random.default_rng(seed).normal(size=(centred.shape[1], 12)).astype(np.float32)
        basis = np.linalg.qr(centred @ sketch)[0]
        for _ in range(4):
            basis = np.linalg.qr(centred @ np.linalg.qr(centred.T @ basis)[0])[0]
        axes = np.linalg.svd(basis.T @ centred, full_matrices=False)[2][:2]
    if len(axes) < 2:
        axes = np.vstack([axes, np.zeros_like(axes)])
    signs = np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])
    return mean, (axes * signs[:, None]).astype(np.float32)


def scatter_axes(reference: FeatureSet, predicted: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The scatter's PCA: class-balanced over the library classes the cells were called (every class when
    they were called fewer than two), so a class none of the cells resembles (platelets beside white cells)
    does not take PC 1 and squeeze the others into one band."""
    in_play = set(predicted) if len(set(predicted) & set(reference.labels)) > 1 else set(reference.labels)
    return pca_2d(reference.features, labels=[label if label in in_play else None for label in reference.labels])


def pipeline_job(plan: RunPlan, token: CancelToken | None = None) -> Job[AnalysisResult]:
    """Segment -> embed -> classify. With a project, the run, its cells and predictions are stored; each
    finished field and embedding batch is kept, so a killed run resumes where it stopped."""
    token = token or CancelToken()
    store = run_id = None
    if plan.project is not None:

        store = open_project(plan.project, purpose="a classification run", lock=False)
        run_id = store.start_run("classify", plan.settings.as_dict())
    try:
        result = yield from _pipeline(plan, token, store)
    except BaseException as exc:
        if store is not None:
            from cellsearch_gui.core.errors import Cancelled

            status = "cancelled" if isinstance(exc, Cancelled) else "failed"
            store.finish_run(run_id, status, notes=[str(exc)])
            store.close()
        raise
    if store is not None:

        p = result.predictions
        save_run_arrays(plan.project, run_id, result.reference, result.query, plan.settings.feature_storage)
        store.finish_run(run_id, "finished", {**result.provenance, "uncertain_cells": p.uncertain_ids(result.cells)},
                         result.notes,
                         prediction_rows(result.cells, p))
        store.close()
    return result


def cells_of(features: FeatureSet, cells: list[Cell]) -> list[Cell] | None:
    """The cell of each feature row, joined by cell id (by crop path for runs saved before feature sets kept
    ids); None when a row's cell is missing."""
    if features.cell_ids:
        by_key, keys = {c.cell_id: c for c in cells}, features.cell_ids
    else:
        by_key, keys = {c.crop_path: c for c in cells}, [str(p) for p in features.paths]
    if any(key not in by_key for key in keys):
        return None
    return [by_key[key] for key in keys]


def prediction_rows(cells: list[Cell], p: Predictions) -> list[tuple]:
    """(cell id, label, entropy, k, confidence or None) per cell, as the project keeps a run's predictions."""
    return [(c.cell_id, p.labels[i], float(p.entropy[i]), int(p.k_used[i]),
             None if p.confidence is None else float(p.confidence[i])) for i, c in enumerate(cells)]


def device_rows(ref: FeatureSet, device_crops: set[str], query_device: str = "") -> list[int]:
    """Rows of the library that are the query device's cells: labelled in this project (``device_crops``),
    or library cells whose library.json names ``query_device``."""
    from_library = set(rows_of_device(ref.paths, query_device))
    return [i for i, path in enumerate(ref.paths) if str(path) in device_crops or i in from_library]


def restore_result(store, settings: AnalysisSettings, added: dict[str, str] | None = None
                   ) -> AnalysisResult | None:
    """The last classification rebuilt from the project alone (cells, memory-mapped features, the index
    built again, ``added`` {cell id: label} query cells put back into the library), without reading an
    image; None when the run's arrays are missing or incomplete."""

    run = store.last_finished_run(kind="classify")
    if run is None:
        return None
    loaded = load_run_arrays(store.folder, run["id"])
    if loaded is None:
        return None
    ref, query = loaded
    kept = cells_of(query, store.cells())
    if kept is None:
        return None
    params = settings.ewc_params()
    in_library = {str(p) for p in ref.paths}
    extra = [i for i, c in enumerate(kept) if c.cell_id in (added or {}) and c.crop_path not in in_library]
    if extra:
        ref.append_rows(query, extra, [added[kept[i].cell_id] for i in extra])

    run_dir = store.folder / "features" / f"run-{run['id']}"
    classifier = DeviceAwareClassifier(params, settings.device_vote)
    index, note = load_index(run_dir, classifier.library.index, ref.features)
    device = {c.crop_path for c in kept if c.cell_id in (added or {})}
    classifier.fit(ref.features, ref.labels, device_rows(ref, device, settings.query_device), index)
    if index is None and not store.readonly:
        try:
            save_index(run_dir, classifier.index, ref.features)
        except (OSError, RuntimeError) as exc:
            note += f"; index not saved ({exc})"
    preds = classifier.predict(query.features, keep_neighbours=KEPT_NEIGHBOURS)
    mean, axes = scatter_axes(ref, preds.labels)
    return AnalysisResult(kept, ref, query, classifier, preds, mean, axes, [f"restored from run {run['id']}", note],
                          {}, list(ref.model_ids), run["provenance"])


def _pipeline(plan: RunPlan, token: CancelToken, store) -> Job[AnalysisResult]:
    s = plan.settings
    seg, choice = resolved_settings(SegmentSettings(  # the same rule as `segment`: auto is SAM on a CUDA GPU
        segmenter=s.segmenter, objects=s.objects, pixel_size_um=s.query_pixel_size_um,
        cell_diameter_px=s.cell_diameter_px or None, drop_border_cells=s.drop_border_cells, device=plan.device))
    if seg.segmenter == Segmenter.CLASSICAL:
        seg = dataclasses.replace(seg, device="cpu")
    cells, notes, empty_fields = yield from collect_query_cells(list(plan.query_paths), plan.work_dir, seg,
                                                                s.query_kind, token)
    if store is not None:
        store.put_cells(cells)
    reference = load_reference(plan.reference_dirs)
    reference.paths += [Path(p) for p, _ in plan.extra_references]
    reference.labels += [label for _, label in plan.extra_references]
    reference, class_notes = keep_classes(reference, s.classes)  # the classes the user ticked
    notes += class_notes
    query_crops = CropSet([Path(c.crop_path) for c in cells], [c.true_label for c in cells],
                          cell_ids=[c.cell_id for c in cells])
    inputs = Inputs(reference, query_crops, notes + reference.problems, s.reference_pixel_size_um,
                    s.query_pixel_size_um)
    options = embed_options(s, plan.device)
    cache = EmbeddingCache(plan.cache_dir)
    try:
        ref, query = yield from embed_both(inputs, s.models, cache, options, token)
    finally:
        cache.close()
    token.raise_if_cancelled()
    yield Progress("classifying", 0, 1)
    t0 = time.perf_counter()
    params = s.ewc_params()
    device = {str(p) for p, _ in plan.extra_references}  # cells labelled on the query device
    classifier = DeviceAwareClassifier(params, s.device_vote).fit(ref.features, ref.labels,
                                                                  device_rows(ref, device, s.query_device))
    kept = cells_of(query, cells)
    preds = classifier.predict(query.features, keep_neighbours=KEPT_NEIGHBOURS)
    mean, axes = scatter_axes(ref, preds.labels)
    yield Progress("classifying", 1, 1)
    notes = inputs.notes + ref.notes + [f"{p}: {why}" for p, why in ref.skipped + query.skipped]
    timings = {**ref.timings_s, "classify": time.perf_counter() - t0}

    record = {**provenance(list(s.models), ref, query, params, options),
              "segmentation": {"segmenter": seg.segmenter, "segmenter_requested": s.segmenter,
                               "segmenter_choice": choice.note, "objects": s.objects,
                               "cell_diameter_px": s.cell_diameter_px, "pixel_size_um": s.query_pixel_size_um,
                               "drop_border_cells": s.drop_border_cells, "empty_fields": empty_fields}}
    return AnalysisResult(kept, ref, query, classifier, preds, mean, axes, notes, timings, list(s.models), record)
