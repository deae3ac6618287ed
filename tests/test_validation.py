"""Validation at the boundary (issue 16, sections 6 and 7): every setting is checked against its domain in
core/validation.py, by the settings dataclasses, the CLI and the saved-settings loader; suggestions are
always valid settings. One test per finding, each failing on the code before this change."""

import json
import shutil

import pytest
from conftest import colour_class_folders

from cellsearch_gui.cli import main

pytestmark = pytest.mark.timeout(120)
CLASSES = {"red": (200, 40, 40), "blue": (40, 40, 200)}
EMBED = ["--models", "mobilenetv2", "--random-init", "--no-cache", "--quiet"]




@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    base = tmp_path_factory.mktemp("sets")
    return colour_class_folders(base / "ref", CLASSES, 4, seed=0), colour_class_folders(base / "query", CLASSES, 2, seed=1)


def run(argv: list[str]) -> int:
    """main()'s exit status, whether it returns or argparse exits."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


def last_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- 6. invalid suggestions --------------------------------------------------------------------------------

@pytest.mark.parametrize("option, value", [("--thresholds", "-1.0"), ("--entropy-norms", "bogus"),
                                           ("--metrics", "l2,bogus")])
def test_search_refuses_a_grid_value_outside_its_domain(sets, capsys, option, value):
    ref, query = sets
    assert run(["search-combinations", "--reference", ref, "--validation", query, *EMBED, option, value]) == 2
    assert option in last_error(capsys)


def test_search_with_k_min_above_every_k_max_is_an_error_not_zero_settings(sets, capsys):
    ref, query = sets
    assert run(["search-combinations", "--reference", ref, "--validation", query, *EMBED,
                "--k-min", "50", "--k-max", "10"]) == 2
    assert "k_min" in last_error(capsys)


def test_grid_refuses_invalid_values_with_a_clear_message():
    from cellsearch_gui.core.classify.combinations import Grid
    from cellsearch_gui.core.validation import InvalidSetting

    for bad in ({"thresholds": [-1.0]}, {"entropy_norms": ["bogus"]}, {"metrics": ["manhattan"]},
                {"k_mins": [0]}, {"k_mins": [50], "k_maxs": [10]}, {"thresholds": []},
                {"thresholds": [float("nan")]}, {"growth": 1.0}):
        with pytest.raises(InvalidSetting):
            Grid(**bad)
    assert Grid(k_mins=[3, 50], k_maxs=[10]).k_mins == [3, 50]  # (50, 10) is skipped, (3, 10) remains


def test_the_suggestion_is_always_a_valid_setting(sets, capsys):
    from cellsearch_gui.cli.parser import build_parser

    ref, query = sets
    assert run(["search-combinations", "--reference", ref, "--validation", query, *EMBED,
                "--thresholds", "0,1", "--k-min", "1,3", "--k-max", "2,5"]) == 0
    suggested = [line for line in capsys.readouterr().out.splitlines() if line.startswith("suggested: ")]
    flags = suggested[0].removeprefix("suggested: ").split()
    args = build_parser().parse_args(["evaluate", "--reference", str(ref), *flags])  # the CLI takes it as is
    from cellsearch_gui.cli.common import ewc_params

    assert ewc_params(args).k_min <= ewc_params(args).k_max


# --- 6. bad presets ------------------------------------------------------------------------------------------

def test_project_new_refuses_an_unknown_preset(tmp_path, capsys):
    assert run(["project", "new", tmp_path / "P", "--preprocessing", "bogus"]) == 2
    assert "--preprocessing" in last_error(capsys)
    assert not (tmp_path / "P" / "project.sqlite").exists()


def test_a_stored_bogus_value_falls_back_with_a_note():
    from cellsearch_gui.core.app.run import AnalysisSettings

    settings, notes = AnalysisSettings.load({"preprocessing": "bogus", "views": 3, "batch_size": 0,
                                             "params": {"k_min": 50, "k_max": 5, "entropy_threshold": -1}})
    assert settings.preprocessing == AnalysisSettings().preprocessing and settings.views == 1
    assert settings.batch_size is None
    assert settings.ewc_params().entropy_threshold == 0.3 and settings.ewc_params().k_min <= 1000
    text = "\n".join(notes)
    assert "preprocessing" in text and "'bogus'" in text and "views" in text and "entropy_threshold" in text
    assert AnalysisSettings.from_dict({}) == AnalysisSettings()


def test_project_classify_notes_a_stored_bogus_preset(tmp_path, capsys):
    from cellsearch_gui.core.project import open_project

    assert run(["project", "new", tmp_path / "P"]) == 0
    with open_project(tmp_path / "P") as store:
        store.set_meta("settings", {**store.get_meta("settings", {}), "preprocessing": "bogus"})
    run(["project", "info", tmp_path / "P"])
    assert "note: saved setting preprocessing: unknown preprocessing preset 'bogus'" in capsys.readouterr().err


# --- 7. tracebacks and hangs ---------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_tile_size_zero_is_refused_not_a_hang(sets, tmp_path, capsys):
    from cellsearch_gui.core.segmentation.settings import SegmentSettings
    from cellsearch_gui.core.validation import InvalidSetting

    image = sets[0] / "red" / "0.png"
    assert run(["segment", image, "--out", tmp_path / "out", "--tile-size", "0", "--quiet"]) == 2
    assert "--tile-size" in last_error(capsys)
    with pytest.raises(InvalidSetting, match="tile size"):
        SegmentSettings(tile_size=0)


@pytest.mark.parametrize("option, value", [("--crop-size", "-5"), ("--cell-diameter", "-3"),
                                           ("--cell-diameter-px", "-40"), ("--cell-diameter-px", "0")])
def test_negative_crop_size_or_diameter_is_refused(sets, tmp_path, capsys, option, value):
    image = sets[0] / "red" / "0.png"
    assert run(["segment", image, "--out", tmp_path / "out", option, value, "--quiet"]) == 2
    assert option in last_error(capsys)
    assert not (tmp_path / "out").exists()


def test_settings_dataclasses_refuse_values_outside_their_domain():
    from cellsearch_gui.core.classify.ewc import EWCParams
    from cellsearch_gui.core.crops.prepare import CropPrep
    from cellsearch_gui.core.embedding.job import EmbedOptions
    from cellsearch_gui.core.errors import FeatureError
    from cellsearch_gui.core.segmentation.settings import SegmentSettings
    from cellsearch_gui.core.validation import InvalidSetting

    for make in (lambda: CropPrep(crop_size=-5), lambda: CropPrep(detail=float("nan")),
                 lambda: CropPrep(target_pixel_size_um=0), lambda: SegmentSettings(crop_size=0),
                 lambda: SegmentSettings(cell_diameter_px=-1), lambda: SegmentSettings(device="gpu"),
                 lambda: EmbedOptions(batch_size=0), lambda: EmbedOptions(views=3),
                 lambda: EmbedOptions(device="cuda:x")):
        with pytest.raises(InvalidSetting):
            make()
    for bad in ({"entropy_threshold": -1.0}, {"entropy_norm": "bogus"}, {"k_min": 0}, {"growth": float("inf")},
                {"k_min": 5, "k_max": 3}, {"k_min": True}):
        with pytest.raises(FeatureError):
            EWCParams(**bad)


def test_a_missing_input_exits_non_zero(tmp_path, capsys):
    assert run(["segment", tmp_path / "missing.png", "--out", tmp_path / "out", "--quiet"]) == 2
    assert "missing.png" in last_error(capsys)


def test_batch_size_zero_is_refused(sets, capsys):
    ref, query = sets
    assert run(["evaluate", "--reference", ref, "--query", query, *EMBED, "--batch-size", "0"]) == 2
    assert "--batch-size" in last_error(capsys)


def test_cuda_without_a_gpu_names_what_was_found(sets, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    ref, query = sets
    assert run(["evaluate", "--reference", ref, "--query", query, *EMBED, "--device", "cuda"]) == 2
    line = last_error(capsys)
    assert "device 'cuda'" in line and "found: cpu" in line


def test_out_naming_a_directory_is_refused(sets, tmp_path, capsys):
    ref, query = sets
    (tmp_path / "folder").mkdir()
    assert run(["classify", "--reference", ref, "--query", query, *EMBED, "--out", tmp_path / "folder"]) == 2
    assert "--out" in last_error(capsys)


# --- 6. no leak warning --------------------------------------------------------------------------------------

def test_evaluate_warns_when_the_query_is_the_reference(sets, tmp_path, capsys):
    ref, _ = sets
    out = tmp_path / "r.json"
    assert run(["evaluate", "--reference", ref, "--query", ref, *EMBED, "--json", out]) == 0
    assert "WARNING: 8 of 8 query crops (100 %) are also in the reference" in capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["query_reference_overlap"]["same_file"] == 8
    assert any("scores are inflated" in note for note in data["notes"])


def test_evaluate_warns_on_copies_of_reference_files(sets, tmp_path, capsys):
    ref, query = sets
    mixed = tmp_path / "mixed"
    shutil.copytree(query, mixed)
    shutil.copy(ref / "red" / "0.png", mixed / "red" / "copy.png")  # same bytes, another name
    out = tmp_path / "r.json"
    assert run(["evaluate", "--reference", ref, "--query", mixed, *EMBED, "--json", out]) == 0
    assert "WARNING: 1 of 5 query crops" in capsys.readouterr().err
    overlap = json.loads(out.read_text())["query_reference_overlap"]
    assert overlap["same_content"] == 1 and overlap["examples"] == [str(mixed / "red" / "copy.png")]


def test_disjoint_sets_get_no_warning_and_keep_their_json_keys(sets, tmp_path, capsys):
    ref, query = sets
    out = tmp_path / "r.json"
    assert run(["evaluate", "--reference", ref, "--query", query, *EMBED, "--json", out]) == 0
    assert "WARNING" not in capsys.readouterr().err
    assert "query_reference_overlap" not in json.loads(out.read_text())


# --- the domains themselves ----------------------------------------------------------------------------------

def test_domains_describe_and_parse():
    from cellsearch_gui.core import validation as v

    assert v.K_MIN.parse("3") == 3 and v.ENTROPY_THRESHOLD.parse("0.5") == 0.5
    for domain, text in ((v.K_MIN, "0"), (v.K_MIN, "3.5"), (v.K_MIN, "abc"), (v.ENTROPY_THRESHOLD, "nan"),
                         (v.ENTROPY_THRESHOLD, "inf"), (v.SPLIT, "1"), (v.TILE_SIZE, "63"), (v.METRIC, "bogus")):
        with pytest.raises(v.InvalidSetting):
            domain.parse(text)
    assert v.SPLIT.describe() == "a number > 0 and < 1"
    assert v.K_MIN.describe() == "an integer from 1 to 1000000000"
    assert v.device_problem("cuda:1") is None and v.device_problem("cuda:") is not None
    assert issubclass(v.InvalidSetting, ValueError)


def test_device_check_names_the_gpus_found(monkeypatch):
    import torch

    from cellsearch_gui.core.errors import CellSearchError
    from cellsearch_gui.core.models.devices import check_device_available

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device_available("cuda")
    check_device_available("cuda:1")
    with pytest.raises(CellSearchError, match=r"device 'cuda:2' is not available .*found: cpu, cuda:0, cuda:1"):
        check_device_available("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CellSearchError, match=r"found: cpu"):
        check_device_available("cuda:0")
    check_device_available("cpu")
