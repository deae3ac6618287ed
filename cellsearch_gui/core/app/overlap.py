"""Query crops that are also reference crops (the same file, or the same bytes under another name): a score
measured on them is inflated, so evaluation warns and records it."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from cellsearch_gui.core.io.checksums import sha256_of
from cellsearch_gui.core.io.dataset import CropSet

EXAMPLES = 5  # overlapping query paths listed in the record


def _resolved(path: Path) -> str:
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):
        return str(Path(path).absolute())


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _hash(path: Path, memo: dict[str, str | None]) -> str | None:
    key = _resolved(path)
    if key not in memo:
        try:
            memo[key] = sha256_of(path)
        except OSError:
            memo[key] = None
    return memo[key]


def query_reference_overlap(reference: CropSet, query: CropSet) -> dict:
    """{query_crops, same_file, same_content, overlapping, examples}: query crops whose resolved path is a
    reference crop's, or whose bytes equal one's. Only files of a size some reference file has are hashed."""
    ref_files = {_resolved(p) for p in reference.paths}
    by_size: dict[int, list[Path]] = defaultdict(list)
    for path in reference.paths:
        if (size := _size(path)) is not None:
            by_size[size].append(path)
    memo: dict[str, str | None] = {}
    ref_hashes: dict[int, set[str]] = {}
    same_file, same_content = [], []
    for path in query.paths:
        if _resolved(path) in ref_files:
            same_file.append(str(path))
            continue
        size = _size(path)
        if size is None or size not in by_size:
            continue
        if size not in ref_hashes:
            ref_hashes[size] = {h for p in by_size[size] if (h := _hash(p, memo)) is not None}
        if _hash(path, memo) in ref_hashes[size]:
            same_content.append(str(path))
    overlapping = same_file + same_content
    return {"query_crops": len(query.paths), "same_file": len(same_file), "same_content": len(same_content),
            "overlapping": len(overlapping), "examples": overlapping[:EXAMPLES]}


def overlap_warning(overlap: dict) -> str | None:
    """The loud one-line warning for an overlap record, or None when the sets are disjoint."""
    if not overlap["overlapping"]:
        return None
    share = 100 * overlap["overlapping"] / max(1, overlap["query_crops"])
    return (f"WARNING: {overlap['overlapping']} of {overlap['query_crops']} query crops ({share:.0f} %) are also "
            f"in the reference ({overlap['same_file']} the same file, {overlap['same_content']} the same "
            f"content): they find themselves, so the scores are inflated; use a query set disjoint from the "
            f"reference, or --split")
