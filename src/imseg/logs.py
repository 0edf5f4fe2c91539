"""Readable log lines: one when a stage starts, one per finished model (EvalNets too),
progress of long passes, and plain notes, on stderr and in the run folder's ``log.txt``.

On a terminal the lines are written through tqdm so they do not tear the
progress bars; in a redirected log there are no bars (see
``commands.common.show_progress``), only these lines. The run folder keeps its own
copy (:func:`log_to_run_folder`), appended by every process that opens it, so a
run's history (each start, resume, finished model and error) stays with its
results even when nobody redirected stderr.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path

from tqdm import tqdm

from imseg.errors import ImsegError

LOGGER_NAME = "imseg"
RUN_LOG = "log.txt"
log = logging.getLogger(LOGGER_NAME)
_run_log: logging.FileHandler | None = None


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never stop a run
            self.handleError(record)


def setup_logging(level: int = logging.INFO) -> None:
    """Send imseg's log lines to stderr as plain text (once per process)."""
    if any(isinstance(h, _TqdmHandler) for h in log.handlers):
        return
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def log_to_run_folder(run_dir: Path) -> None:
    """Append this process's log lines to ``run_dir/log.txt`` (dated: runs last days),
    instead of any run folder logged to before (one run folder per process)."""
    global _run_log
    stop_run_log()
    _run_log = logging.FileHandler(Path(run_dir) / RUN_LOG, encoding="utf-8")
    _run_log.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(_run_log)
    if log.level == logging.NOTSET:  # used as a library: the file still gets the model lines
        log.setLevel(logging.INFO)


def stop_run_log() -> None:
    """Stop writing to the run folder's log (its run folder was closed)."""
    global _run_log
    if _run_log is not None:
        log.removeHandler(_run_log)
        _run_log.close()
        _run_log = None


def note_in_run_log(message: str, error: BaseException | None = None) -> None:
    """Write ``message`` (and, for an unexpected error, its traceback) to the run folder's
    log only: the console has it already, from the command line's own message."""
    if _run_log is None:
        return
    if error is not None:
        message += "\n" + "".join(traceback.format_exception(error)).rstrip()
    _run_log.handle(log.makeRecord(LOGGER_NAME, logging.ERROR, __file__, 0, message, (), None))


def note_failure_in_run_log(exc: BaseException) -> None:
    """Why a command stopped, in the run folder's log: a user error's message, or an
    unexpected error with its traceback (an interrupt says nothing here)."""
    if isinstance(exc, ImsegError):
        note_in_run_log(f"imseg: error: {exc}")
    elif isinstance(exc, Exception):
        note_in_run_log("imseg: stopped by an unexpected error", exc)


def stage_name(row: dict) -> str:
    """``ldt r0`` or ``im r0 n3 g1``: a stage (or generation) of a run, short."""
    parts = [str(row["approach"]), f"r{row['run']}"]
    if row.get("n_teachers") is not None:
        parts.append(f"n{row['n_teachers']}")
    if row.get("stage") == "ssl":
        parts.append(f"g{row['generation']}")
    return " ".join(parts)


def place_name(row: dict) -> str:
    """``ldt r0 c1`` or ``im r0 n3 g1 c2``: where a model sits, short."""
    return f"{stage_name(row)} c{row['candidate']}"


def model_line(row: dict, epochs: int) -> str:
    """The log line of a finished model."""
    def f(value: object) -> str:
        return "-" if value is None else f"{float(value):.3f}"  # type: ignore[arg-type]

    return (f"{place_name(row)}: best epoch {row['best_epoch']}/{epochs}, "
            f"val iou {f(row.get('val_iou'))}, test iou {f(row.get('test_iou'))}, "
            f"{row['n_train_pairs']} pairs, {float(row['seconds']):.1f} s")


def bar_disable(progress: bool = True) -> bool | None:
    """tqdm's ``disable`` for a bar: off when asked, and (tqdm's ``None``) off whenever
    stderr is not a terminal, so redirected logs never fill with carriage returns."""
    return True if not progress else None


def evalnet_line(row: dict, epochs: int) -> str:
    """The log line of a finished EvalNet (a row of evalnet_results.csv)."""
    return (f"evalnet {row['kind']} r{row['run']} e{row['index']}: best epoch "
            f"{row['best_epoch']}/{epochs}, val MAE {float(row['val_mae']):.4f}, Spearman "
            f"{float(row['val_spearman']):.3f}, {row['n_train']} pairs, "
            f"{float(row['seconds']):.1f} s")


class ProgressLines:
    """Log lines for a long pass over ``total`` items: one every ``every`` seconds, so a
    redirected log (no progress bar) shows it moving; a short pass writes none."""

    def __init__(self, what: str, total: int, unit: str = "images", every: float = 60.0) -> None:
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self._last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last >= self.every and done < self.total:
            log.info(f"{self.what}: {done}/{self.total} {self.unit} ({done / self.total:.0%})")
            self._last = now
