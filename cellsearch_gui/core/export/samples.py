"""Samples: every query cell belongs to one. A sample is a dropped folder (named after it) or a name the user
gives one or more dropped items (kept in the project's meta as {dropped path: name}). A dropped image file
belongs to the folder it is in. A cell found under no dropped item is in ``UNASSIGNED``."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.project.paths import absolute
from cellsearch_gui.core.types import Cell

SAMPLES_META = "samples"
UNASSIGNED = "(no sample)"
MAX_SAMPLE_NAME = 200


class SampleNameError(CellSearchError, ValueError):
    """A sample name that cannot be used."""


def clean_sample_name(name: str) -> str:
    """A sample name as typed, trimmed; control characters refused. Path characters are allowed: every file
    named after a sample goes through core.io.safe_paths, so it stays inside the output folder."""
    text = " ".join(str(name).split())
    if not text:
        raise SampleNameError("a sample name cannot be empty")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
        raise SampleNameError(f"a sample name cannot hold control characters: {text!r}")
    if len(text) > MAX_SAMPLE_NAME:
        raise SampleNameError(f"a sample name is at most {MAX_SAMPLE_NAME} characters")
    return text


def default_sample_name(source: str | Path) -> str:
    path = absolute(source)
    folder = path if path.is_dir() or not path.suffix else path.parent
    return folder.name or str(folder)


def named_samples(store) -> dict[str, str]:
    """{absolute dropped path: sample name} the user gave (empty without a project)."""
    if store is None:
        return {}
    raw = store.get_meta(SAMPLES_META, {})
    if not isinstance(raw, dict):
        return {}
    return {str(absolute(store.paths.from_stored(k))): str(v) for k, v in raw.items() if isinstance(v, str) and v}


def set_sample_name(store, source: str | Path, name: str | None) -> None:
    """Name the sample of one dropped item (None: back to the folder's own name)."""
    raw = store.get_meta(SAMPLES_META, {})
    raw = dict(raw) if isinstance(raw, dict) else {}
    key = store.paths.to_stored(source)
    if name:
        raw[key] = clean_sample_name(name)
    else:
        raw.pop(key, None)
    store.set_meta(SAMPLES_META, raw)


def sample_names_of(sources: list[str], named: dict[str, str]) -> dict[str, str]:
    """{absolute source path: sample name} for every dropped item, in the order dropped."""
    out = {}
    for source in sources:
        key = str(absolute(source))
        out[key] = named.get(key) or default_sample_name(source)
    return out


def _owner(path: str, roots: list[str]) -> str | None:
    """The longest dropped path that is ``path`` or a folder above it."""
    full = str(absolute(path))
    best = None
    for root in roots:
        if (full == root or full.startswith(root.rstrip(os.sep) + os.sep)) and (best is None or len(root) > len(best)):
            best = root
    return best


def assign_samples(cells: list[Cell], sources: list[str], named: dict[str, str] | None = None) -> list[str]:
    """The sample of each cell: by the dropped item its field (or its crop file) lies under."""
    names = sample_names_of(sources, named or {})
    roots = list(names)
    out = []
    for cell in cells:
        owner = None
        for path in (cell.source_image, cell.crop_path):
            if path and (owner := _owner(path, roots)):
                break
        out.append(names[owner] if owner else UNASSIGNED)
    return out


def sample_order(sources: list[str], named: dict[str, str] | None = None) -> list[str]:
    """Sample names in the order their items were dropped, each once."""
    return list(dict.fromkeys(sample_names_of(sources, named or {}).values()))
