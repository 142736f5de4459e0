"""The one table formatter: markdown and CSV tables of numbers, for reports and the terminal."""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Sequence

import numpy as np


def fmt(v, digits: int = 4) -> str:
    """A number for a table: ``n/a`` for None/nan, general format otherwise."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x, digits) for x in v) + "]"
    return str(v)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; cells go through :func:`fmt`, pipes in them are escaped."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")  # a pipe inside a cell (|dlnP|, KL(a||b)) would split it

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(fmt(c)) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def csv_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The same table as CSV (raw values; lists as ``a;b``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([[";".join(map(str, c)) if isinstance(c, (list, tuple)) else ("" if c is None else c) for c in r]
                 for r in rows])
    return buf.getvalue()
