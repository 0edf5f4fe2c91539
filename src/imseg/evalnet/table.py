"""``RUN/evalnet_results.csv``: one row per trained EvalNet, beside results.csv.

A row keyed by (kind, run, index) means that EvalNet is finished, so a resumed
run does not train it again. ``kept`` is filled once all EvalNets of a kind and
run are done. Every change rewrites the file atomically.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from imseg.storage import atomic_write_text

COLUMNS: tuple[str, ...] = (
    "kind", "run", "index", "seed", "val_mae", "val_spearman", "n_train", "n_val", "kept",
    "best_epoch", "seconds", "checkpoint",
)
_INT = {"run", "index", "seed", "n_train", "n_val", "best_epoch"}
_FLOAT = {"val_mae", "val_spearman", "seconds"}


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _parse(column: str, text: str) -> object:
    if text == "":
        return None
    if column in _INT:
        return int(float(text))
    if column in _FLOAT:
        return float(text)
    if column == "kept":
        return text.lower() == "true"
    return text


class EvalNetTable:
    """The rows of evalnet_results.csv, in memory and written through atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: list[dict] = []
        if self.path.is_file():
            with self.path.open(newline="") as fh:
                self.rows = [{c: _parse(c, raw.get(c) or "") for c in COLUMNS}
                             for raw in csv.DictReader(fh)]

    def get(self, kind: str, run: int, index: int) -> dict | None:
        return next((r for r in self.rows
                     if (r["kind"], r["run"], r["index"]) == (kind, run, index)), None)

    def select(self, kind: str, run: int) -> list[dict]:
        return sorted((r for r in self.rows if (r["kind"], r["run"]) == (kind, run)),
                      key=lambda r: r["index"])

    def add(self, row: dict) -> None:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise KeyError(f"unknown evalnet_results columns {sorted(unknown)}")
        if self.get(row["kind"], row["run"], row["index"]) is not None:
            raise ValueError(f"evalnet_results.csv already has {row['kind']} r{row['run']} "
                             f"e{row['index']}")
        self.rows.append({c: row.get(c) for c in COLUMNS})
        self._write()

    def mark_kept(self, kind: str, run: int, keep: int) -> list[dict]:
        """Mark the ``keep`` rows of (kind, run) with the lowest val MAE; return them."""
        rows = self.select(kind, run)
        best = sorted(rows, key=lambda r: (_mae_key(r["val_mae"]), r["index"]))[:keep]
        for r in rows:
            r["kept"] = any(r is b for b in best)
        self._write()
        return sorted(best, key=lambda r: r["index"])

    def _write(self) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in self.rows:
            writer.writerow([_format(row.get(c)) for c in COLUMNS])
        atomic_write_text(self.path, buf.getvalue())


def _mae_key(value: float | None) -> float:
    return math.inf if value is None or math.isnan(value) else value
