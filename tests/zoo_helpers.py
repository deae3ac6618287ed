"""Shared pieces of the model-zoo tests: small configurations of every backend, random crops and a
Hugging Face cache laid out the way huggingface_hub writes it."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from cellsearch_gui.core.models.backends import tiny_spec
from cellsearch_gui.core.models.registry import REGISTRY

EMBEDDERS = sorted(m for m, s in REGISTRY.items() if "embed" in s.roles)


@pytest.fixture
def tiny_registry(monkeypatch):
    """Every registered model replaced by a small configuration of the same family code."""
    for model_id, spec in list(REGISTRY.items()):
        monkeypatch.setitem(REGISTRY, model_id, tiny_spec(spec))
    return REGISTRY


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache for this test (the user's cache is never read)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def crops(n: int, seed: int = 0) -> list[np.ndarray]:
    """Random uint8 RGB crops of varied shapes."""
    rng = np.random.default_rng(seed)
    shapes = [(40, 52), (70, 60), (33, 33), (90, 80)]
    return [rng.integers(0, 255, (*shapes[i % len(shapes)], 3), np.uint8) for i in range(n)]


def put_in_hub_cache(cache: Path, repo_id: str, filename: str, source: Path, blob_name: str | None = None) -> Path:
    """Store ``source`` as huggingface_hub does: blobs/<sha256>, a snapshot symlink, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    revision = "0" * 40
    digest = blob_name or hashlib.sha256(Path(source).read_bytes()).hexdigest()
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, repo / "blobs" / digest)
    link = snapshot / filename
    link.symlink_to(Path("../../blobs") / digest)
    return link
