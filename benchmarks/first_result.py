"""The README's main job, timed: the window opened as `cellsearch gui --reference LIBRARY FIELDS`, the cell
diameter measured on each field (or set with --diameter), Run pressed; prints the seconds from launch to the
first result shown.

    .venv/bin/python benchmarks/first_result.py demo/pbc_library demo/bccd_fields [--diameter PX]

Offscreen (QT_QPA_PLATFORM=offscreen unless set). Prints figures; asserts nothing. benchmarks/first_run.sh
runs it on a fresh clone after setup.sh.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

LAUNCHED = time.perf_counter()  # before Qt, torch or CellSearch is imported
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference")
    parser.add_argument("fields")
    parser.add_argument("--diameter", type=float, default=0.0,
                        help="cell diameter in px (default 0: measured on each field, as the README's main job)")
    args = parser.parse_args(argv)

    from PySide6.QtWidgets import QApplication

    from cellsearch_gui.core.app.run import AnalysisSettings
    from cellsearch_gui.gui.app import create_window

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = create_window([args.fields], args.reference)
    window.show_dialogs = False
    window.show()
    controller = window.controller
    shown = time.perf_counter() - LAUNCHED
    if args.diameter:
        settings = AnalysisSettings.from_dict(controller.workspace.settings.as_dict())
        settings.cell_diameter_px = args.diameter
        controller.apply_settings(settings, quiet=True)
    done: dict = {}
    controller.result_changed.connect(lambda: done.setdefault("result", time.perf_counter()))
    controller.runner.failed.connect(lambda name, exc: done.setdefault("error", exc))
    controller.error.connect(lambda text, _: done.setdefault("error", text))
    pressed = time.perf_counter()
    if not controller.run_analysis():
        print(f"error: Run refused: {done.get('error')}", file=sys.stderr)
        return 1
    while "result" not in done and "error" not in done:
        app.processEvents()
        time.sleep(0.002)
    if "error" in done:
        print(f"error: {done['error']}", file=sys.stderr)
        return 1
    result = controller.workspace.result
    notes = list(getattr(result, "notes", []) or [])
    print(f"window shown {shown:.1f} s after launch; Run -> result {done['result'] - pressed:.1f} s; "
          f"{len(result.cells)} cells classified against {len(result.reference.paths)} library cells; "
          f"{len(notes)} note(s)")
    for note in notes[:5]:
        print(f"  note: {note}")
    print(f"first result: {done['result'] - LAUNCHED:.1f} s after launch")
    controller.shutdown()
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
