"""Test score against labeled images: the active-labeling view of ``imseg report``.

Runs trained on versions of one data set (``imseg prepare add``'s additions, or
``prepare``'s labeled fractions of one source) differ in how many labeled images they
learned from. Where a report's runs hold two or more such counts for one source, this
draws each stage's score against the count:

* **x**: the labeled training images of the version the run trained on: the run's own
  copy of dataset.yaml (the data folder may have moved on to a later version since).
* **Lines**: one per way of choosing (the set's ``chosen_by`` history: ``im``,
  ``entropy``, ``random``, ``by hand`` …) and stage (LDT, IM G1 …). A run on a set as
  prepared (no additions) starts every line of its source.
* **y**: per run the mean of the stage's models, then the mean over runs of one count
  and line (seeds); the band spans those runs' lowest and highest.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from imseg.data.layout import read_info
from imseg.errors import DataError
from imseg.evaluation.visualize import display_name, save_figure

AS_PREPARED = "as prepared"
"""The line of runs whose sets were not added to, when no run of the source was."""


@dataclass(frozen=True)
class Point:
    """One run's mean score of one stage, at the labeled count its set had."""

    source: str
    chosen_by: str
    stage: str
    labeled: int
    score: float


@dataclass(frozen=True)
class CurvePoint:
    """The runs of one source, line and count: their mean, lowest and highest score."""

    source: str
    chosen_by: str
    stage: str
    labeled: int
    mean: float
    low: float
    high: float
    n_runs: int


def stage_name(approach: str, generation: int) -> str:
    """``LDT``, ``IM+ G1``: the approach's display name, and its generation past 0."""
    name = display_name(approach)
    return name if generation == 0 else f"{name} G{generation}"


def run_points(run_dir: Path, rows: list[dict], column: str) -> list[Point]:
    """One point per stage of a run, placed by the run's copy of its data set's info."""
    try:
        info = read_info(run_dir)
    except DataError:
        return []  # a run folder from before dataset.yaml was copied: no count to place it
    chosen = "+".join(dict.fromkeys(info.chosen_by)) or AS_PREPARED
    source = f"{info.source or Path(run_dir).name} ({info.task})"
    labeled = int(info.counts.get("train_labeled", 0))
    scores: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        value = r.get(column)
        if value in (None, ""):
            continue
        scores[stage_name(r["approach"], int(r.get("generation") or 0))].append(float(value))
    return [Point(source, chosen, stage, labeled, float(np.mean(v))) for stage, v in
            scores.items()]


def curve(points: Iterable[Point]) -> list[CurvePoint]:
    """The curves of every source with two or more labeled counts (module doc)."""
    by_source: dict[str, list[Point]] = defaultdict(list)
    for p in points:
        by_source[p.source].append(p)
    out: list[CurvePoint] = []
    for source, found in by_source.items():
        if len({p.labeled for p in found}) < 2:
            continue
        lines = sorted({p.chosen_by for p in found if p.chosen_by != AS_PREPARED}) or [
            AS_PREPARED]
        for line in lines:
            groups: dict[tuple[str, int], list[float]] = defaultdict(list)
            for p in found:
                if p.chosen_by in (line, AS_PREPARED):
                    groups[(p.stage, p.labeled)].append(p.score)
            for (stage, labeled), values in sorted(groups.items()):
                out.append(CurvePoint(source, line, stage, labeled, float(np.mean(values)),
                                      min(values), max(values), len(values)))
    return out


def curve_csv(points: list[CurvePoint]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["source", "chosen_by", "stage", "labeled", "mean", "low", "high",
                     "n_runs"])
    for p in points:
        writer.writerow([p.source, p.chosen_by, p.stage, p.labeled, f"{p.mean:.6g}",
                         f"{p.low:.6g}", f"{p.high:.6g}", p.n_runs])
    return buf.getvalue()


LINE_STYLES = ("-", "--", ":", "-.")


def short_source(source: str) -> str:
    """``/data/dsb2018/images (binary)`` → ``dsb2018/images (binary)``."""
    path, _, task = source.rpartition(" (")
    parts = Path(path).parts[-2:]
    return f"{'/'.join(parts)} ({task}" if path and parts else source


def curve_figure(points: list[CurvePoint], ylabel: str) -> Figure:
    """One panel per source: a colour per way of choosing, a line style per stage."""
    sources = list(dict.fromkeys(p.source for p in points))
    fig = Figure(figsize=(6 * len(sources), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sources)))
    for ax, source in zip(axes, sources, strict=True):
        mine = [p for p in points if p.source == source]
        stages = list(dict.fromkeys(p.stage for p in mine))
        lines = list(dict.fromkeys(p.chosen_by for p in mine))
        for li, line in enumerate(lines):
            color = f"C{li}"
            for stage in stages:
                series = sorted((p for p in mine if (p.chosen_by, p.stage) == (line, stage)),
                                key=lambda p: p.labeled)
                if not series:
                    continue
                x = [p.labeled for p in series]
                ax.plot(x, [p.mean for p in series], marker="o", color=color,
                        linestyle=LINE_STYLES[stages.index(stage) % len(LINE_STYLES)],
                        label=f"{line} ({stage})")
                ax.fill_between(x, [p.low for p in series], [p.high for p in series],
                                color=color, alpha=0.12)
        ax.set_title(short_source(source), fontsize=9)
        ax.set_xlabel("labeled training images")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def write_curve(points: Iterable[Point], out: Path, ylabel: str) -> list[Path]:
    """``labeled.csv`` and ``labeled.png/.pdf`` in ``out`` when some source has two or
    more labeled counts; nothing otherwise. Returns the files written."""
    found = curve(points)
    if not found:
        return []
    (out / "labeled.csv").write_text(curve_csv(found))
    return [out / "labeled.csv", *save_figure(curve_figure(found, ylabel), out / "labeled")]
