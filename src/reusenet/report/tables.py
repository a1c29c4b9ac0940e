"""Rows of dicts -> Markdown for the terminal and for index.md, CSV and JSON for other tools."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ..engine.checkpoint import atomic_write


def format_value(value, digits: int = 3) -> str:
    """Floats rounded for reading; everything else as str. NaN (a figure that was not measured) shows as '-'."""
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def columns_of(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def markdown_table(rows: list[dict], columns: list[str] | None = None, digits: int = 3) -> str:
    """A GitHub Markdown table; numeric columns are right-aligned."""
    columns = columns or columns_of(rows)
    numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows) for c in columns]
    lines = ["| " + " | ".join(columns) + " |",
             "| " + " | ".join("---:" if is_number else "---" for is_number in numeric) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(c), digits) for c in columns) + " |")
    return "\n".join(lines)


def write_table(rows: list[dict], path_stem: str | Path, columns: list[str] | None = None,
                digits: int = 3) -> str:
    """Writes path_stem.md, .csv and .json atomically; returns the Markdown text."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    columns = columns or columns_of(rows)
    text = markdown_table(rows, columns, digits)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(stem.with_suffix(".md"), lambda tmp: Path(tmp).write_text(text + "\n"))
    atomic_write(stem.with_suffix(".csv"), lambda tmp: Path(tmp).write_text(buffer.getvalue()))
    atomic_write(stem.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=2)))
    return text
