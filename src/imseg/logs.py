"""Readable log lines: one per finished model, and plain notes, on stderr.

On a terminal the lines are written through tqdm so they do not tear the
progress bars; in a redirected log there are no bars (see
``commands.common.show_progress``), only these lines.
"""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

LOGGER_NAME = "imseg"
log = logging.getLogger(LOGGER_NAME)


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


def place_name(row: dict) -> str:
    """``ldt r0 c1`` or ``im r0 n3 g1 c2``: where a model sits, short."""
    parts = [str(row["approach"]), f"r{row['run']}"]
    if row.get("n_teachers") is not None:
        parts.append(f"n{row['n_teachers']}")
    if row.get("stage") == "ssl":
        parts.append(f"g{row['generation']}")
    parts.append(f"c{row['candidate']}")
    return " ".join(parts)


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
