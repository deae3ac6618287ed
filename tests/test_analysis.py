"""The model analysis: RBF CKA against a direct transcription of Kornblith et al.'s reference code, CKA's
invariances, linear CKA against its closed form, class separation after PCA, and the CLI command."""

import json

import numpy as np
import pytest
from zoo_helpers import tiny_registry  # noqa: F401 - fixture

from cellsearch_gui.core.classify import analysis


# --- direct numpy transcription of the CKA reference code (Kornblith et al. 2019, "cka.ipynb") ---------
def ref_gram_rbf(x, threshold=1.0):
    dot_products = x.dot(x.T)
    sq_norms = np.diag(dot_products)
    sq_distances = -2 * dot_products + sq_norms[:, None] + sq_norms[None, :]
    sq_median_distance = np.median(sq_distances)
    return np.exp(-sq_distances / (2 * threshold**2 * sq_median_distance))


def ref_center_gram(gram):
    gram = gram.copy()
    means = np.mean(gram, 0, dtype=np.float64)
    means -= np.mean(means) / 2
    gram -= means[:, None]
    gram -= means[None, :]
    return gram


def ref_cka(gram_x, gram_y):
    gram_x, gram_y = ref_center_gram(gram_x), ref_center_gram(gram_y)
    scaled_hsic = gram_x.ravel().dot(gram_y.ravel())
    return scaled_hsic / (np.linalg.norm(gram_x) * np.linalg.norm(gram_y))
# ----------------------------------------------------------------------------------------------------


@pytest.fixture
def reps():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 20))
    y = np.tanh(x @ rng.normal(size=(20, 35))) + 0.3 * rng.normal(size=(60, 35))
    return x, y


@pytest.mark.parametrize("sigma_frac", [0.2, 0.4, 0.8, 1.0])
def test_rbf_cka_matches_the_reference_transcription(reps, sigma_frac):
    x, y = reps
    ours = analysis.cka(analysis.gram_rbf(x, sigma_frac), analysis.gram_rbf(y, sigma_frac))
    ref = ref_cka(ref_gram_rbf(x, sigma_frac), ref_gram_rbf(y, sigma_frac))
    assert abs(ours - ref) < 1e-10
    assert 0 < ours < 1


def test_cka_invariances(reps):
    x, y = reps
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))
    base = analysis.cka(analysis.gram_rbf(x), analysis.gram_rbf(y))
    assert analysis.cka(analysis.gram_rbf(x), analysis.gram_rbf(x)) == pytest.approx(1.0, abs=1e-12)
    assert analysis.cka(analysis.gram_rbf(x @ q), analysis.gram_rbf(y)) == pytest.approx(base, abs=1e-10)
    assert analysis.cka(analysis.gram_rbf(7.5 * x), analysis.gram_rbf(y)) == pytest.approx(base, abs=1e-10)
    assert analysis.cka(analysis.gram_rbf(x + 3.0), analysis.gram_rbf(y)) == pytest.approx(base, abs=1e-10)
    assert analysis.cka(analysis.gram_rbf(y), analysis.gram_rbf(x)) == pytest.approx(base, abs=1e-12)
    # linear CKA shares the orthogonal and scale invariances
    lin = analysis.cka(analysis.gram_linear(x), analysis.gram_linear(y))
    assert analysis.cka(analysis.gram_linear(0.1 * x @ q), analysis.gram_linear(y)) == pytest.approx(lin, abs=1e-10)
    # but not invariance to an arbitrary linear map
    skew = rng.normal(size=(x.shape[1], x.shape[1]))
    assert abs(analysis.cka(analysis.gram_rbf(x @ skew), analysis.gram_rbf(y)) - base) > 1e-3


def test_linear_cka_equals_its_closed_form(reps):
    """Kornblith et al. eq. (5): ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) for centred X, Y."""
    x, y = reps
    xc, yc = x - x.mean(0), y - y.mean(0)
    closed = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert analysis.cka(analysis.gram_linear(x), analysis.gram_linear(y)) == pytest.approx(closed, rel=1e-10)


def test_class_similarity_after_pca():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 300)) * 5
    labels = np.repeat(["a", "b", "c"], 20)
    x = centres[np.repeat(np.arange(3), 20)] + rng.normal(size=(60, 300))
    result = analysis.class_similarity(x, labels)
    assert result["pca_dims"] == 59  # min(100, n - 1, dim)
    assert result["intra"] > 0.8 and result["inter"] < 0 and result["gap"] == result["intra"] - result["inter"]
    noise = analysis.class_similarity(rng.normal(size=(60, 300)), labels)
    assert abs(noise["intra"] - noise["inter"]) < 0.05
    assert analysis.class_similarity(x[:, :8], labels)["pca_dims"] == 8
    assert analysis.pca_reduce(x, 100).shape == (60, 59)


def test_stratified_sample_keeps_every_class():
    labels = ["a"] * 90 + ["b"] * 10
    idx = analysis.stratified_sample(labels, 20)
    picked = [labels[i] for i in idx]
    assert len(idx) == 20 and picked.count("b") == 2 and list(idx) == sorted(idx)
    assert len(analysis.stratified_sample(labels, 500)) == 100


def test_analyse_models_command(tiny_registry, tmp_path, capsys):
    from conftest import PBC, make_subset
    from PIL import Image

    from cellsearch_gui.cli import main

    if PBC.is_dir():
        ref = make_subset(PBC, tmp_path / "ref", ["lymphocyte", "neutrophil", "eosinophil"], 4)
    else:  # synthetic classes: bright, dark and striped crops
        rng = np.random.default_rng(0)
        for cls, base in (("bright", 200), ("dark", 40), ("mid", 120)):
            (tmp_path / "ref" / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray((base + rng.integers(0, 30, (48, 48, 3))).astype(np.uint8)).save(
                    tmp_path / "ref" / cls / f"{i}.png")
        ref = tmp_path / "ref"
    out = tmp_path / "analysis"
    assert main(["analyse-models", "--reference", str(ref), "--models", "convnext_base,dinov2_vits14,clip_vitb16",
                 "--random-init", "--out", str(out), "--no-cache", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "intra cos" in printed and "RBF CKA" in printed
    data = json.loads((out / "analysis.json").read_text())
    assert data["models"] == ["convnext_base", "dinov2_vits14", "clip_vitb16"] and data["n_cells"] == 12
    cka = np.array(data["cka_rbf"])
    assert cka.shape == (3, 3) and np.allclose(np.diag(cka), 1) and np.allclose(cka, cka.T)
    assert data["class_similarity"]["dinov2_vits14"]["pca_dims"] == 11
    assert data["sigma_frac"] == 0.8 and data["weights"] == "random"
    image = Image.open(out / "analysis.png")
    assert image.size[0] > 400 and image.size[1] > 300
