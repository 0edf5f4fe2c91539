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
        """Read ``path``. A row whose checkpoint is gone (deleted, say, because it was
        damaged) is *lost*: left out of ``rows``, so the stage trains that EvalNet again,
        but kept in the file until then (:meth:`lost_row` gives it for comparison). A
        folder without ``evalnets/`` (a table built elsewhere) is not checked."""
        self.path = Path(path)
        rows = read_rows(self.path, COLUMNS, _TYPES)
        check = (self.path.parent / NETS).is_dir()
        self.lost = {_key(r): r for r in rows if check and not _on_disk(self.path.parent, r)}
        self.rows: list[dict] = [r for r in rows if _key(r) not in self.lost]

    def lost_row(self, kind: str, run: int, index: int) -> dict | None:
        """The file's row of an EvalNet whose checkpoint is gone, until it is replaced."""
        return self.lost.get((kind, run, index))

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
        self.lost.pop(_key(row), None)
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
        write_rows(self.path, COLUMNS, [*self.rows, *self.lost.values()])


RESULTS_FILE = "evalnet_results.csv"
"""The table's name in the run folder."""

NETS = "evalnets"
"""The run folder's folder of EvalNet checkpoints."""


def _key(row: dict) -> tuple:
    return row["kind"], row["run"], row["index"]


def _on_disk(run_dir: Path, row: dict) -> bool:
    """Whether a row's checkpoint file is there (not empty)."""
    path = run_dir / str(row.get("checkpoint") or "")
    return path.is_file() and path.stat().st_size > 0


def _mae_key(value: float | None) -> float:
    return math.inf if value is None or math.isnan(value) else value
