"""The documentation stays true: every command in README, docs/ and benchmarks/README parses with today's CLI,
docs/cli.md names every command and option, every relative link and image points to an existing file (and
heading), the README stays short, and the setup/test commands are the ones CI runs."""

import argparse
import re
import shlex
from pathlib import Path

import pytest

from cellsearch_gui.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CLI_DOC = REPO / "docs" / "cli.md"
MODELS_DOC = REPO / "docs" / "models.md"
LINKED_DOCS = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md"]
DOCS = LINKED_DOCS  # commands are parsed in all of them (architecture.md shows post-change runs as console)
README_MAX_LINES = 200


def _commands(text: str) -> list[str]:
    """`cellsearch ...` lines from bash code blocks (with continuation lines joined) and inline code spans."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if re.match(r"^(\.venv/bin/)?cellsearch\b", line):
                found.append(line)
    for span in re.findall(r"`((?:\.venv/bin/)?cellsearch [^`]+)`", text):
        if "..." not in span and "|" not in span and "[" not in span:
            found.append(span)
    return found


COMMANDS = [(doc.relative_to(REPO).as_posix(), cmd) for doc in DOCS
            for cmd in _commands(doc.read_text(encoding="utf-8"))]


def test_the_docs_hold_commands():
    assert len(COMMANDS) >= 15
    for doc in (CLI_DOC, MODELS_DOC):
        assert len(_commands(doc.read_text(encoding="utf-8"))) >= 5, doc.name


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) for every command and sub-command."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


COMMAND_NAMES = {path for path, _ in _parsers(build_parser())}


@pytest.mark.parametrize("doc,command", COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_documented_command_parses(doc, command):
    """A command parses; a bare command name in prose (`cellsearch project classify`) must exist."""
    words = shlex.split(command)[1:]
    words = ["--help" if w == "..." else w for w in words]
    if words and tuple(words) in COMMAND_NAMES:
        return  # a command's name, e.g. `cellsearch project classify` in a sentence
    try:
        build_parser().parse_args(words)
    except SystemExit as exc:
        assert exc.code == 0, f"{doc}: '{command}' does not parse"


def test_cli_reference_names_every_command_and_option():
    text = CLI_DOC.read_text(encoding="utf-8")
    missing = []
    for path, parser in _parsers(build_parser()):
        if path and path[-1] not in text:
            missing.append(" ".join(path))
        for action in parser._actions:
            missing += [f"{' '.join(path)} {opt}" for opt in action.option_strings
                        if opt.startswith("--") and opt != "--help" and f"`{opt}" not in text]
    assert not missing, f"docs/cli.md does not document: {missing}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _prose(doc: Path) -> str:
    """The document without its code blocks."""
    return re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.DOTALL)


def _anchors(doc: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", _prose(doc), re.MULTILINE)}


LINKS = [(doc, target) for doc in LINKED_DOCS for target in re.findall(r"\]\(([^)\s]+)\)", _prose(doc))
         if not re.match(r"^[a-z]+:", target)]  # relative links only (no http:, mailto:)


@pytest.mark.parametrize("doc,target", LINKS, ids=[f"{d.relative_to(REPO).as_posix()}:{t}" for d, t in LINKS])
def test_relative_links_point_to_existing_files(doc, target):
    path, _, anchor = target.partition("#")
    file = (doc.parent / path).resolve() if path else doc
    assert file.exists(), f"{doc.relative_to(REPO)}: link to missing {target}"
    if anchor and file.suffix == ".md":
        assert anchor in _anchors(file), f"{doc.relative_to(REPO)}: no heading '#{anchor}' in {file.name}"


def test_docs_have_links():
    assert len([t for d, t in LINKS if d == README]) >= 6  # README points to the documentation


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_readme_images_exist_and_setup_matches_ci():
    readme = README.read_text(encoding="utf-8")
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):
        assert (REPO / image).is_file(), image
    ci = (REPO / ".ci" / "run").read_text()
    assert "./setup.sh" in readme and "setup.sh" in ci
    assert ".venv/bin/python -m pytest" in readme and "-m pytest" in ci
