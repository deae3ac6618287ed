"""A run's feature arrays in the project: one .npy per model and set (float32, or float16 to halve the
disk), written atomically and memory-mapped on load, so a project reopens without reading an image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cellsearch_gui.core.io.atomic import atomic_open, write_text_atomic
from cellsearch_gui.core.project.paths import PATHS_META, PROJECT_RELATIVE, ProjectPaths
from cellsearch_gui.core.types import FeatureSet, concat_blocks

ARRAYS_DIR = "features"


def save_run_arrays(folder: Path, run_id: int, reference: FeatureSet, query: FeatureSet,
                    dtype: str = "float32") -> Path:
    """Write the arrays, then manifest.json last: a run folder without a manifest is incomplete and ignored."""
    out = Path(folder) / ARRAYS_DIR / f"run-{run_id}"
    out.mkdir(parents=True, exist_ok=True)
    for kind, features in (("reference", reference), ("query", query)):
        for model, block in features.per_model.items():
            with atomic_open(out / f"{kind}.{model}.npy", "wb") as handle:
                np.save(handle, block.astype(dtype))
    stored = ProjectPaths(folder, relative=True).to_stored
    manifest = {PATHS_META: PROJECT_RELATIVE, "models": reference.model_ids, "dims": reference.dims, "per_model_l2": reference.per_model_l2,
                "fingerprints": reference.fingerprints, "dtype": dtype,
                "reference_paths": [stored(p) for p in reference.paths], "reference_labels": reference.labels,
                "query_paths": [stored(p) for p in query.paths], "prep": {"reference": reference.prep,
                                                                          "query": query.prep},
                "reference_cell_ids": reference.cell_ids, "query_cell_ids": query.cell_ids}
    write_text_atomic(out / "manifest.json", json.dumps(manifest))
    return out


def load_run_arrays(folder: Path, run_id: int) -> tuple[FeatureSet, FeatureSet] | None:
    """The run's features, memory-mapped; None when they are missing or incomplete."""
    out = Path(folder) / ARRAYS_DIR / f"run-{run_id}"
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        resolve = ProjectPaths(folder, manifest.get(PATHS_META) == PROJECT_RELATIVE).from_stored
        sets = []
        for kind, paths, labels in (("reference", manifest["reference_paths"], manifest["reference_labels"]),
                                    ("query", manifest["query_paths"], [None] * len(manifest["query_paths"]))):
            per_model = {m: np.load(out / f"{kind}.{m}.npy", mmap_mode="r") for m in manifest["models"]}
            if any(len(block) != len(paths) for block in per_model.values()):
                return None
            blocks = [np.asarray(per_model[m], dtype=np.float32) for m in manifest["models"]]
            sets.append(FeatureSet(
                paths=[Path(resolve(p)) for p in paths], labels=list(labels),
                features=concat_blocks(blocks, manifest["per_model_l2"]), model_ids=manifest["models"],
                dims=manifest["dims"], per_model_l2=manifest["per_model_l2"],
                fingerprints=manifest["fingerprints"], per_model={m: b for m, b in zip(manifest["models"], blocks)},
                prep=manifest["prep"][kind], cell_ids=list(manifest.get(f"{kind}_cell_ids", []))))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return sets[0], sets[1]
