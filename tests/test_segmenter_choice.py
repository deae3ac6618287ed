"""The default segmenter: ``auto`` is prompted SAM on a CUDA GPU (SAM ViT-B when its weights are here,
else MobileSAM) and classical on the CPU; one rule for `segment` and the window, recorded as what ran."""

import json

import numpy as np
import pytest
from PIL import Image

from cellsearch_gui.cli import main
from cellsearch_gui.cli.parser import build_parser
from cellsearch_gui.core.app import run
from cellsearch_gui.core.app.run import AnalysisSettings
from cellsearch_gui.core.segmentation import choice, settings
from cellsearch_gui.core.segmentation.choice import SegmenterChoice, resolve_segmenter
from cellsearch_gui.core.segmentation.settings import SegmentSettings, make_segmenter


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA GPU as torch would report one, and the SAM weights named in ``present``."""
    import torch

    present: set[str] = set()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(choice, "_has_weights", lambda name: name in present)
    return present


def test_auto_is_classical_on_the_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    picked = resolve_segmenter("auto", "auto")
    assert (picked.segmenter, picked.device) == ("classical", "cpu") and "no CUDA GPU" in picked.why
    assert resolve_segmenter("auto", "cpu").segmenter == "classical"


def test_auto_is_sam_on_a_gpu(gpu):
    assert resolve_segmenter("auto", "auto").segmenter == "classical"  # no SAM weights: said in the note
    gpu.add("mobilesam")
    assert (resolve_segmenter("auto", "auto").segmenter, resolve_segmenter("auto", "auto").device) == (
        "mobilesam", "cuda")
    gpu.add("sam_vit_b")
    assert resolve_segmenter("auto", "auto").segmenter == "sam_vit_b"  # the larger one when its weights are here
    assert resolve_segmenter("auto", "cpu").segmenter == "classical"  # --device cpu: no GPU asked for


def test_a_named_segmenter_is_kept(gpu):
    assert resolve_segmenter("classical", "auto") == SegmenterChoice("classical", "cpu", "as asked")
    assert resolve_segmenter("mobilesam", "auto").device == "cuda"
    assert resolve_segmenter("mobilesam", "cpu").device == "cpu"


def test_make_segmenter_resolves_auto(gpu):
    gpu.add("mobilesam")
    sam = make_segmenter(SegmentSettings(), 40.0)  # built lazily: no weights are read, nothing runs on cuda
    assert sam.name == "mobilesam" and sam.device == "cuda" and sam.tile_batch == 8  # tiles batched on a GPU
    assert make_segmenter(SegmentSettings(segmenter="mobilesam", device="cpu"), 40.0).tile_batch == 1


def test_cli_and_window_default_to_the_same_rule():
    actions = {a.dest: a for a in build_parser()._subparsers._group_actions[0].choices["segment"]._actions}
    assert actions["segmenter"].default == SegmentSettings().segmenter == AnalysisSettings().segmenter == "auto"
    assert actions["device"].default == "auto"


def _one_cell_image(path):
    yy, xx = np.mgrid[:200, :200]
    rgb = np.full((200, 200, 3), 230, np.uint8)
    rgb[(yy - 100) ** 2 + (xx - 100) ** 2 < 30 ** 2] = (120, 60, 160)
    Image.fromarray(rgb).save(path)


def test_segment_records_what_ran(tmp_path, monkeypatch, capsys):
    seen = []

    def rule(requested, device="auto", checkpoint=None):
        seen.append(requested)
        return SegmenterChoice("classical", "cpu", "the test's rule")

    monkeypatch.setattr(settings, "resolve_segmenter", rule)
    _one_cell_image(tmp_path / "a.png")
    assert main(["segment", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--cell-diameter-px", "60"]) == 0
    record = json.loads((tmp_path / "out" / "segment.json").read_text())["settings"]
    assert record["segmenter"] == "classical" and record["segmenter_requested"] == "auto"
    assert "the test's rule" in record["segmenter_choice"] and "the test's rule" in capsys.readouterr().out
    assert seen[0] == "auto"


def test_the_window_pipeline_uses_the_same_rule(tmp_path, monkeypatch):
    """The app's run resolves through the same function before segmenting (stopped right there)."""
    calls = []

    def rule(requested, device="auto", checkpoint=None):
        calls.append((requested, device))
        return SegmenterChoice("mobilesam", "cuda", "the test's rule")

    def stop(paths, work_dir, seg, kind, token):
        calls.append(seg)
        raise RuntimeError("stop")
        yield  # a generator, as the real one

    monkeypatch.setattr(settings, "resolve_segmenter", rule)
    monkeypatch.setattr(run, "collect_query_cells", stop)
    plan = run.RunPlan((), (str(tmp_path / "q.png"),), AnalysisSettings(), tmp_path, tmp_path, "auto")
    with pytest.raises(RuntimeError, match="stop"):
        list(run._pipeline(plan, run.CancelToken(), None))
    assert calls[0] == ("auto", "auto")
    assert (calls[1].segmenter, calls[1].device) == ("mobilesam", "cuda")
