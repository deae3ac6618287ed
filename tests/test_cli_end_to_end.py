"""The CLI on real PBC crops with the real offline checkpoints (small subsets to stay fast)."""

import csv
import json

import numpy as np
import pytest
from conftest import PBC, WBC5, make_subset, needs_shared
from PIL import Image

from cellsearch_gui.cli import main

pytestmark = needs_shared
MODELS = "mobilenetv2,efficientnet_lite0"


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory):
    base = tmp_path_factory.mktemp("sets")
    ref = make_subset(PBC, base / "ref", WBC5, 12)
    query = make_subset(PBC, base / "query", WBC5, 4, offset=12)
    return ref, query


def test_evaluate_writes_the_promised_json(real_weights, small_sets, tmp_path, capsys):
    ref, query = small_sets
    out = tmp_path / "result.json"
    assert main(["evaluate", "--reference", str(ref), "--query", str(query), "--models", MODELS,
                 "--baselines", "--json", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "macro accuracy (balanced)" in printed and "macro precision" in printed
    data = json.loads(out.read_text())
    for key in ("balanced_accuracy", "macro_precision", "n_reference", "n_query", "per_class", "confusion",
                "classes", "models", "params", "timings_s", "baselines", "model_fingerprints"):
        assert key in data, key
    assert data["n_reference"] == 60 and data["n_query"] == 20
    assert data["models"] == ["mobilenetv2", "efficientnet_lite0"]
    assert data["params"] == {"metric": "l2", "k_min": 3, "k_max": 1000, "entropy_threshold": 0.3,
                              "growth": 2.0, "index": "auto", "entropy_norm": "log_k", "stopping": "lowest_entropy"}
    assert np.array(data["confusion"]).sum() == 20
    assert data["balanced_accuracy"] > 0.4  # five classes: chance is 0.2


def test_classify_csv_and_cache_reuse(real_weights, small_sets, tmp_path, monkeypatch):

    from cellsearch_gui.core.embedding import runner

    calls = []
    original = runner.ModelRunner._forward  # every forward pass goes through it
    monkeypatch.setattr(runner.ModelRunner, "_forward",
                        lambda self, batch: calls.append((self.spec.id, len(batch))) or original(self, batch))
    ref, query = small_sets
    cache = tmp_path / "cache"
    out = tmp_path / "preds.csv"
    args = ["classify", "--reference", str(ref), "--query", str(query), "--out", str(out),
            "--cache-dir", str(cache), "--quiet"]
    assert main(args + ["--models", MODELS]) == 0
    assert sum(n for m, n in calls if m == "mobilenetv2") == 80
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 20 and {"path", "predicted_label", "k_used", "entropy", "top_neighbours"} <= set(rows[0])
    assert all(r["predicted_label"] in WBC5 for r in rows)
    calls.clear()
    # a different combination re-uses the per-model cache: nothing is embedded again
    assert main(args + ["--models", "efficientnet_lite0"]) == 0
    assert main(args + ["--models", "mobilenetv2", "--per-model-l2"]) == 0
    assert calls == []


def test_search_combinations_ranks_the_power_set(real_weights, small_sets, tmp_path):
    ref, query = small_sets
    out = tmp_path / "search.json"
    assert main(["search-combinations", "--reference", str(ref), "--validation", str(query),
                 "--models", MODELS, "--metrics", "l2,cosine,canberra", "--thresholds", "0.3,0.6",
                 "--k-min", "1,3", "--json", str(out), "--quiet"]) == 0
    ranking = json.loads(out.read_text())["ranking"]
    assert len(ranking) == 3 * 3 * 2 * 2  # 3 subsets x 3 metrics x 2 thresholds x 2 k_min
    assert {tuple(r["models"]) for r in ranking} == {("mobilenetv2",), ("efficientnet_lite0",),
                                                     ("mobilenetv2", "efficientnet_lite0")}
    accs = [r["balanced_accuracy"] for r in ranking]
    assert accs == sorted(accs, reverse=True)


def test_bad_inputs_are_reported_and_the_rest_runs(real_weights, small_sets, tmp_path, capsys):
    ref, _ = small_sets
    query = tmp_path / "query"
    make_subset(PBC, query, ["neutrophil", "lymphocyte"], 3, offset=20)
    (query / "monocyte").mkdir()  # empty class folder
    (query / "neutrophil" / "notes.txt").write_text("not a picture")
    good = next((query / "neutrophil").glob("*.jpg"))
    (query / "neutrophil" / "corrupt.jpg").write_bytes(good.read_bytes()[:2000])
    (query / "lymphocyte" / "zero.png").write_bytes(b"")
    gray = np.array(Image.open(good).convert("L"))
    Image.fromarray(gray).save(query / "lymphocyte" / "gray.png")
    Image.fromarray((gray.astype(np.uint16) * 257)).save(query / "lymphocyte" / "deep16.png")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--reference", str(ref), "--query", str(query), "--models", MODELS,
                 "--json", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "monocyte' holds no images" in err
    assert "notes.txt: not an image file" in err
    assert "corrupt.jpg: corrupt or truncated" in err
    assert "zero.png: empty file" in err
    data = json.loads(out.read_text())
    assert data["n_query"] == 8  # 6 good crops + the grayscale and the 16-bit one
    assert len(data["skipped"]) == 2


def test_unknown_model_and_empty_reference_give_one_clear_line(tmp_path, capsys):
    (tmp_path / "ref" / "a").mkdir(parents=True)
    assert main(["evaluate", "--reference", str(tmp_path / "ref"), "--split", "0.2",
                 "--models", "dinov3"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: unknown model id 'dinov3'")
    assert main(["evaluate", "--reference", str(tmp_path / "ref"), "--split", "0.2",
                 "--models", "mobilenetv2"]) == 2
    assert "no labelled images found" in capsys.readouterr().err


def test_missing_weights_from_the_cli(tmp_path, capsys):
    ref = make_subset(PBC, tmp_path / "ref", ["neutrophil"], 2)
    assert main(["classify", "--reference", str(ref), "--query", str(ref), "--out",
                 str(tmp_path / "p.csv"), "--models", "mobilenetv2"]) == 2
    assert "cellsearch models import mobilenetv2 FILE" in capsys.readouterr().err


def test_models_list_and_import(tmp_path, capsys):
    from conftest import SHARED_MODELS

    assert main(["models", "list"]) == 0
    assert "missing" in capsys.readouterr().out
    assert main(["models", "import", "mobilenetv2", str(SHARED_MODELS / "mobilenet_v2_imagenet.pth")]) == 0
    assert main(["models", "import", "efficientnet_lite0",
                 str(SHARED_MODELS / "mobilenet_v2_imagenet.pth")]) == 2  # wrong file for the id
    capsys.readouterr()
    assert main(["models", "verify"]) == 0
    listing = capsys.readouterr().out
    assert "mobilenetv2" in listing and " ok " in listing and "BSD-3-Clause" in listing


def test_transfer_options_and_preprocessing_ranking(real_weights, small_sets, tmp_path, capsys):
    ref, query = small_sets
    out = tmp_path / "r.json"
    assert main(["evaluate", "--reference", str(ref), "--query", str(query), "--models", "mobilenetv2",
                 "--centre", "--scale", "cell_size", "--mask", "--colour", "device_reinhard",
                 "--entropy-norm", "log_min_kc", "--json", str(out), "--quiet"]) == 0
    data = json.loads(out.read_text())
    prep = data["preprocessing"]["reference"]
    assert prep["centre"] and prep["mask"] and prep["scale"] == "cell_size" and prep["colour"] == "device_reinhard"
    assert len(prep["device_colour"]) == 6  # each set's own colour statistics are recorded
    assert len(data["preprocessing"]["query"]["device_colour"]) == 6
    assert data["params"]["entropy_norm"] == "log_min_kc"
    capsys.readouterr()
    search = tmp_path / "s.json"
    assert main(["search-combinations", "--reference", str(ref), "--validation", str(query), "--models",
                 "mobilenetv2", "--metrics", "l2", "--thresholds", "0.3", "--entropy-norms", "log_k,log_min_kc",
                 "--preps", "raw,cell", "--json", str(search), "--quiet"]) == 0
    ranking = json.loads(search.read_text())["ranking"]
    assert {r["preprocessing"] for r in ranking} == {"raw", "cell"}
    assert {r["entropy_norm"] for r in ranking} == {"log_k", "log_min_kc"}
    assert "suggested: --models mobilenetv2" in capsys.readouterr().out
