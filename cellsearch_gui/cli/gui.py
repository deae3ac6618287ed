"""`cellsearch gui` (the default without a command): open the window."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellsearch_gui.cli.common import arg
from cellsearch_gui.core import validation


def add_parser(sub) -> None:
    gui = sub.add_parser("gui", help="open the CellSearch window (the default without a command)")
    gui.set_defaults(handler=cmd_gui)
    gui.add_argument("paths", nargs="*", type=Path, help="images or folders of cells to classify")
    gui.add_argument("--reference", type=Path, help="reference library: one sub-folder of cell images per class")
    gui.add_argument("--project", type=Path, help="open a saved project folder")
    gui.add_argument("--cell-diameter", "--cell-diameter-px", dest="cell_diameter_px", metavar="PX",
                     type=arg(validation.DIAMETER_PX), default=None,
                     help="typical cell diameter in pixels, the window's 'cell diameter' setting (default: the "
                          "saved setting; none there: measured on each field)")


def cmd_gui(args: argparse.Namespace) -> int:
    try:  # PySide6 and pyqtgraph: loaded only for the window, and optional for the command line
        from cellsearch_gui.gui.app import main as gui_main
    except ImportError as exc:
        print(f"error: the window needs PySide6 and pyqtgraph ({exc}); run ./setup.sh", file=sys.stderr)
        return 2
    return gui_main(args.paths, args.reference, args.project, cell_diameter_px=args.cell_diameter_px)
