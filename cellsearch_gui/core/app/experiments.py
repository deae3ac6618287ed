"""End-to-end jobs shared by the CLI and the GUI: embed, classify, evaluate, search combinations."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from cellsearch_gui import __version__
from cellsearch_gui.core.app.confidence import with_confidence
from cellsearch_gui.core.app.results import EvaluateResult, ModelAnalysis, SearchResult
from cellsearch_gui.core.app.shots import prediction_scores, score_with_shots, score_zero_shot
from cellsearch_gui.core.classify.analysis import analyse, stratified_sample
from cellsearch_gui.core.classify.combinations import Grid, search_combinations
from cellsearch_gui.core.classify.device_vote import library_calibration
from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams, Predictions
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedOptions, embed_crops
from cellsearch_gui.core.errors import DatasetError
from cellsearch_gui.core.io.dataset import (
    CropSet,
    keep_classes,
    keep_shared_classes,
    scan_class_folders,
    scan_query,
    stratified_split,
)
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.options import DeviceVote
from cellsearch_gui.core.project.library import device_note, rows_of_device
from cellsearch_gui.core.types import FeatureSet

ANALYSIS_PCA_DIMS = 100  # PCA dimensions before the cosine similarities
ANALYSIS_SIGMA_FRAC = 0.8  # RBF CKA bandwidth as a fraction of the median pairwise distance
ANALYSIS_MAX_CELLS = 2000  # stratified sample of the library (CKA is n^2)


@dataclass
class Inputs:
    reference: CropSet
    query: CropSet
    notes: list[str] = field(default_factory=list)
    reference_pixel_size: float | None = None  # um/px of each set's crops (per-folder setting)
    query_pixel_size: float | None = None


def load_inputs(reference_dir, query_dir=None, split: float | None = None, seed: int = 0,
                classes: list[str] | None = None, shared_classes: bool = False,
                query_needs_labels: bool = False) -> Inputs:
    """Reference library and query set; without a query folder, hold out a stratified split."""
    ref = scan_class_folders(reference_dir)
    if query_dir is not None:
        query = scan_query(query_dir)
    elif split:
        keep, held = stratified_split(ref.labels, split, seed)
        ref, query = ref.subset(keep), ref.subset(held)
        query.problems = []
    else:
        raise DatasetError("give a query folder (--query) or a held-out fraction of the reference (--split)")
    notes = list(ref.problems) + list(query.problems)
    if classes:
        ref, chosen_notes = keep_classes(ref, classes)
        query = query.restrict(classes) if query.labelled else query
        notes += chosen_notes
    if shared_classes and query.labelled:
        ref, query, left_out = keep_shared_classes(ref, query)
        notes += [f"class '{c}' only in one set, left out (--shared-classes)" for c in left_out]
    if len(ref) == 0:
        raise DatasetError(f"{reference_dir}: no reference images left after choosing classes")
    if len(query) == 0:
        raise DatasetError("no query images left after choosing classes")
    if query_needs_labels and not query.labelled:
        raise DatasetError(f"{query_dir}: evaluation needs labelled queries (one sub-folder per class)")
    if query.labelled:
        notes += [f"query class '{c}' has no reference cells, so it can never be predicted correctly"
                  for c in sorted(set(query.classes) - set(ref.classes))]
    return Inputs(ref, query, notes)


def embed_both(inputs: Inputs, models: list[str], cache: EmbeddingCache, options: EmbedOptions,
               token: CancelToken) -> Job[tuple[FeatureSet, FeatureSet]]:

    def for_set(pixel_size):
        return dataclasses.replace(options, prep=dataclasses.replace(options.prep, pixel_size_um=pixel_size))

    ref = yield from embed_crops(inputs.reference, models, cache, for_set(inputs.reference_pixel_size), token)
    query = yield from embed_crops(inputs.query, models, cache, for_set(inputs.query_pixel_size), token)
    if len(ref.paths) == 0:
        raise DatasetError("none of the reference images could be read: " + "; ".join(
            f"{p}: {why}" for p, why in ref.skipped[:5]))
    return ref, query


def classify_job(inputs: Inputs, models: list[str], params: EWCParams, cache: EmbeddingCache,
                 options: EmbedOptions, token: CancelToken | None = None
                 ) -> Job[tuple[FeatureSet, FeatureSet, Predictions, dict]]:
    token = token or CancelToken()
    ref, query = yield from embed_both(inputs, models, cache, options, token)
    timings = {**{f"reference_{k}": v for k, v in ref.timings_s.items()},
               **{f"query_{k}": v for k, v in query.timings_s.items()}}
    t0 = time.perf_counter()
    clf = EWCClassifier(params).fit(ref.features, ref.labels)
    timings["index_build"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds = clf.predict(query.features) if len(query.paths) else None
    timings["classify"] = time.perf_counter() - t0
    if preds is not None:  # the confidence's calibration, from this classifier (not a second index)
        t0 = time.perf_counter()
        preds = dataclasses.replace(preds, calibration=library_calibration(clf, ref.features.__getitem__))
        timings["calibration"] = time.perf_counter() - t0
    return ref, query, preds, timings


def provenance(models: list[str], ref: FeatureSet, query: FeatureSet, params: EWCParams,
               options: EmbedOptions) -> dict:
    return {
        "app_version": __version__,
        "models": models,
        "model_fingerprints": ref.fingerprints,
        "weights": options.weights,
        "per_model_l2": options.per_model_l2,
        "views": options.views,
        "preprocessing": {"reference": ref.prep, "query": query.prep,
                          "resize": "prepared crop resized to each model's input size"},
        "params": params.as_dict(),
    }


def evaluate_job(inputs: Inputs, models: list[str], params: EWCParams, cache: EmbeddingCache,
                 options: EmbedOptions, baselines: bool = False, token: CancelToken | None = None,
                 shots: int = 0, shot_seeds: list[int] | None = None,
                 device_vote: str = DeviceVote.LIBRARY.value, classify=classify_job,
                 query_device: str = "", embed=embed_both) -> Job[EvaluateResult]:
    """Score the query set; with ``shots`` > 0, the few-shot protocol (app.shots) over ``shot_seeds``; with
    ``query_device``, the library's cells of that device vote as its labelled cells (classify.device_vote).
    ``classify``: a job with ``classify_job``'s signature, ``embed`` one with ``embed_both``'s (the shots
    protocol embeds with it), e.g. the same work on a Ray cluster."""
    if shots or query_device:
        return (yield from _evaluate_with_shots(inputs, models, params, cache, options, baselines, token, shots,
                                                shot_seeds or [0], device_vote, query_device, embed))
    ref, query, preds, timings = yield from classify(inputs, models, params, cache, options, token)
    if preds is None:
        raise DatasetError("none of the query images could be read")
    preds, calibration = with_confidence(params, ref, preds)
    return EvaluateResult(**prediction_scores(preds, ref, query, baselines, calibration),
                          **provenance(models, ref, query, params, options),
                          **_run_fields(inputs, ref, query, timings))


def _run_fields(inputs: Inputs, ref: FeatureSet, query: FeatureSet, timings: dict, notes: list[str] = ()) -> dict:
    return dict(
        n_reference=len(ref.paths),
        n_query=len(query.paths),
        reference_counts={c: ref.labels.count(c) for c in sorted(set(ref.labels))},
        skipped=[{"path": p, "problem": why} for p, why in ref.skipped + query.skipped],
        notes=inputs.notes + ref.notes + list(notes),
        preprocessing_notes=[{"path": p, "note": n} for p, n in ref.prep_notes + query.prep_notes],
        timings_s=timings,
    )


def _evaluate_with_shots(inputs: Inputs, models: list[str], params: EWCParams, cache: EmbeddingCache,
                         options: EmbedOptions, baselines: bool, token: CancelToken | None, shots: int,
                         shot_seeds: list[int], device_vote: str, query_device: str = "",
                         embed=embed_both) -> Job[EvaluateResult]:
    ref, query = yield from embed(inputs, models, cache, options, token or CancelToken())
    if len(query.paths) == 0:
        raise DatasetError("none of the query images could be read")
    known = rows_of_device(ref.paths, query_device)
    device_notes = [device_note(ref.paths, query_device, known)] if query_device else []
    yield Progress("few-shot seeds", 0, 1)
    t0 = time.perf_counter()
    if shots:
        scores = score_with_shots(ref, query, params, shots, shot_seeds, baselines, device_vote, known)
    else:
        scores = score_zero_shot(ref, query, params, known, device_vote, baselines)
    scores["shot_notes"] = device_notes + scores["shot_notes"]
    timings = {**{f"reference_{k}": v for k, v in ref.timings_s.items()},
               **{f"query_{k}": v for k, v in query.timings_s.items()},
               "shots": time.perf_counter() - t0}
    yield Progress("few-shot seeds", 1, 1)
    run_fields = {**_run_fields(inputs, ref, query, timings, scores.pop("shot_notes")),
                  "n_query": scores.pop("n_query", len(query.paths))}
    return EvaluateResult(**scores, **provenance(models, ref, query, params, options), **run_fields)


def search_job(inputs: Inputs, models: list[str], grid: Grid, cache: EmbeddingCache, options: EmbedOptions,
               token: CancelToken | None = None, preps: dict | None = None) -> Job[SearchResult]:
    """Rank model subsets x hyper-parameters, and optionally x preprocessing presets, on validation cells."""

    token = token or CancelToken()
    preps = preps or {"as given": options.prep}
    rows, skipped, t0 = [], [], time.perf_counter()
    for name, prep in preps.items():
        ref, val = yield from embed_both(inputs, models, cache, dataclasses.replace(options, prep=prep), token)
        for row in (yield from search_combinations(ref, val, models, grid, token)):
            rows.append({**row, "preprocessing": name})
        skipped = ref.skipped + val.skipped
    rows.sort(key=lambda r: (-r["balanced_accuracy"], -r["macro_precision"], len(r["models"])))
    return SearchResult(
        ranking=rows,
        n_reference=len(ref.paths),
        n_validation=len(val.paths),
        models=models,
        grid={"metrics": grid.metrics, "k_min": grid.k_mins, "k_max": grid.k_maxs,
              "thresholds": grid.thresholds, "entropy_norms": grid.entropy_norms,
              "stoppings": grid.stoppings},
        preprocessing={name: prep.as_dict() for name, prep in preps.items()},
        per_model_l2=options.per_model_l2,
        skipped=[{"path": p, "problem": why} for p, why in skipped],
        notes=inputs.notes,
        timings_s={"search": time.perf_counter() - t0},
    )


def analyse_job(reference: CropSet, models: list[str], cache: EmbeddingCache, options: EmbedOptions,
                pca_dims: int = ANALYSIS_PCA_DIMS, sigma_frac: float = ANALYSIS_SIGMA_FRAC,
                max_cells: int = ANALYSIS_MAX_CELLS, token: CancelToken | None = None) -> Job[ModelAnalysis]:
    """Per-model intra/inter-class cosine similarity after PCA and RBF CKA between models on a labelled
    library (a stratified sample of at most ``max_cells`` cells)."""

    token = token or CancelToken()
    sample = reference.subset(stratified_sample(reference.labels, max_cells, options.seed))
    feats = yield from embed_crops(sample, models, cache, options, token)
    if len(feats.paths) < 3:
        raise DatasetError("the analysis needs at least three readable labelled cells")
    yield Progress("analysing", 0, 1)
    t0 = time.perf_counter()
    result = ModelAnalysis(
        **analyse(feats.per_model, feats.labels, pca_dims, sigma_frac),
        app_version=__version__,
        model_fingerprints=feats.fingerprints,
        weights=options.weights,
        class_counts={c: feats.labels.count(c) for c in sorted(set(feats.labels))},
        skipped=[{"path": p, "problem": why} for p, why in feats.skipped],
        timings_s={**feats.timings_s, "analysis": time.perf_counter() - t0},
    )
    yield Progress("analysing", 1, 1)
    return result
