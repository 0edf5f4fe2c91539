"""``RUN/results.csv``: one row per trained model, shared by every stage of a run.

Rows are keyed by the model's place in the study (stage, approach, run,
teacher count, generation, candidate); a key already present means the model
is done, which is what resume relies on. The file is rewritten atomically on
every append, so an interrupted run never leaves a torn row.

One process writes a given file. Parallel workers (the Ray executor) each keep
their own table on a journal file, seeded with the driver's rows as ``known``
rows that are looked up but never written there; the driver ``merge``s what
they produced into results.csv.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from imseg.csvrows import format_cell, read_rows, write_rows

COLUMNS: tuple[str, ...] = (
    "stage", "approach", "run", "n_teachers", "generation", "candidate", "seed", "model",
    "alpha", "params", "n_train_pairs", "val_iou", "test_iou", "val_dice", "test_dice", "pseudo_iou",
    "pseudo_dice", "im_fraction", "best_epoch", "seconds", "checkpoint", "test_details",
    "settings", "note",
)
KEY: tuple[str, ...] = ("stage", "approach", "run", "n_teachers", "generation", "candidate")
INT_COLUMNS = {"run", "n_teachers", "generation", "candidate", "seed", "params",
               "n_train_pairs", "best_epoch"}
FLOAT_COLUMNS = {"alpha", "val_iou", "test_iou", "val_dice", "test_dice", "pseudo_iou",
                 "pseudo_dice", "im_fraction", "seconds"}
TYPES: dict[str, type] = {**dict.fromkeys(INT_COLUMNS, int), **dict.fromkeys(FLOAT_COLUMNS, float)}


def _key(row: dict) -> tuple[str, ...]:
    return tuple(format_cell(row.get(k)) for k in KEY)


class ResultsTable:
    """Rows of a run's results.csv, kept in memory and written through atomically."""

    def __init__(self, path: Path, known: Iterable[dict] = ()) -> None:
        """Read ``path`` if it exists. ``known`` rows (another table's) are found by
        ``get``/``has``/``select`` like the file's own but are never written to ``path``."""
        self.path = Path(path)
        self.rows: list[dict] = read_rows(self.path, COLUMNS, TYPES)
        self._keys = {_key(r) for r in self.rows}
        self._known: set[tuple[str, ...]] = set()
        for row in known:
            k = _key(row)
            if k not in self._keys:
                self.rows.append({c: row.get(c) for c in COLUMNS})
                self._keys.add(k)
                self._known.add(k)

    def has(self, **key: object) -> bool:
        return _key(key) in self._keys

    def get(self, **key: object) -> dict | None:
        k = _key(key)
        return next((r for r in self.rows if _key(r) == k), None)

    def add(self, row: dict) -> None:
        """Append one row (unknown columns are an error) and rewrite the file atomically."""
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise KeyError(f"unknown results columns {sorted(unknown)}")
        k = _key(row)
        if k in self._keys:
            raise ValueError(f"results.csv already has a row for {dict(zip(KEY, k, strict=True))}")
        self.rows.append({c: row.get(c) for c in COLUMNS})
        self._keys.add(k)
        self._write()

    def merge(self, rows: Iterable[dict]) -> int:
        """Add the rows whose keys are new (others are skipped), writing the file once;
        returns how many were added. How a driver takes in rows made elsewhere."""
        added = 0
        for row in rows:
            unknown = set(row) - set(COLUMNS)
            if unknown:
                raise KeyError(f"unknown results columns {sorted(unknown)}")
            k = _key(row)
            if k in self._keys:
                continue
            self.rows.append({c: row.get(c) for c in COLUMNS})
            self._keys.add(k)
            added += 1
        if added:
            self._write()
        return added

    def select(self, **where: object) -> list[dict]:
        """Rows whose columns equal the given values (compared as text)."""
        return [r for r in self.rows if all(format_cell(r.get(c)) == format_cell(v) for c, v in where.items())]

    def _write(self) -> None:
        write_rows(self.path, COLUMNS, (r for r in self.rows if _key(r) not in self._known))


def top_k(rows: list[dict], k: int, score: str = "val_iou") -> list[dict]:
    """The ``k`` best rows by validation score; ties broken by candidate number."""
    return sorted(rows, key=lambda r: (-(r[score] if r[score] is not None else -1.0),
                                       r["candidate"]))[:k]
