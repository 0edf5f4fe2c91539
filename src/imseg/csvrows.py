"""Typed rows in a CSV file, read whole and rewritten atomically (results tables)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from pathlib import Path

from imseg.errors import DataError
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


def read_rows(path: Path, columns: tuple[str, ...], types: dict[str, type],
              required: tuple[str, ...] = ()) -> list[dict]:
    """Rows of ``path`` (empty when it does not exist), typed per ``types``.

    A header without a ``required`` column, a line with more or fewer cells than the
    header, or a cell that is not of its column's type is a DataError naming the file
    and line, and the way out (a table is written by imseg alone; a line damaged by
    hand or by a copy would otherwise stop every command with a traceback).
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        return _read_checked(path, columns, types, required)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a table imseg wrote (not text); restore it or move it "
                        "away") from None


def _read_checked(path: Path, columns: tuple[str, ...], types: dict[str, type],
                  required: tuple[str, ...]) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or ())]
        if missing:
            raise DataError(f"{path}: not a table imseg wrote (no column {', '.join(missing)} "
                            "in its first line); restore it or move it away")
        rows = []
        line = reader.line_num + 1  # where the next row starts (a quoted cell may span lines)
        for raw in reader:
            why = _why_damaged(raw, types)
            if why:
                raise DataError(f"{path} line {line}: damaged ({why}); repair or delete that "
                                "line (the model of a deleted line is trained again when the "
                                "run resumes)")
            rows.append({c: parse_cell(raw.get(c) or "", types.get(c)) for c in columns})
            line = reader.line_num + 1
    return rows


def _why_damaged(raw: dict, types: dict[str, type]) -> str:
    """What is wrong with one line's cells (csv.DictReader's dict), or ''."""
    if None in raw:
        return f"{len(raw[None])} cells more than the header has"
    if None in raw.values():
        return "fewer cells than the header has"
    for column, text in raw.items():
        try:
            parse_cell(text, types.get(column))
        except (ValueError, OverflowError):
            return f"{column} {text!r} is not {_KIND_NAMES[types[column]]}"
    return ""


_KIND_NAMES = {int: "a whole number", float: "a number", bool: "true or false"}


def write_rows(path: Path, columns: tuple[str, ...], rows: Iterable[dict]) -> None:
    """Rewrite ``path`` with a header and ``rows``, atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_cell(row.get(c)) for c in columns])
    atomic_write_text(Path(path), buf.getvalue())
