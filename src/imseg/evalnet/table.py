"""``RUN/evalnet_results.csv``: one row per trained EvalNet, beside results.csv.

A row keyed by (kind, run, index) means that EvalNet is finished, so a resumed
run does not train it again. ``kept`` is filled once all EvalNets of a kind and
run are done. Every change rewrites the file atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

from imseg.csvrows import read_rows, write_rows

COLUMNS: tuple[str, ...] = (
    "kind", "run", "index", "seed", "val_mae", "val_spearman", "n_train", "n_val", "kept",
    "best_epoch", "seconds", "checkpoint",
)
_INT = {"run", "index", "seed", "n_train", "n_val", "best_epoch"}
_FLOAT = {"val_mae", "val_spearman", "seconds"}
_TYPES: dict[str, type] = {**dict.fromkeys(_INT, int), **dict.fromkeys(_FLOAT, float),
                           "kept": bool}


class EvalNetTable:
    """The rows of evalnet_results.csv, in memory and written through atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: list[dict] = read_rows(self.path, COLUMNS, _TYPES)

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
        write_rows(self.path, COLUMNS, self.rows)


def _mae_key(value: float | None) -> float:
    return math.inf if value is None or math.isnan(value) else value
