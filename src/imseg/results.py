"""``RUN/results.csv``: one row per trained model, shared by every stage of a run.

Rows are keyed by the model's place in the study (stage, approach, run,
teacher count, generation, candidate); a key already present means the model
is done, which is what resume relies on. The file is rewritten atomically on
every append, so an interrupted run never leaves a torn row.

One process writes a given file. Parallel workers (the Ray executor) each keep
their own table on a journal file, seeded with the driver's rows as ``known``
rows that are looked up but never written there; the driver ``merge``s what
they produced into results.csv.

A row counts only while its model is on disk as recorded: its ``checkpoint`` is the
file its key names (``models/<approach>/r<run>[_n<n>]_g<gen>/c<cand>.pt``) and that
file exists. Other rows (a deleted or lost checkpoint, a row pasted from elsewhere)
are *unmatched*: left out of ``rows`` (summaries, reports, predict, resume), named in
one warning, kept in the file, and replaced when their model is trained again, which
a resumed run does for every model of the study whose row is unmatched. A folder
without ``models/`` (results copied alone, tables built in tests) is not checked.
A damaged line is a DataError naming the file and line (:func:`imseg.csvrows.read_rows`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath

from imseg.csvrows import format_cell, read_rows, write_rows
from imseg.errors import DataError
from imseg.logs import log, place_name

COLUMNS: tuple[str, ...] = (
    "stage", "approach", "run", "n_teachers", "generation", "candidate", "seed", "model",
    "alpha", "params", "n_train_pairs", "val_iou", "test_iou", "val_dice", "test_dice", "pseudo_iou",
    "pseudo_dice", "im_fraction", "best_epoch", "seconds", "checkpoint", "test_details",
    "settings", "note",
)
KEY: tuple[str, ...] = ("stage", "approach", "run", "n_teachers", "generation", "candidate")
BENCHMARKS: tuple[str, ...] = ("fdt", "ldt", "aldt")
"""The ``stage`` of a benchmark's rows (the yardsticks: docs/method.md §4)."""
INT_COLUMNS = {"run", "n_teachers", "generation", "candidate", "seed", "params",
               "n_train_pairs", "best_epoch"}
FLOAT_COLUMNS = {"alpha", "val_iou", "test_iou", "val_dice", "test_dice", "pseudo_iou",
                 "pseudo_dice", "im_fraction", "seconds"}
TYPES: dict[str, type] = {**dict.fromkeys(INT_COLUMNS, int), **dict.fromkeys(FLOAT_COLUMNS, float)}


MODELS = "models"
"""The run folder's folder of segmentation checkpoints."""


def _key(row: dict) -> tuple[str, ...]:
    return tuple(format_cell(row.get(k)) for k in KEY)


def model_folder(approach: str, run: int, n_teachers: int | None, generation: int) -> str:
    """``<approach>/r<run>[_n<n>]_g<gen>``: a stage's folder under models/ and samples/."""
    n = f"_n{n_teachers}" if n_teachers is not None else ""
    return f"{approach}/r{run}{n}_g{generation}"


@dataclass(frozen=True)
class Place:
    """Where a model sits in a study (a row's :data:`KEY`); its seed, results row and
    checkpoint follow from this."""

    stage: str
    approach: str
    run: int = 0
    n_teachers: int | None = None
    generation: int = 0
    candidate: int = 0

    def key(self) -> dict:
        return asdict(self)

    def folder(self) -> str:
        return model_folder(self.approach, self.run, self.n_teachers, self.generation)


def checkpoint_name(row: dict) -> str:
    """The checkpoint of the model a row's key names, relative to the run folder."""
    folder = model_folder(row["approach"], row["run"], row.get("n_teachers"), row["generation"])
    return f"{MODELS}/{folder}/c{row['candidate']}.pt"


def checkpoint_problem(row: dict, run_dir: Path) -> str:
    """Why ``row``'s model is not on disk in ``run_dir`` as recorded, or ''."""
    recorded = row.get("checkpoint") or ""
    try:
        expected = checkpoint_name(row)
    except (KeyError, TypeError):
        return "its key is incomplete"
    if not recorded or PurePath(recorded) != PurePath(expected):
        return f"it names checkpoint {recorded or '(none)'}, not its own {expected}"
    path = Path(run_dir) / expected
    if not path.is_file() or path.stat().st_size == 0:
        return f"its checkpoint {expected} is missing"
    return ""


def learned_from(rows: list[dict], row: dict) -> list[dict]:
    """The rows among ``rows`` whose models may have learned from ``row``'s: for a start
    stage (LDT, ALDT, a trainer's LDT) every SSL row of its run (its models teach the
    first generation and train the EvalNets); for a generation the later generations of
    its chain. A retrained model must equal the old one while such rows exist."""
    if row["stage"] != "ssl":
        return [r for r in rows if r["stage"] == "ssl" and r["run"] == row["run"]]
    chain = ("approach", "run", "n_teachers")
    return [r for r in rows if r["stage"] == "ssl" and r["generation"] > row["generation"]
            and all(r[c] == row[c] for c in chain)]


@dataclass
class Unmatched:
    """A row whose model is not on disk as recorded: why, and whether it is the file's."""

    row: dict
    why: str
    own: bool


class ResultsTable:
    """Rows of a run's results.csv, kept in memory and written through atomically."""

    def __init__(self, path: Path, known: Iterable[dict] = (),
                 run_dir: Path | None = None) -> None:
        """Read ``path`` if it exists. ``known`` rows (another table's) are found by
        ``get``/``has``/``select`` like the file's own but are never written to ``path``.
        ``run_dir``: where the rows' checkpoints are (default: the file's folder)."""
        self.path = Path(path)
        self.run_dir = Path(run_dir) if run_dir is not None else self.path.parent
        self.rows: list[dict] = []
        self._keys: set[tuple[str, ...]] = set()
        self._known: set[tuple[str, ...]] = set()
        self.unmatched: dict[tuple[str, ...], Unmatched] = {}
        check = (self.run_dir / MODELS).is_dir()
        for row in read_rows(self.path, COLUMNS, TYPES, required=KEY):
            if _key(row) in self._keys or _key(row) in self.unmatched:
                raise DataError(f"{self.path}: two rows for {place_name(row)}; delete the one "
                                "that does not belong to this run folder")
            self._take(row, check, own=True)
        for row in known:  # a known row with its model on disk stands in for an unmatched one
            if _key(row) not in self._keys:
                self._take({c: row.get(c) for c in COLUMNS}, check, own=False)
        self._warn_unmatched()

    def _take(self, row: dict, check: bool, own: bool) -> None:
        why = checkpoint_problem(row, self.run_dir) if check else ""
        if why:
            self.unmatched.setdefault(_key(row), Unmatched(row, why, own))
            return
        self.rows.append(row)
        self._keys.add(_key(row))
        if not own:
            self._known.add(_key(row))

    def _warn_unmatched(self) -> None:
        own = [u for u in self.unmatched.values() if u.own]
        if not own:
            return
        listed = "; ".join(f"{place_name(u.row)}: {u.why}" for u in own[:5])
        more = f"; and {len(own) - 5} more" if len(own) > 5 else ""
        rows = f"{len(own)} row is" if len(own) == 1 else f"{len(own)} rows are"
        log.warning(f"{self.path}: {rows} not used, their model is not on disk as recorded "
                    f"({listed}{more}); a resumed run trains the models of its study again and "
                    "replaces their rows; delete the lines of any others")

    def has(self, **key: object) -> bool:
        return _key(key) in self._keys

    def get(self, **key: object) -> dict | None:
        k = _key(key)
        return next((r for r in self.rows if _key(r) == k), None)

    def previous(self, **key: object) -> Unmatched | None:
        """The unmatched row of ``key`` (its model gone or never there) and why, or None."""
        return self.unmatched.get(_key(key))

    def every_row(self) -> list[dict]:
        """The rows and the unmatched rows (what a worker's table needs as ``known``)."""
        return self.rows + [u.row for u in self.unmatched.values()]

    def add(self, row: dict) -> None:
        """Append one row (unknown columns are an error) and rewrite the file atomically; an
        unmatched row of its key is replaced."""
        _check_columns(row)
        k = _key(row)
        if k in self._keys:
            raise ValueError(f"results.csv already has a row for {dict(zip(KEY, k, strict=True))}")
        self._append(row)
        self._write()

    def merge(self, rows: Iterable[dict]) -> int:
        """Add the rows whose keys are new (others are skipped), writing the file once;
        returns how many were added. How a driver takes in rows made elsewhere."""
        added = 0
        for row in rows:
            _check_columns(row)
            if _key(row) not in self._keys:
                self._append(row)
                added += 1
        if added:
            self._write()
        return added

    def _append(self, row: dict) -> None:
        k = _key(row)
        self.unmatched.pop(k, None)
        self.rows.append({c: row.get(c) for c in COLUMNS})
        self._keys.add(k)
        self._known.discard(k)

    def select(self, **where: object) -> list[dict]:
        """Rows whose columns equal the given values (compared as text)."""
        return [r for r in self.rows if all(format_cell(r.get(c)) == format_cell(v) for c, v in where.items())]

    def _write(self) -> None:
        kept = [u.row for u in self.unmatched.values() if u.own]  # never lost, never used
        write_rows(self.path, COLUMNS,
                   [*(r for r in self.rows if _key(r) not in self._known), *kept])


def _check_columns(row: dict) -> None:
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise KeyError(f"unknown results columns {sorted(unknown)}")


def top_k(rows: list[dict], k: int, score: str = "val_iou") -> list[dict]:
    """The ``k`` best rows by validation score; ties broken by candidate number."""
    return sorted(rows, key=lambda r: (-(r[score] if r[score] is not None else -1.0),
                                       r["candidate"]))[:k]


JOURNAL_DIR = "journal"
"""Folder of the per-job journals (Ray workers' tables) inside the run folder."""


def journal_tables(run_dir: Path) -> list[tuple[Path, ResultsTable]]:
    """The journals a parallel run (still running, or stopped) left in ``run_dir``."""
    folder = Path(run_dir) / JOURNAL_DIR
    if not folder.is_dir():
        return []
    return [(path, ResultsTable(path, run_dir=run_dir)) for path in sorted(folder.glob("*.csv"))]


def merge_journals(results: ResultsTable, run_dir: Path) -> int:
    """Take the rows of every journal in ``run_dir`` into ``results``, then delete the
    journals; returns how many rows were new. Run on every start too, before the settings
    check, so rows an interrupted parallel run left are checked like the others."""
    added = 0
    for path, journal in journal_tables(run_dir):
        added += results.merge(journal.rows)
        path.unlink()
    folder = Path(run_dir) / JOURNAL_DIR
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return added
