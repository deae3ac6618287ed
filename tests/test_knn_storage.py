"""Index kinds and reduced storage keep their promises on small clustered data."""

import numpy as np
import pytest
from synthetic import SyntheticWorld, concat

from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams
from cellsearch_gui.core.errors import FeatureError
from cellsearch_gui.core.index import knn
from cellsearch_gui.core.index.knn import KnnIndex, Storage


@pytest.fixture(scope="module")
def library():
    world = SyntheticWorld(dims={"a": 96, "b": 160}, latent=12, separation=0.8, noise_rank=24)
    ref_b, ref_y = world.sample(3000, 1)
    q_b, q_y = world.sample(150, 2)
    return world, concat(ref_b), ref_y, concat(q_b), q_y


def _recall(a, b):
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b)]))


def test_storage_strings_parse_and_reject():
    assert Storage.parse("fp32") == Storage()
    assert Storage.parse("pca256+fp16") == Storage(256, "fp16")
    assert Storage.parse("sq8+pca64") == Storage(64, "sq8")
    for bad in ("fp8", "pca", "pca-3", "pcax"):
        with pytest.raises(FeatureError, match="unknown storage"):
            Storage.parse(bad)
    with pytest.raises(FeatureError, match="canberra"):
        KnnIndex(metric="canberra", storage="fp16")
    with pytest.raises(FeatureError, match="canberra"):
        KnnIndex(metric="canberra", kind="ivf")


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("storage,bound", [("fp16", 0.99), ("sq8", 0.95), ("pca64", 0.8), ("pca64+fp16", 0.8)])
def test_reduced_storage_recall_against_exact(library, metric, storage, bound):
    _, ref, _, q, _ = library
    d0, exact = KnnIndex(metric=metric, kind="flat").build(ref).search(q, 100)
    index = KnnIndex(metric=metric, kind="flat", storage=storage).build(ref)
    d, approx = index.search(q, 100)
    assert _recall(exact, approx) >= bound
    assert index.refs is None and index.size == len(ref) and index.dim == ref.shape[1]
    assert index.memory_bytes() < KnnIndex(metric=metric, kind="flat").build(ref).memory_bytes()
    # distances keep the metric's units (PCA: approximately)
    tol = 1e-2 if storage.startswith(("fp16",)) else 0.25
    assert np.median(np.abs(d - d0) / np.maximum(d0, 1e-6)) <= tol


def test_fp16_distances_are_close_and_memory_halves(library):
    _, ref, _, q, _ = library
    exact = KnnIndex(kind="flat").build(ref)
    half = KnnIndex(kind="flat", storage="fp16").build(ref)
    d0, i0 = exact.search(q, 20)
    d1, i1 = half.search(q, 20)
    assert d1 == pytest.approx(d0, rel=2e-3)
    assert half.memory_bytes() == exact.memory_bytes() // 2


@pytest.mark.parametrize("storage", ["fp32", "pca64"])
def test_ivf_with_enough_probes_matches_exact_and_streams(library, storage):
    _, ref, _, q, _ = library
    _, exact = KnnIndex(kind="flat", storage=storage).build(ref).search(q, 50)
    ivf = KnnIndex(kind="ivf", storage=storage, nlist=16, nprobe=16).build(ref)
    assert _recall(exact, ivf.search(q, 50)[1]) >= 0.999  # all lists probed: exact within the storage
    streamed = KnnIndex(kind="ivf", storage=storage, nlist=16, nprobe=16).train(ref[:2000], len(ref))
    for start in range(0, len(ref), 700):
        streamed.add(ref[start:start + 700])
    assert streamed.size == len(ref)
    # the same vectors for fp32; a PCA fitted on the first 2000 rows only is a slightly different one
    assert _recall(exact, streamed.search(q, 50)[1]) >= (0.999 if storage == "fp32" else 0.95)
    assert _recall(exact, KnnIndex(kind="ivf", storage=storage, nlist=16, nprobe=4).build(ref).search(q, 50)[1]) < 1


def test_auto_index_is_flat_until_the_memory_bound(library, monkeypatch):
    _, ref, _, q, _ = library
    assert KnnIndex().build(ref).resolved_kind == "flat"
    monkeypatch.setattr(knn, "AUTO_FLAT_BYTES", ref.nbytes // 2)
    assert KnnIndex().build(ref).resolved_kind == "ivf"
    assert KnnIndex(metric="canberra").build(np.abs(ref)).resolved_kind == "hnsw"
    # fp16 storage halves the bytes, so the same library fits the bound as flat again
    assert KnnIndex(storage="fp16").build(ref).resolved_kind == "flat"
    d, ids = KnnIndex().build(ref).search(q, 30)
    assert ids.shape == (len(q), 30) and (np.diff(d, axis=1) >= -1e-5).all()


def test_classifier_with_reduced_storage_agrees_with_exact(library):
    world, ref, ref_y, q, _ = library
    labels = world.labels_for(ref_y)
    exact = EWCClassifier(EWCParams(k_max=300, index="flat")).fit(ref, labels).predict(q)
    for storage, bound in (("fp16", 0.98), ("pca64", 0.85)):
        pred = EWCClassifier(EWCParams(k_max=300, index="flat"), storage=storage).fit(ref, labels).predict(q)
        assert np.mean(np.array(pred.labels) == np.array(exact.labels)) >= bound


def test_empty_and_untrained_index_errors():
    with pytest.raises(FeatureError, match="build or train"):
        KnnIndex().add(np.ones((2, 3), np.float32))
    with pytest.raises(FeatureError, match="empty"):
        KnnIndex().search(np.ones((2, 3), np.float32), 1)
    with pytest.raises(FeatureError, match="PCA components"):
        KnnIndex(storage="pca8").build(np.ones((20, 4), np.float32))


@pytest.mark.parametrize("metric,kind,storage", [("l2", "flat", "fp32"), ("cosine", "flat", "pca64+fp16"),
                                                 ("l2", "ivf", "sq8"), ("canberra", "hnsw", "fp32")])
def test_save_and_load_give_the_same_search(library, tmp_path, metric, kind, storage):
    _, ref, _, q, _ = library
    built = KnnIndex(metric=metric, kind=kind, storage=storage).build(ref)
    built.save(tmp_path / "index.faiss")
    loaded = KnnIndex(metric=metric, kind=kind, storage=storage).load(tmp_path / "index.faiss", refs=ref)
    assert (loaded.size, loaded.dim, loaded.resolved_kind) == (built.size, built.dim, built.resolved_kind)
    assert (loaded.refs is None) == (built.refs is None)
    for got, want in zip(loaded.search(q, 20), built.search(q, 20)):
        assert np.array_equal(got, want)
    (tmp_path / "index.faiss").write_bytes((tmp_path / "index.faiss").read_bytes()[:100])
    with pytest.raises(FeatureError, match="index.faiss"):
        KnnIndex(metric=metric, kind=kind, storage=storage).load(tmp_path / "index.faiss")
    with pytest.raises(FeatureError, match="empty"):
        KnnIndex().save(tmp_path / "empty.faiss")
