"""MobileSAM as an embedder with its real checkpoint (../shared/models) on real PBC cell crops."""

import numpy as np
import pytest
from conftest import PBC, needs_shared

from cellsearch_gui.core.classify.analysis import class_similarity
from cellsearch_gui.core.embedding.runner import ModelRunner
from cellsearch_gui.core.io.images import read_rgb

pytestmark = needs_shared
CLASSES = ["lymphocyte", "neutrophil", "eosinophil", "erythroblast", "platelet"]


def _crops(per_class: int, classes=CLASSES):
    images, labels = [], []
    for cls in classes:
        for path in sorted((PBC / cls).iterdir())[:per_class]:
            images.append(read_rgb(path))
            labels.append(cls)
    return images, labels


def test_mobilesam_real_weights_give_a_usable_embedding_at_1024_px(real_weights):
    runner = ModelRunner("mobilesam")
    seen = []
    runner.load().encoder.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))
    images, labels = _crops(2, CLASSES[:3])  # white cells: lymphocyte, neutrophil, eosinophil
    feats = runner.embed_arrays(images)
    assert feats.shape == (6, 256) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert all(shape[1:] == (3, 1024, 1024) for shape in seen)  # the encoder ran at its native size
    assert runner.weights_id == "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
    # raw cosines are all ~0.98 (the neck's LayerNorm bias dominates the average); after centring
    # (PCA) cells of a class are more alike than cells of different classes (on 20 crops the gap is
    # smaller than random initialisation's: see the slow test and the README)
    separation = class_similarity(feats, labels)
    assert separation["intra"] > separation["inter"], separation
    random = ModelRunner("mobilesam", weights="random").embed_arrays(images[:1])
    assert not np.allclose(random, feats[:1], atol=1e-2)


@pytest.mark.slow
def test_mobilesam_real_separation_on_more_cells(real_weights):
    """20 crops: the real checkpoint's class separation next to random initialisation (printed)."""
    images, labels = _crops(4)
    real = class_similarity(ModelRunner("mobilesam").embed_arrays(images), labels)
    rand = class_similarity(ModelRunner("mobilesam", weights="random").embed_arrays(images), labels)
    print("mobilesam real", real, "random", rand)
    assert real["intra"] > real["inter"]
