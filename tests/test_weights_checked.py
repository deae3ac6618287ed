"""Issue 16, findings 2 and 7 (last bullet): damaged weights are refused before use, their damage never
sticks in the embedding cache, and the transformers loader refuses a malicious checkpoint with a message."""

import os
import shutil

import numpy as np
import pytest
import torch
from conftest import PBC, SHARED_MODELS, WBC5, make_subset, needs_shared
from zoo_helpers import tiny_registry  # noqa: F401 - fixture

from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedOptions, embed_crops
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.io.dataset import load_reference
from cellsearch_gui.core.jobs import run_job
from cellsearch_gui.core.models import checkpoints, install
from cellsearch_gui.core.models.registry import get_spec

MOBILENET = SHARED_MODELS / "mobilenet_v2_imagenet.pth"


def flip_4kb(path, offset: int) -> None:
    """Invert 4 KB of the file in place (a damaged sector)."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        block = handle.read(4096)
        handle.seek(offset)
        handle.write(bytes(b ^ 0xFF for b in block))


def embed(crops, cache_dir):
    cache = EmbeddingCache(cache_dir)
    try:
        return run_job(embed_crops(crops, ["mobilenetv2"], cache, EmbedOptions(device="cpu")))
    finally:
        cache.close()


@needs_shared
@pytest.mark.timeout(600)
def test_damaged_weights_are_refused_and_never_poison_the_cache(tmp_path):
    """Finding 2: 4 KB bit-flipped after a good run -> a clear error naming the file and the fix, nothing
    cached under the good key; after repair the vectors equal a clean run's."""
    crops = load_reference([make_subset(PBC, tmp_path / "ref", WBC5[:2], 2)])
    install.import_weights("mobilenetv2", MOBILENET)
    weights = checkpoints.weights_path(get_spec("mobilenetv2"))
    clean = embed(crops, tmp_path / "clean-cache").features
    good_key = embed(crops, tmp_path / "clean-cache").fingerprints["mobilenetv2"]

    stat = os.stat(weights)
    flip_4kb(weights, stat.st_size // 2)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime put back
    with pytest.raises(CellSearchError) as caught:
        embed(crops, tmp_path / "cache")
    message = str(caught.value)
    assert str(weights) in message and "damaged" in message
    assert "cellsearch models import mobilenetv2 FILE" in message
    cache = EmbeddingCache(tmp_path / "cache")
    assert cache.count(good_key) == 0 and cache.count() == 0
    cache.close()

    shutil.copyfile(MOBILENET, weights)  # repaired
    repaired = embed(crops, tmp_path / "cache")
    assert repaired.fingerprints["mobilenetv2"] == good_key
    assert np.array_equal(repaired.features, clean)


@needs_shared
@pytest.mark.timeout(300)
def test_damaged_weights_refused_by_models_verify_and_segmentation(tmp_path):
    """The same check guards SAM segmentation weights, and `models verify` shares the hashing."""
    from cellsearch_gui.core.models.sam_net import build_sam

    install.import_weights("mobilenetv2", MOBILENET)
    spec = get_spec("mobilenetv2")
    assert checkpoints.status(spec, verify=True).state == "ok"
    flip_4kb(checkpoints.weights_path(spec), 1 << 20)
    assert checkpoints.status(spec, verify=True).state == "CHECKSUM MISMATCH"

    sam = get_spec("mobilesam")
    folder = checkpoints.weights_dir()
    shutil.copyfile(SHARED_MODELS / "mobile_sam_vit_t.pt", folder / sam.filename)  # as if imported
    flip_4kb(folder / sam.filename, 4096)
    with pytest.raises(CellSearchError, match="damaged.*models import mobilesam FILE"):
        build_sam(sam)


@pytest.mark.timeout(300)
def test_transformers_loader_refuses_a_pickle_with_a_message(tmp_path, tiny_registry):
    """Finding 7 (last bullet): a malicious .bin for the transformers family -> a message naming the file,
    not an UnpicklingError traceback; the payload never runs."""
    from cellsearch_gui.core.models.backends import build_model

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "pytorch_model.bin"
    torch.save({"vit.embeddings.cls_token": Evil()}, path)
    with pytest.raises(CellSearchError) as caught:
        build_model(get_spec("vitmae_base"), checkpoint=path)
    assert str(path) in str(caught.value) and "not a loadable tensor checkpoint" in str(caught.value)
    assert caught.value.__class__ is CellSearchError and not marker.exists()

