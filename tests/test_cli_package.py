"""The CLI package (one module per command group, choices and defaults from the core), the typed job results
(their JSON keys, in order, as documented here) and versioned analysis settings."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import colour_class_folders

from cellsearch_gui.cli import build_parser, main
from cellsearch_gui.core.app.defaults import DEFAULT_EWC
from cellsearch_gui.core.app.results import (
    EvaluateResult,
    ModelAnalysis,
    SearchResult,
    SegmentSummary,
    Suggestion,
    SuggestResult,
    TransferReport,
)
from cellsearch_gui.core.app.run import SETTINGS_VERSION, AnalysisSettings
from cellsearch_gui.core.crops.prepare import CropPrep
from cellsearch_gui.core.embedding.job import EmbedOptions
from cellsearch_gui.core.options import (
    CellObjects,
    ColourMode,
    EntropyNorm,
    IndexKind,
    Metric,
    Precision,
    ScaleMode,
    values,
)
from cellsearch_gui.core.segmentation.fields import ImageResult
from cellsearch_gui.core.segmentation.settings import SegmentSettings

CLI = Path(__file__).resolve().parents[1] / "cellsearch_gui" / "cli"

# the JSON of `cellsearch evaluate --json`, key for key in the order written ("baselines" with --baselines)
EVALUATE_KEYS = ["balanced_accuracy", "macro_precision", "accuracy", "classes", "confusion", "per_class",
                 "app_version", "models", "model_fingerprints", "weights", "per_model_l2", "views", "preprocessing",
                 "params", "n_reference", "n_query", "reference_counts", "mean_k", "mean_entropy", "index_kind",
                 "skipped", "notes", "preprocessing_notes", "timings_s"]
# added after the keys above (issue 15): always "coverage" and "certainty"; with --shots N the others
EVALUATE_NEW_KEYS = ["coverage", "certainty", "calibration", "shots", "shot_seeds", "per_seed", "device_vote"]
SEARCH_KEYS = ["ranking", "n_reference", "n_validation", "models", "grid", "preprocessing", "per_model_l2",
               "skipped", "notes", "timings_s"]
ANALYSIS_KEYS = ["n_cells", "classes", "pca_dims_max", "sigma_frac", "models", "dims", "class_similarity",
                 "cka_rbf", "app_version", "model_fingerprints", "weights", "class_counts", "skipped", "timings_s"]
SEGMENT_KEYS = ["app_version", "settings", "images", "cells", "per_image", "problems"]
TRANSFER_KEYS = ["reference", "query", "models", "preprocessing", "params", "by_stopping_rule", "n_reference",
                 "n_query", "notes", "skipped"]
SUGGESTION_KEYS = ["preprocessing", "models", "params", "balanced_accuracy", "macro_precision", "n_labelled"]


def _filled(cls, **given):
    return cls(**{name: given.get(name, name) for name in cls.field_names()})


def test_result_keys_are_the_documented_ones_in_order():
    unset = dict.fromkeys(EVALUATE_NEW_KEYS)
    assert list(_filled(EvaluateResult, **{**unset, "baselines": None}).as_dict()) == EVALUATE_KEYS
    assert list(_filled(EvaluateResult, **{**unset, "baselines": {"knn5": {}}}).as_dict()) == EVALUATE_KEYS + [
        "baselines"]
    assert list(_filled(EvaluateResult).as_dict()) == EVALUATE_KEYS + ["baselines"] + EVALUATE_NEW_KEYS
    assert list(_filled(SearchResult).as_dict()) == SEARCH_KEYS
    suggestion = _filled(Suggestion)
    suggested = _filled(SuggestResult, suggestion=suggestion).as_dict()
    assert list(suggested) == SEARCH_KEYS + ["suggestion"]
    assert list(suggested["suggestion"]) == SUGGESTION_KEYS
    assert list(_filled(ModelAnalysis).as_dict()) == ANALYSIS_KEYS
    assert list(_filled(TransferReport).as_dict()) == TRANSFER_KEYS
    summary = _filled(SegmentSummary, per_image=[ImageResult("a.png", cells=3)], images=2)
    assert list(summary.as_dict()) == SEGMENT_KEYS
    assert summary.as_dict()["per_image"] == [{"path": "a.png", "cells": 3, "dropped": {}, "tiles": 0,
                                               "seconds": 0.0, "problem": None, "notes": []}]
    assert summary.images_done == 2




def test_evaluate_json_has_the_documented_keys(tmp_path):
    classes = {"red": (200, 40, 40), "blue": (40, 40, 200)}
    ref = colour_class_folders(tmp_path / "ref", classes, 4, seed=0)
    query = colour_class_folders(tmp_path / "query", classes, 2, seed=1)
    out = tmp_path / "result.json"
    assert main(["evaluate", "--reference", str(ref), "--query", str(query), "--models", "mobilenetv2",
                 "--random-init", "--no-cache", "--json", str(out), "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert list(data) == EVALUATE_KEYS + ["coverage", "certainty", "calibration"]  # issue 15
    assert data["n_reference"] == 8 and data["n_query"] == 4 and data["weights"] == "random"
    assert data["params"] == DEFAULT_EWC.as_dict() == AnalysisSettings().params  # one default (issue 15)


def _actions(parser, path=()):
    for action in parser._actions:
        if action.choices and isinstance(action.choices, dict):  # sub-commands
            for name, sub in action.choices.items():
                yield from _actions(sub, (*path, name))
        else:
            yield (*path, action.dest), action


def test_choices_come_from_the_vocabulary_and_defaults_from_the_core():
    actions = dict(_actions(build_parser()))
    ewc, prep, embed, seg = DEFAULT_EWC, CropPrep(), EmbedOptions(), SegmentSettings()
    vocab = {"metric": Metric, "entropy_norm": EntropyNorm, "index": IndexKind, "precision": Precision,
             "scale": ScaleMode, "colour": ColourMode, "find_cell": CellObjects}
    for command in ("evaluate", "classify"):
        for dest, options in vocab.items():
            assert sorted(actions[command, dest].choices) == sorted(values(options)), dest
        for dest, default in (("metric", ewc.metric), ("k_min", ewc.k_min), ("k_max", ewc.k_max),
                              ("entropy", ewc.entropy_threshold), ("entropy_norm", ewc.entropy_norm),
                              ("index", ewc.index), ("stopping", ewc.stopping), ("device", embed.device),
                              ("precision", embed.precision), ("views", embed.views),
                              ("prep", AnalysisSettings().preprocessing),
                              ("crop_target_pixel_size", prep.target_pixel_size_um)):
            assert actions[command, dest].default == default, (command, dest)
        for dest in ("centre", "scale", "mask", "colour", "find_cell", "detail"):  # one step of the preset
            assert actions[command, dest].default is None, (command, dest)
    assert actions["segment", "objects"].choices == values(CellObjects)
    for dest, default in (("segmenter", seg.segmenter), ("objects", seg.objects), ("crop_size", seg.crop_size),
                          ("tile_size", seg.tile_size), ("overlap", seg.overlap), ("device", seg.device)):
        assert actions["segment", dest].default == default, dest
    assert actions["search-combinations", "metrics"].default == values(Metric)
    assert actions["project", "new", "models"].default == ",".join(AnalysisSettings().models)


def _functions(tree):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_cli_modules_are_small_and_import_no_cycle():
    modules = sorted(CLI.glob("*.py"))
    assert {m.stem for m in modules} >= {"__init__", "common", "parser", "models", "experiments", "search",
                                         "segment", "project", "analyse", "gui"}
    graph = {}
    for path in modules:
        text = path.read_text()
        assert len(text.splitlines()) < 400, path.name
        tree = ast.parse(text)
        for fn in _functions(tree):
            assert fn.end_lineno - fn.lineno + 1 < 80, f"{path.name}:{fn.name}"
        graph[path.stem] = {node.module.rsplit(".", 1)[-1] for node in ast.walk(tree)
                            if isinstance(node, ast.ImportFrom) and node.module
                            and node.module.startswith("cellsearch_gui.cli.")}
        graph[path.stem] |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                             and node.module == "cellsearch_gui.cli" for alias in node.names
                             if alias.name not in ("main", "build_parser")}

    def reach(start, seen):
        for nxt in graph.get(start, ()):
            assert nxt != "__init__" and nxt not in seen, f"import cycle through {start} -> {nxt}"
            reach(nxt, seen | {nxt})

    for module in graph:
        reach(module, {module})
    assert not (CLI.parent / "cli_project.py").exists() and not (CLI.parent / "cli.py").exists()


def test_python_dash_m_and_the_entry_point_show_the_commands():
    for argv in ([sys.executable, "-m", "cellsearch_gui", "--help"],
                 [sys.executable, "-c", "from cellsearch_gui.cli import main; raise SystemExit(main(['--help']))"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        for command in ("gui", "project", "models", "evaluate", "classify", "segment", "search-combinations",
                        "analyse-models"):
            assert command in done.stdout


def test_settings_carry_a_version_and_load_from_any_version():
    current = AnalysisSettings()
    assert current.version == SETTINGS_VERSION and current.as_dict()["version"] == SETTINGS_VERSION
    saved_before_versions = {k: v for k, v in current.as_dict().items() if k != "version"}
    saved_before_versions["models"] = ["mobilenetv2"]
    old = AnalysisSettings.from_dict(saved_before_versions)
    assert old.models == ["mobilenetv2"] and old.version == SETTINGS_VERSION
    newer = AnalysisSettings.from_dict({"version": SETTINGS_VERSION + 5, "models": ["efficientnet_lite0"],
                                        "colour_profile": "warm", "preprocessing": "a_future_preset"})
    assert newer.models == ["efficientnet_lite0"] and newer.version == SETTINGS_VERSION
    assert newer.preprocessing == AnalysisSettings().preprocessing
    assert AnalysisSettings.from_dict({}) == AnalysisSettings()
    assert AnalysisSettings.from_dict(current.as_dict()) == current


@pytest.mark.parametrize("command", ["evaluate", "classify", "search-combinations", "analyse-models"])
def test_bad_choice_is_refused_by_the_parser(command, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--reference", "r", "--models", "m", "--colour", "sepia"])
    assert exc.value.code == 2
    assert "invalid choice: 'sepia'" in capsys.readouterr().err
