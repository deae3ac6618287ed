"""The `cellsearch` parser, put together from one module per command group, and `main`."""

from __future__ import annotations

import argparse
import os
import sys

from cellsearch_gui.cli import (
    analyse,
    experiments,
    gui,
    library,
    models,
    project,
    search,
    segment,
)
from cellsearch_gui.cli.common import Parser
from cellsearch_gui.core.errors import CellSearchError

DESCRIPTION = "The `cellsearch` command line: library, models, evaluate, classify, search-combinations, segment, analyse-models."
COMMAND_GROUPS = (gui, project, library, models, experiments, segment, search, analyse)  # the order `--help` lists


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cellsearch", description=DESCRIPTION)  # its sub-parsers are Parsers too
    sub = parser.add_subparsers(dest="command")
    for group in COMMAND_GROUPS:
        group.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv if argv is not None else (sys.argv[1:] or ["gui"]))
    if args.command is None:
        parser.print_help()
        return 0
    saved_offline = os.environ.get("CELLSEARCH_OFFLINE")
    if getattr(args, "offline", False):
        os.environ["CELLSEARCH_OFFLINE"] = "1"
    try:
        return args.handler(args)
    except CellSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the system refused (name too long, permissions...): a message, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if saved_offline is None:
            os.environ.pop("CELLSEARCH_OFFLINE", None)
        else:
            os.environ["CELLSEARCH_OFFLINE"] = saved_offline
