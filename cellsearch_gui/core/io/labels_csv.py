"""Labels from a spreadsheet: a CSV with cell_id and label columns, read defensively."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from cellsearch_gui.core.errors import DatasetError
from cellsearch_gui.core.io.files import display_path, nfc, read_regular_bytes

MAX_LABEL_LENGTH = 100


def read_labels_csv(path, known_cells: set[str]) -> tuple[dict[str, str], list[str]]:
    """({cell_id: label}, problems). Rows that cannot be used are reported, the others kept."""
    path = Path(path)
    try:
        raw = read_regular_bytes(path)
    except OSError as exc:
        raise DatasetError(f"{display_path(path)}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = raw.decode("cp1252")  # spreadsheets on Windows
        except UnicodeDecodeError:
            raise DatasetError(f"{display_path(path)}: not a text CSV file (neither UTF-8 nor Windows-1252)") from None
    if "\0" in text:
        raise DatasetError(f"{display_path(path)}: not a text CSV file (it holds binary data)")
    if not text.strip():
        raise DatasetError(f"{display_path(path)}: the file is empty")
    try:
        dialect = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    if "cell_id" not in fields or "label" not in fields:
        raise DatasetError(f"{display_path(path)}: needs 'cell_id' and 'label' columns (found: {', '.join(fields) or 'none'})")
    labels: dict[str, str] = {}
    problems: list[str] = []
    shown = display_path(path)
    by_nfc = {nfc(cell): cell for cell in known_cells}
    for line, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() if isinstance(v, str) else "" for k, v in row.items()}
        cell, label = row.get("cell_id", ""), nfc(row.get("label", ""))
        cell = cell if cell in known_cells else by_nfc.get(nfc(cell), cell)
        if not cell:
            problems.append(f"{shown}:{line}: no cell_id")
        elif cell not in known_cells:
            problems.append(f"{shown}:{line}: unknown cell '{cell[:60]}'")
        elif not label:
            problems.append(f"{shown}:{line}: empty label for '{cell}'")
        elif label[0] in "=+-@" or any(ch in label for ch in "\r\n\t") or len(label) > MAX_LABEL_LENGTH:
            problems.append(f"{shown}:{line}: label '{label[:40]}' looks like a formula or is not a class name")
        elif cell in labels and labels[cell] != label:
            problems.append(f"{shown}:{line}: '{cell}' labelled twice ('{labels[cell]}', '{label}'); first kept")
        else:
            labels.setdefault(cell, label)
    return labels, problems
