"""Hostile command-line arguments (issue 16): numbers at 0, negative, NaN, inf, huge or not numbers; choices
with bogus values; contradictory combinations; missing inputs; outputs naming folders or lying below files;
and hypothesis-generated values. Each must end with exit status 2 and a one-line message naming the option
(or the path), never a traceback or a hang. Run in-process through ``main`` (fast), a few as subprocesses."""

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cellsearch_gui.cli import main
from cellsearch_gui.cli.parser import build_parser
from cellsearch_gui.core import validation

ROOT = Path(__file__).resolve().parents[2]
EMBED = ["--models", "mobilenetv2", "--random-init", "--no-cache", "--quiet"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A tiny labelled library, a query set, a project, an existing folder and an existing file."""
    base = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    for root, n in (("ref", 3), ("query", 1)):
        for name, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
            (base / root / name).mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(colour, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(base / root / name / f"{i}.png")
    (base / "folder").mkdir()
    (base / "file.txt").write_text("not a folder")
    assert main(["project", "new", str(base / "P")]) == 0
    return {"ref": base / "ref", "query": base / "query", "folder": base / "folder", "file": base / "file.txt",
            "P": base / "P", "image": base / "ref" / "red" / "0.png", "missing": base / "missing"}


def _argv(template: list[str], world: dict[str, Path]) -> list[str]:
    return [str(world[a[1:]]) if a.startswith("@") else a for a in template]


def run_in_process(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue()


def assert_clear_refusal(code: int, err: str, names: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no message"
    message = lines[-1]
    assert "error" in message
    normal = message.replace("-", "_")
    assert any(name.replace("-", "_") in normal for name in names.split("|")), message


EVALUATE = ["evaluate", "--reference", "@ref", "--query", "@query", *EMBED]
CLASSIFY = ["classify", "--reference", "@ref", "--query", "@query", "--out", "@missing", *EMBED]
SEARCH = ["search-combinations", "--reference", "@ref", "--validation", "@query", *EMBED]
ANALYSE = ["analyse-models", "--reference", "@ref", "--out", "@missing", *EMBED]
SEGMENT = ["segment", "@image", "--out", "@missing", "--quiet"]

NUMERIC = [  # (command line, option, bad values)
    (EVALUATE, "--k-min", ["0", "-1", "nan", "inf", "1e30", "abc", "3.5"]),
    (EVALUATE, "--k-max", ["0", "-5", "nan", "99999999999", "abc"]),
    (EVALUATE, "--entropy", ["-0.1", "1.5", "nan", "inf", "-inf", "abc"]),
    (EVALUATE, "--batch-size", ["0", "-1", "nan", "99999999", "abc"]),
    (EVALUATE, "--split", ["0", "1", "-0.5", "nan", "2", "abc"]),
    (EVALUATE, "--seed", ["-1", "abc", "1e3", str(2 ** 40)]),
    (EVALUATE, "--detail", ["-1", "nan", "inf", "abc", "1e9"]),
    (EVALUATE, "--views", ["0", "3", "abc"]),
    (EVALUATE, "--reference-pixel-size", ["0", "-1", "nan", "inf", "abc", "1e9"]),
    (EVALUATE, "--crop-target-pixel-size", ["0", "-0.3"]),
    (CLASSIFY, "--top", ["-1", "abc", "1e3"]),
    (SEARCH, "--k-min", ["0", "", "abc", "1,-2"]),
    (SEARCH, "--k-max", ["0", "nan"]),
    (SEARCH, "--thresholds", ["-1", "2", "nan", "0.3,abc"]),
    (SEARCH, "--top", ["-1"]),
    (ANALYSE, "--pca-dims", ["0", "1", "abc"]),
    (ANALYSE, "--sigma-frac", ["0", "-1", "nan"]),
    (ANALYSE, "--max-cells", ["0", "1"]),
    (SEGMENT, "--tile-size", ["0", "-1", "63", "abc", "1e9"]),
    (SEGMENT, "--crop-size", ["0", "-5", "100000", "abc"]),
    (SEGMENT, "--cell-diameter", ["0", "-3", "nan", "inf"]),
    (SEGMENT, "--cell-diameter-px", ["0", "-5", "nan"]),
    (SEGMENT, "--overlap", ["-1", "abc"]),
    (SEGMENT, "--pixel-size", ["0", "-1", "nan", "abc"]),
    (SEGMENT, "--target-pixel-size", ["0"]),
    (["project", "new", "@missing"], "--cell-diameter-px", ["0", "-1", "nan"]),
]
CHOICES = [  # (command line, option, bogus value)
    (EVALUATE, "--metric", "manhattan"), (EVALUATE, "--entropy-norm", "bogus"), (EVALUATE, "--index", "bogus"),
    (EVALUATE, "--scale", "bogus"), (EVALUATE, "--colour", "sepia"), (EVALUATE, "--precision", "fp8"),
    (EVALUATE, "--find-cell", "bogus"), (EVALUATE, "--device", "gpu"), (EVALUATE, "--device", "cuda:x"),
    (SEARCH, "--metrics", "l2,manhattan"), (SEARCH, "--entropy-norms", "bogus"), (SEARCH, "--preps", "bogus"),
    (SEGMENT, "--segmenter", "bogus"), (SEGMENT, "--objects", "bogus"), (SEGMENT, "--device", "tpu"),
    (["project", "new", "@missing"], "--preprocessing", "bogus"),
    (["project", "classify", "@P"], "--device", "cuda:-1"),
]
CASES = ([pytest.param(cmd, [option, value], option, id=f"{cmd[0]} {option} {value!r}")
          for cmd, option, bad in NUMERIC for value in bad]
         + [pytest.param(cmd, [option, value], option, id=f"{cmd[0]} {option} {value!r}")
            for cmd, option, value in CHOICES])
CONTRADICTIONS = [  # (command line, what the message names)
    pytest.param([*EVALUATE, "--k-min", "10", "--k-max", "5"], "k_min", id="evaluate k_min > k_max"),
    pytest.param([*SEARCH, "--k-min", "50,60", "--k-max", "10,20"], "k_min", id="search k_min > every k_max"),
    pytest.param([*EVALUATE, "--split", "0.3"], "--split", id="evaluate --split with --query"),
    pytest.param([*SEARCH, "--split", "0.3"], "--split", id="search --split with --validation"),
]
MISSING = [  # inputs that are not there
    pytest.param(["segment", "@missing", "--out", "@folder", "--quiet"], "missing", id="segment missing image"),
    pytest.param(["evaluate", "--reference", "@missing", "--query", "@query", *EMBED], "missing",
                 id="evaluate missing reference"),
    pytest.param(["classify", "--reference", "@ref", "--query", "@missing", "--out", "@file", *EMBED], "--out|missing",
                 id="classify missing query"),
    pytest.param(["project", "info", "@missing"], "missing", id="project info missing folder"),
    pytest.param(["project", "label", "@P", "@missing"], "missing", id="project label missing csv"),
    pytest.param(["models", "import", "mobilenetv2", "@missing"], "missing", id="models import missing file"),
]
OUTPUTS = [  # outputs naming a folder, a file, or lying below a file
    pytest.param(["classify", "--reference", "@ref", "--query", "@query", "--out", "@folder", *EMBED], "--out",
                 id="classify --out folder"),
    pytest.param([*EVALUATE, "--json", "@folder"], "--json", id="evaluate --json folder"),
    pytest.param([*SEARCH, "--json", "@folder"], "--json", id="search --json folder"),
    pytest.param(["segment", "@image", "--out", "@file", "--quiet"], "--out", id="segment --out file"),
    pytest.param(["analyse-models", "--reference", "@ref", "--out", "@file", *EMBED], "--out",
                 id="analyse --out file"),
    pytest.param(["project", "export", "@P", "@folder"], "out", id="project export to a folder"),
    pytest.param(["project", "new", "@file"], "folder", id="project new on a file"),
    pytest.param(["project", "export-library", "@P", "@file"], "out", id="export-library to a file"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command, extra, names", CASES + [
    pytest.param(p.values[0], [], p.values[1], id=p.id) for p in CONTRADICTIONS + MISSING + OUTPUTS])
def test_hostile_argument_is_refused_clearly(world, command, extra, names):
    code, err = run_in_process(_argv(command + extra, world))
    assert_clear_refusal(code, err, names)


@pytest.mark.timeout(60)
def test_json_below_a_file_is_refused(world):
    code, err = run_in_process(_argv([*EVALUATE, "--json"], world) + [str(world["file"] / "r.json")])
    assert_clear_refusal(code, err, "--json")


@pytest.mark.timeout(60)
def test_a_missing_output_parent_is_created_not_refused(world, tmp_path):
    out = tmp_path / "new" / "deeper" / "r.json"
    code, err = run_in_process(_argv(EVALUATE, world) + ["--json", str(out)])
    assert code == 0 and out.is_file(), err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv, names", [
    pytest.param([*SEGMENT, "--tile-size", "0"], "--tile-size", id="segment --tile-size 0"),
    pytest.param([*EVALUATE, "--k-min", "nan"], "--k-min", id="evaluate --k-min nan"),
    pytest.param(["classify", "--reference", "@ref", "--query", "@query", "--out", "@folder", *EMBED], "--out",
                 id="classify --out folder"),
    pytest.param(["project", "new", "@missing", "--preprocessing", "bogus"], "--preprocessing",
                 id="project new --preprocessing bogus"),
])
def test_hostile_argument_in_a_fresh_process(world, argv, names):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "cellsearch_gui", *_argv(argv, world)], capture_output=True,
                          text=True, env=env, timeout=50)
    assert_clear_refusal(done.returncode, done.stderr, names)


# --- hypothesis: any value for a numeric option is taken only inside its domain --------------------------------

PARSED = [  # (command line, option, attribute, domain)
    (["evaluate", "--reference", "r", "--models", "m"], "--k-min", "k_min", validation.K_MIN),
    (["evaluate", "--reference", "r", "--models", "m"], "--entropy", "entropy", validation.ENTROPY_THRESHOLD),
    (["evaluate", "--reference", "r", "--models", "m"], "--batch-size", "batch_size", validation.BATCH_SIZE),
    (["evaluate", "--reference", "r", "--models", "m"], "--split", "split", validation.SPLIT),
    (["evaluate", "--reference", "r", "--models", "m"], "--detail", "detail", validation.DETAIL),
    (["segment", "x.png", "--out", "o"], "--tile-size", "tile_size", validation.TILE_SIZE),
    (["segment", "x.png", "--out", "o"], "--crop-size", "crop_size", validation.CROP_SIZE),
    (["segment", "x.png", "--out", "o"], "--cell-diameter-px", "cell_diameter_px", validation.DIAMETER_PX),
]
VALUES = st.one_of(st.integers(min_value=-10 ** 20, max_value=10 ** 20).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.text(min_size=0, max_size=12).filter(lambda t: not t.startswith("-") or t[1:2].isdigit()))


@pytest.mark.timeout(60)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(PARSED), value=VALUES)
def test_generated_values_are_parsed_into_their_domain_or_refused(case, value):
    command, option, attribute, domain = case
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(command + [f"{option}={value}"])
        except SystemExit as exc:
            assert_clear_refusal(exc.code, err.getvalue(), option)
            return
    assert domain.problem(getattr(args, attribute)) is None, (value, getattr(args, attribute))


@pytest.mark.timeout(60)
@settings(max_examples=60, deadline=None)
@given(k_min=st.integers(-5, 2000), k_max=st.integers(-5, 2000),
       threshold=st.floats(allow_nan=True, allow_infinity=True), norm=st.sampled_from(["log_k", "log_min_kc", "x"]))
def test_generated_ewc_options_give_valid_params_or_a_message(k_min, k_max, threshold, norm):
    from cellsearch_gui.cli.common import ewc_params

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(["evaluate", "--reference", "r", "--models", "m",
                                              f"--k-min={k_min}", f"--k-max={k_max}", f"--entropy={threshold!r}",
                                              f"--entropy-norm={norm}"])
        except SystemExit as exc:
            assert_clear_refusal(exc.code, err.getvalue(), "--k-min|--k-max|--entropy|--entropy-norm")
            return
    try:
        params = ewc_params(args)
    except validation.InvalidSetting as exc:
        assert "k_min" in str(exc) and k_min > k_max
        return
    assert 1 <= params.k_min <= params.k_max and 0 <= params.entropy_threshold <= 1
