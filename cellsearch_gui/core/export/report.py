"""The differential count report: one self-contained HTML file (crops and charts inline, no script, no network)
that opens in any browser and prints on A4: a header (samples, date, library, models, settings, version),
per sample the differential table with 95 % intervals, a bar chart and a gallery of crops per class with the
uncertain cells marked, and the provenance needed to reproduce it."""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime, timezone
from pathlib import Path

from cellsearch_gui import __version__
from cellsearch_gui.core.classify.differential import Interval, SampleDifferential
from cellsearch_gui.core.export.outlines import UNCLASSIFIED_COLOUR, class_colours
from cellsearch_gui.core.export.table import CellRow, ExportTable, check_writable
from cellsearch_gui.core.io.atomic import write_text_atomic

THUMB_PX = 72
GALLERY_PER_CLASS = 16
INTERVAL_NAMES = {Interval.WILSON: "Wilson score", Interval.EXACT: "exact binomial (Clopper-Pearson)"}
CSS = """
@page { size: A4; margin: 14mm 12mm; }
body { font: 10pt/1.35 "DejaVu Sans", Arial, sans-serif; color: #111; max-width: 186mm; margin: 0 auto; }
h1 { font-size: 16pt; margin: 0 0 4pt; } h2 { font-size: 13pt; margin: 14pt 0 4pt; border-bottom: 1px solid #999; }
h3 { font-size: 10.5pt; margin: 8pt 0 3pt; }
table { border-collapse: collapse; margin: 4pt 0; break-inside: avoid; }
td, th { border: 1px solid #bbb; padding: 2pt 6pt; text-align: right; }
th { background: #eee; } td.name, th.name { text-align: left; }
dl.header { display: grid; grid-template-columns: 28mm auto; gap: 1pt 6pt; margin: 0; }
dl.header dt { font-weight: bold; } dl.header dd { margin: 0; overflow-wrap: anywhere; }
section.sample { break-before: page; } section.sample:first-of-type { break-before: auto; }
.summary { margin: 3pt 0; } .note { color: #8a4b00; margin: 2pt 0; }
.chart { break-inside: avoid; margin: 4pt 0; }
.class-block { break-inside: avoid; } h2, h3 { break-after: avoid; }
.gallery { display: flex; flex-wrap: wrap; gap: 3pt; margin-bottom: 4pt; }
figure { margin: 0; width: 76px; text-align: center; font-size: 6.5pt; break-inside: avoid; }
figure img, figure .missing { width: 72px; height: 72px; border: 2px solid transparent; display: block; }
figure.uncertain img { border-color: #d55e00; }
figure .missing { background: #eee; color: #777; line-height: 72px; font-size: 7pt; }
.flag { color: #d55e00; font-weight: bold; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 7pt; background: #f6f6f6; padding: 4pt; }
.provenance { break-before: page; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def thumbnail(path: str) -> str | None:
    """A small JPEG of the crop as a data URI; None when it cannot be read."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMB_PX * 2, THUMB_PX * 2))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=80)
    except Exception:  # noqa: BLE001 - a missing or broken crop shows as a grey box
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def bar_chart(d: SampleDifferential, colours: dict) -> str:
    """Horizontal bars (percent) with the 95 % interval as a whisker, as inline SVG."""
    label_w, bar_w, row_h = 130, 420, 18
    height = row_h * len(d.classes) + 24
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 60}" '
             f'height="{height}" role="img" aria-label="differential of {_e(d.sample)}">']
    for tick in range(0, 101, 20):
        x = label_w + bar_w * tick / 100
        parts.append(f'<line x1="{x}" y1="0" x2="{x}" y2="{height - 16}" stroke="#ddd"/>'
                     f'<text x="{x}" y="{height - 4}" font-size="9" text-anchor="middle">{tick}%</text>')
    for i, c in enumerate(d.classes):
        y = i * row_h + 3
        r, g, b = colours.get(c.name, UNCLASSIFIED_COLOUR)
        width = bar_w * c.percent / 100
        lo, hi = label_w + bar_w * c.low / 100, label_w + bar_w * c.high / 100
        mid = y + (row_h - 6) / 2
        parts.append(f'<text x="{label_w - 6}" y="{mid + 4}" font-size="10" text-anchor="end">{_e(c.name)}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{width:.1f}" height="{row_h - 6}" fill="rgb({r},{g},{b})"/>'
                     f'<line x1="{lo:.1f}" y1="{mid}" x2="{hi:.1f}" y2="{mid}" stroke="#222" stroke-width="1.2"/>'
                     f'<line x1="{lo:.1f}" y1="{mid - 4}" x2="{lo:.1f}" y2="{mid + 4}" stroke="#222"/>'
                     f'<line x1="{hi:.1f}" y1="{mid - 4}" x2="{hi:.1f}" y2="{mid + 4}" stroke="#222"/>'
                     f'<text x="{label_w + bar_w + 6}" y="{mid + 4}" font-size="9">{c.percent:.1f}%</text>')
    parts.append("</svg>")
    return "".join(parts)


def differential_table(d: SampleDifferential) -> str:
    rows = "".join(f'<tr><td class="name">{_e(c.name)}</td><td>{c.count}</td><td>{c.percent:.1f}</td>'
                   f"<td>{c.low:.1f} – {c.high:.1f}</td></tr>" for c in d.classes)
    return ('<table class="differential"><thead><tr><th class="name">class</th><th>cells</th><th>%</th>'
            f'<th>95 % interval (%)</th></tr></thead><tbody>{rows}</tbody><tfoot><tr><th class="name">counted'
            f"</th><th>{d.counted}</th><th>{100 if d.counted else 0}</th><th></th></tr></tfoot></table>")


def gallery(rows: list[CellRow], table: ExportTable, per_class: int) -> str:
    """Crops per class, uncertain cells first (marked), at most ``per_class`` shown of each."""
    by_class: dict[str, list[CellRow]] = {}
    for row in rows:
        by_class.setdefault(row.final or "unclassified", []).append(row)
    parts = []
    for name in [c for c in table.classes if c in by_class] + sorted(set(by_class) - set(table.classes)):
        members = sorted(by_class[name], key=lambda r: (not table.is_uncertain(r), -(r.entropy or 0)))
        shown = members[:per_class]
        uncertain = sum(map(table.is_uncertain, members))
        parts.append(f'<div class="class-block"><h3>{_e(name)}: {len(members)} cell(s)'
                     + (f', <span class="flag">{uncertain} uncertain</span>' if uncertain else "")
                     + (f" (first {len(shown)} shown)" if len(shown) < len(members) else "") + '</h3><div class="gallery">')
        for row in shown:
            flag = table.is_uncertain(row)
            uri = thumbnail(row.cell.crop_path)
            img = (f'<img src="{uri}" alt="{_e(row.cell.cell_id)}">' if uri else '<div class="missing">no crop</div>')
            caption = ("? " if flag else "") + (f"H={abs(row.entropy):.2f}" if row.entropy is not None else "")
            if row.user_label:
                caption += " ✓ user"
            parts.append(f'<figure class="{"uncertain" if flag else ""}" title="{_e(row.cell.cell_id)}">{img}'
                         f"<figcaption>{_e(caption)}</figcaption></figure>")
        parts.append("</div></div>")
    return "".join(parts)


def sample_section(d: SampleDifferential, rows: list[CellRow], table: ExportTable, colours: dict,
                   per_class: int) -> str:
    summary = (f"{d.counted} cells counted · {d.uncertain} uncertain ({table.uncertain_rule()}) · {d.reviewed} reviewed by a person · {d.corrected} corrected"
               + (f" · {d.unclassified} without a prediction" if d.unclassified else ""))
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in d.notes)
    body = (differential_table(d) + bar_chart(d, colours) + "<h3>Cells by class</h3>" + gallery(rows, table, per_class)
            if d.counted else "")
    return f'<section class="sample"><h2>Sample: {_e(d.sample)}</h2><p class="summary">{summary}</p>{notes}{body}</section>'


def header(table: ExportTable, diffs: list[SampleDifferential], library: list[str], method: str) -> str:
    p = table.provenance
    params = p.get("params", {})
    settings = ", ".join(f"{k} {params[k]}" for k in ("metric", "k_min", "k_max", "entropy_threshold") if k in params)
    prep = table.settings.get("preprocessing") or p.get("preprocessing", {}).get("query", {}).get("name", "")
    items = [("Samples", ", ".join(d.sample for d in diffs) or "none"),
             ("Date", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
             ("Library", "; ".join(library) or "not recorded"), ("Classes", ", ".join(table.classes)),
             ("Models", " + ".join(p.get("models", [])) or "not recorded"),
             ("Settings", f"{settings}; preprocessing {prep or 'as recorded below'}"),
             ("Intervals", f"95 %, {INTERVAL_NAMES.get(method, method)}"),
             ("Run", f"{table.origin}, run {table.run_id}" if table.run_id else table.origin),
             ("App version", f"CellSearch {p.get('app_version') or __version__} (report by {__version__})")]
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return f'<h1>Differential count report</h1><dl class="header">{rows}</dl>'


def provenance_section(table: ExportTable, library: list[str]) -> str:
    record = {"project": table.origin, "run": table.run_id, "library": library, "settings": table.settings,
              "provenance": table.provenance}
    command = (f"cellsearch project report {table.origin} --out REPORT.html" if table.run_id else "")
    return ('<section class="provenance"><h2>Provenance</h2><p>The run that produced these predictions, as recorded '
            "(models with their weight fingerprints, preprocessing, classifier parameters)."
            + (f" Re-create this report with <code>{_e(command)}</code>." if command else "")
            + f"</p><pre>{_e(json.dumps(record, indent=1, default=str, ensure_ascii=False))}</pre></section>")


def report_html(table: ExportTable, library: list[str] | None = None, method: str = Interval.WILSON,
                per_class: int = GALLERY_PER_CLASS) -> str:
    diffs = table.differential(method)
    colours = class_colours(table.classes)
    by_sample: dict[str, list[CellRow]] = {}
    for row in table.rows:
        by_sample.setdefault(row.sample, []).append(row)
    sections = "".join(sample_section(d, by_sample.get(d.sample, []), table, colours, per_class) for d in diffs)
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Differential count report</title>'
            f"<style>{CSS}</style></head><body>{header(table, diffs, library or [], method)}"
            f"{sections or '<p>No sample holds a cell.</p>'}{provenance_section(table, library or [])}</body></html>")


def write_report(table: ExportTable, out: str | Path, library: list[str] | None = None,
                 method: str = Interval.WILSON, per_class: int = GALLERY_PER_CLASS) -> Path:
    """``out``: .html, or .pdf (the same HTML printed by a headless browser)."""
    out = Path(out)
    check_writable(out.parent, "write the report")
    text = report_html(table, library, method, per_class)
    if out.suffix.lower() == ".pdf":
        from cellsearch_gui.core.export.pdf import html_to_pdf

        html_to_pdf(text, out)
    else:
        write_text_atomic(out, text)
    return out
