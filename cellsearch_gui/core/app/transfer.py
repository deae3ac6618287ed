"""Across devices: score a reference library on another device's labelled cells, and suggest a setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cellsearch_gui.core.app.experiments import Inputs, embed_both, search_job
from cellsearch_gui.core.app.results import Suggestion, SuggestResult, TransferReport
from cellsearch_gui.core.app.run import AnalysisSettings
from cellsearch_gui.core.classify.combinations import Grid
from cellsearch_gui.core.classify.evaluation import evaluate_predictions
from cellsearch_gui.core.classify.ewc import ENTROPY_NORMS, EWCClassifier
from cellsearch_gui.core.crops.prepare import preset
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedOptions
from cellsearch_gui.core.errors import DatasetError
from cellsearch_gui.core.io.dataset import (
    CropSet,
    keep_classes,
    keep_shared_classes,
    load_reference,
    scan_class_folders,
)
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.options import Preset

SUGGEST_PRESETS = tuple(p.value for p in (Preset.RAW, Preset.CELL, Preset.CELL_DEVICE_COLOUR, Preset.CELL_CLAHE,
                                           Preset.CELL_GRAYSCALE))
MIN_LABELLED = 5


def _inputs(reference_dirs, query: CropSet, settings: AnalysisSettings) -> Inputs:
    library, chosen_notes = keep_classes(load_reference(reference_dirs), settings.classes)
    reference, query, left_out = keep_shared_classes(library, query)
    notes = chosen_notes + [f"class '{c}' is only in one set and is left out" for c in left_out]
    return Inputs(reference, query, notes, settings.reference_pixel_size_um, settings.query_pixel_size_um)


def _options(settings: AnalysisSettings, device: str, prep_name: str | None = None) -> EmbedOptions:
    return EmbedOptions(weights=settings.weights, device=device, batch_size=settings.batch_size,
                        prep=preset(prep_name or settings.preprocessing), views=settings.views)


def transfer_job(reference_dirs, query_dir: str | Path, settings: AnalysisSettings, cache_dir: Path,
                 device: str = "auto", token: CancelToken | None = None) -> Job[TransferReport]:
    """Macro accuracy/precision and per-class figures, under both stopping rules, from one embedding."""
    token = token or CancelToken()
    inputs = _inputs(reference_dirs, scan_class_folders(query_dir), settings)
    cache = EmbeddingCache(cache_dir)
    try:
        ref, query = yield from embed_both(inputs, settings.models, cache, _options(settings, device), token)
    finally:
        cache.close()
    yield Progress("scoring", 0, len(ENTROPY_NORMS))
    by_rule = {}
    for norm in ENTROPY_NORMS:
        params = dataclasses.replace(settings.ewc_params(), entropy_norm=norm)
        preds = EWCClassifier(params).fit(ref.features, ref.labels).predict(query.features)
        by_rule[norm] = {**evaluate_predictions(query.labels, preds.labels),
                         "mean_k": float(preds.k_used.mean())}
    return TransferReport(reference=list(reference_dirs), query=str(query_dir), models=settings.models,
                          preprocessing=ref.prep, params=settings.ewc_params().as_dict(), by_stopping_rule=by_rule,
                          n_reference=len(ref.paths), n_query=len(query.paths), notes=inputs.notes,
                          skipped=ref.skipped + query.skipped)


def suggest_job(reference_dirs, labelled: CropSet, settings: AnalysisSettings, cache_dir: Path,
                device: str = "auto", presets=SUGGEST_PRESETS,
                token: CancelToken | None = None) -> Job[SuggestResult]:
    """Rank preprocessing x metric x threshold x stopping rule on a handful of labelled cells of the new device.

    Returns the ranking and the best setting as AnalysisSettings fields, ready to apply."""
    if len(labelled) < MIN_LABELLED:

        raise DatasetError(f"label at least {MIN_LABELLED} cells of the new device first "
                           f"(now {len(labelled)}); more classes give a more trustworthy suggestion")
    inputs = _inputs(reference_dirs, labelled, settings)
    grid = Grid(thresholds=[0.1, 0.3, 0.5], entropy_norms=list(ENTROPY_NORMS))
    cache = EmbeddingCache(cache_dir)
    try:
        preps = {name: preset(name) for name in presets}
        result = yield from search_job(inputs, settings.models, grid, cache, _options(settings, device), token,
                                       preps)
    finally:
        cache.close()
    best = result.ranking[0]
    params = {**settings.params, "metric": best["metric"], "k_min": best["k_min"], "k_max": best["k_max"],
              "entropy_threshold": best["entropy_threshold"], "entropy_norm": best["entropy_norm"]}
    suggestion = Suggestion(preprocessing=best["preprocessing"], models=best["models"], params=params,
                            balanced_accuracy=best["balanced_accuracy"], macro_precision=best["macro_precision"],
                            n_labelled=len(inputs.query))
    return SuggestResult(**vars(result), suggestion=suggestion)
