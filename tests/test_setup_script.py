"""Issue 17, set-up friction: setup.sh says what it does and names how to get Python 3.11, pyproject declares
its licence without deprecation warnings, and the README's commands are typed as set-up leaves them (the
main job runs on the demo setup.sh builds)."""

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from cellsearch_gui.core.app import demo

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
STUB = """#!/bin/sh
case "$*" in
  *version_info*) echo "{version}" ;;
  *venv*) echo "stub python: no venv here" >&2; exit 3 ;;
esac
exit 0
"""


def run_setup(tmp_path: Path, version: str) -> subprocess.CompletedProcess:
    """setup.sh alone in a scratch folder, with a stand-in interpreter reporting ``version`` that cannot make
    a virtual environment (so nothing is installed)."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    shutil.copy(REPO / "setup.sh", tmp_path / "setup.sh")
    python = tmp_path / "python-stub"
    python.write_text(STUB.format(version=version))
    python.chmod(0o755)
    return subprocess.run(["bash", str(tmp_path / "setup.sh")], env={"PATH": "/usr/bin:/bin", "PYTHON": str(python)},
                          capture_output=True, text=True, timeout=60)


def test_an_unsupported_python_names_how_to_get_311(tmp_path):
    done = run_setup(tmp_path, "3.10")
    assert done.returncode != 0
    assert "AssertionError" not in done.stderr and "Traceback" not in done.stderr
    for hint in ("Python 3.11", "apt-get install python3.11", "uv python install 3.11", "pyenv install 3.11",
                 "PYTHON="):
        assert hint in done.stderr, hint
    assert not (tmp_path / ".venv").exists()


@pytest.mark.parametrize("version", ["3.11", "3.12"])
def test_setup_says_each_step_as_it_starts(tmp_path, version):
    done = run_setup(tmp_path, version)
    assert done.returncode != 0  # the stand-in cannot make a venv
    assert re.search(rf"\[\d\d:\d\d:\d\d\] 1/4 virtual environment .venv \(Python {version}\)", done.stdout)
    assert "needs Python" not in done.stderr


def test_pyproject_licence_is_an_spdx_string_and_312_is_allowed():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert config["project"]["license"] == "MIT"  # a table is deprecated in setuptools >= 77
    assert any(re.fullmatch(r"setuptools>=(7[7-9]|[89]\d)", req) for req in config["build-system"]["requires"])
    assert config["project"]["requires-python"] == ">=3.11,<3.13"


def readme_commands() -> list[str]:
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.DOTALL):
        lines += [line.strip() for line in re.sub(r"\\\n\s*", " ", block).splitlines() if line.strip()]
    return lines + re.findall(r"`([^`\n]*cellsearch[^`\n]*)`", README)


def test_readme_commands_are_typed_as_setup_leaves_them():
    """`cellsearch` is not on the PATH after setup.sh: every command the README gives starts .venv/bin/."""
    bare = [cmd for cmd in readme_commands() if re.match(r"^cellsearch\s", cmd)]  # a command, not the name
    assert bare == []


def test_the_main_job_runs_on_the_demo_setup_builds():
    setup = (REPO / "setup.sh").read_text(encoding="utf-8")
    built = re.search(r"\.venv/bin/cellsearch library demo ([\w./-]+)", setup)
    assert built, "setup.sh builds the demo"
    gui = [shlex.split(c) for c in readme_commands() if c.startswith(".venv/bin/cellsearch gui --reference")]
    folder = built.group(1)
    assert ["--reference", f"{folder}/{demo.DEMO_LIBRARY}", f"{folder}/{demo.DEMO_IMAGES}"] == gui[0][2:]
    assert re.search(r"first result in about\s+\d+ s", README)  # the README says how long it takes
    assert "GPU" in README[README.index("## Run the main job"):README.index("## Run the tests")]
