"""Reference libraries as the analysis uses them: embedding a library folder with the analysis settings, so
its stored features (project/library) are the ones a run with these settings looks up."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cellsearch_gui.core.app.run import AnalysisSettings, embed_options
from cellsearch_gui.core.embedding.cache import EmbeddingCache, default_cache_dir
from cellsearch_gui.core.jobs import CancelToken, Job
from cellsearch_gui.core.project.library import embed_library


def embed_library_job(folder, settings: AnalysisSettings, device: str = "auto", cache_dir: Path | None = None,
                      token: CancelToken | None = None) -> Job[dict]:
    """Store each model's features in the library, made exactly as a run with ``settings`` embeds its
    reference (crop preset, reference pixel size, views, weights); returns the updated library.json."""
    options = embed_options(settings, device)
    options = dataclasses.replace(options, prep=dataclasses.replace(
        options.prep, pixel_size_um=settings.reference_pixel_size_um))
    cache = EmbeddingCache(cache_dir or default_cache_dir())
    try:
        return (yield from embed_library(folder, list(settings.models), options, cache, token))
    finally:
        cache.close()
