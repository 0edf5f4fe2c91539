"""Typed rows in a CSV file, read whole and rewritten atomically (results tables)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from pathlib import Path

from imseg.storage import atomic_write_text


def format_cell(value: object) -> str:
    """A value as CSV text: None and NaN empty, floats to 6 significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def parse_cell(text: str, kind: type | None) -> object:
    """CSV text back to ``kind`` (int, float, bool or None = text); empty is None."""
    if text == "":
        return None
    if kind is int:
        return int(float(text))
    if kind is float:
        return float(text)
    if kind is bool:
        return text.lower() == "true"
    return text


def read_rows(path: Path, columns: tuple[str, ...], types: dict[str, type]) -> list[dict]:
    """Rows of ``path`` (empty when it does not exist), typed per ``types``."""
    if not Path(path).is_file():
        return []
    with Path(path).open(newline="") as fh:
        return [{c: parse_cell(raw.get(c) or "", types.get(c)) for c in columns}
                for raw in csv.DictReader(fh)]


def write_rows(path: Path, columns: tuple[str, ...], rows: Iterable[dict]) -> None:
    """Rewrite ``path`` with a header and ``rows``, atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_cell(row.get(c)) for c in columns])
    atomic_write_text(Path(path), buf.getvalue())
