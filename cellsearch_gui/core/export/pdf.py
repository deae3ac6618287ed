"""The report as PDF: its HTML printed on A4 by a headless Chromium-family browser (Chromium, Chrome, Edge;
``CELLSEARCH_BROWSER`` names another). Nothing is installed for it: without a browser, write the HTML."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.io.atomic import disk_errors

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "microsoft-edge", "msedge")
PRINT_TIMEOUT_S = 180


class PdfError(CellSearchError):
    """No way to print the report to PDF here, or the printer failed."""


def find_browser() -> str | None:
    named = os.environ.get("CELLSEARCH_BROWSER")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def browser_command(browser: str, html_file: Path, pdf_file: Path, profile: Path) -> list[str]:
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
            "--run-all-compositor-stages-before-draw", f"--user-data-dir={profile}",
            f"--print-to-pdf={pdf_file}", html_file.as_uri()]


def html_to_pdf(text: str, out: str | Path) -> Path:
    out = Path(out)
    browser = find_browser()
    with tempfile.TemporaryDirectory(prefix="cellsearch-pdf-") as work:
        work = Path(work)
        source, printed = work / "report.html", work / "report.pdf"
        source.write_text(text, encoding="utf-8")
        if not browser:
            raise PdfError("a PDF is printed by Chromium, Chrome or Edge, and none was found (CELLSEARCH_BROWSER "
                           "names another); write the report as .html and print it from any browser")
        try:
            done = subprocess.run(browser_command(browser, source, printed, work / "profile"),
                                  capture_output=True, text=True, timeout=PRINT_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PdfError(f"{browser} could not print the report ({exc}); write .html and print it") from None
        if not printed.is_file() or printed.stat().st_size == 0:
            raise PdfError(f"{browser} printed no PDF (exit {done.returncode}): {done.stderr.strip()[-300:]}")
        with disk_errors(out, "write the PDF"):
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".part")
            shutil.copyfile(printed, tmp)
            tmp.replace(out)
    return out

