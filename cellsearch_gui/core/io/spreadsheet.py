"""CSV files a spreadsheet may open: text that it would run as a formula is neutralised, numbers stay numbers."""

from __future__ import annotations

import csv
import re

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def encodable(text: str) -> str:
    """``text`` writable as UTF-8: undecodable bytes of a file name (lone surrogates) shown as ``\\xff``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode("utf-8")


def spreadsheet_safe(value) -> str:
    """``value`` as CSV text; text starting like a formula (= + - @ tab CR) and not a number gets a ``'``."""
    text = "" if value is None else encodable(str(value))
    if text[:1] in _FORMULA_STARTS and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


class SafeCsvWriter:
    """csv.writer / csv.DictWriter in one, every field through ``spreadsheet_safe``."""

    def __init__(self, handle, fieldnames: list[str] | None = None) -> None:
        self._writer = csv.writer(handle)
        self.fieldnames = fieldnames

    def writerow(self, row) -> None:
        if isinstance(row, dict):
            row = [row.get(name, "") for name in self.fieldnames]
        self._writer.writerow([spreadsheet_safe(v) for v in row])

    def writerows(self, rows) -> None:
        for row in rows:
            self.writerow(row)

    def writeheader(self) -> None:
        self._writer.writerow(self.fieldnames)
