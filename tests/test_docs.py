"""The documentation stays true: every command in README and the user guide parses with today's CLI,
every image the README shows exists, and the setup/test commands are the ones CI runs."""

import re
import shlex
from pathlib import Path

import pytest

from cellsearch_gui.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "docs" / "user-guide.md"]


def _commands(text: str) -> list[str]:
    """`cellsearch ...` lines from code blocks (with continuation lines joined) and inline code spans."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if re.match(r"^(\.venv/bin/)?cellsearch\b", line):
                found.append(line)
    for span in re.findall(r"`((?:\.venv/bin/)?cellsearch [^`]+)`", text):
        if "..." not in span and "|" not in span and "[" not in span:
            found.append(span)
    return found


COMMANDS = [(doc.name, cmd) for doc in DOCS for cmd in _commands(doc.read_text(encoding="utf-8"))]


def test_the_docs_hold_commands():
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("doc,command", COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_documented_command_parses(doc, command):
    words = shlex.split(command)[1:]
    words = ["--help" if w == "..." else w for w in words]
    try:
        build_parser().parse_args(words)
    except SystemExit as exc:
        assert exc.code == 0, f"{doc}: '{command}' does not parse"


def test_readme_images_exist_and_setup_matches_ci():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):
        assert (REPO / image).is_file(), image
    ci = (REPO / ".ci" / "run").read_text()
    assert "./setup.sh" in readme and "setup.sh" in ci
    assert ".venv/bin/python -m pytest" in readme and "-m pytest" in ci
