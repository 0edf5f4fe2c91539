"""Tables and paper-style figures of one or more runs, from their results.csv alone.

Conventions (docs/method.md §9):

* A *panel* is one data set. Runs whose run.yaml names the same data path are
  pooled into one panel; any other run is a panel of its own.
* A score of an (approach, generation) is the mean ± std over every student of
  that generation, pooled over runs (the ``run`` column and run folders) and
  teacher counts; std is the population std (``ddof=0``, as ``imseg run``'s
  summary). ``kept_only`` instead uses, per stage, only the top-K students by
  validation score that the loop kept as the next teachers (K: ``benchmark.keep``
  in the run's config.yaml, or n when more teachers were taken). Benchmarks (LDT,
  ALDT, FDT) are generation 0, all candidates; so are the stages an online SSL
  trainer trained on LDT (approach ``fixmatch``, ``unimatch``, ...): yardsticks
  drawn as lines, in the colour of the recipe that puts IM on top of them.
* Rows of an (approach, generation) made under different settings are never pooled:
  each settings group is a row of the tables and a series of the figures of its own,
  named with its rows' settings ids. Groups are the rows' ``settings`` ids, or what
  ``write_report``'s ``groups_of`` says (``imseg report``: the settings each stage
  depends on, :func:`imseg.experiment.settings.settings_groups`).
* Pseudo-label quality (``pseudo_iou``) and IM size (``im_fraction``) are one
  value per stage (every student of a stage shares them), so they are averaged
  over stages, not students.
* Runs trained on versions of one data set with different labeled counts (active
  labeling's rounds) also get ``labeled.png``: the score against labeled images, a line
  per way of choosing them (:mod:`imseg.evaluation.labeled_curve`).

dataset.yaml (found through run.yaml) is read only for names and colours.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from imseg.data.layout import DatasetInfo, read_info
from imseg.errors import DataError
from imseg.evaluation.labeled_curve import run_points, write_curve
from imseg.evaluation.summary import BENCHMARK_ORDER, group_scores, split_labels
from imseg.evaluation.visualize import display_name, sample_figures, save_figure
from imseg.results import BENCHMARKS, ResultsTable, journal_tables, top_k

# Fixed order (and so fixed colours) of the paper's approaches; others follow by name.
APPROACH_ORDER = ("aim_plus_plus", "im_plus_plus", "aim_plus", "im_plus", "im", "noisy_student",
                  "evalnet", "model_ensemble", "input_ensemble", "consistency_loss",
                  "unimatch_im", "unimatch", "fixmatch_im", "fixmatch", "mean_teacher_im",
                  "mean_teacher")
APPROACH_COLORS = {
    "im": "tab:red", "im_plus": "tab:orange", "im_plus_plus": "tab:brown",
    "aim_plus": "tab:pink", "aim_plus_plus": "tab:purple", "noisy_student": "tab:blue",
    "evalnet": "tab:olive", "model_ensemble": "tab:green", "input_ensemble": "tab:cyan",
    "consistency_loss": "goldenrod",
    # an online SSL trainer's stage (a line) shares its colour with IM on top of it
    "unimatch_im": "navy", "unimatch": "navy", "fixmatch_im": "teal", "fixmatch": "teal",
    "mean_teacher_im": "darkmagenta", "mean_teacher": "darkmagenta",
}
TRAINER_LINE = (0, (5, 1.5, 1, 1.5))
"""Dash pattern of a trainer's stage drawn as a yardstick."""
EXTRA_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#a6761d")
BENCHMARK_STYLE = {"fdt": ("black", (0, (6, 2))), "aldt": ("0.35", (0, (4, 2, 1, 2))),
                   "ldt": ("0.6", (0, (2, 2)))}
METRIC_LABELS = {"iou": "IoU", "dice": "Dice", "count_error": "cell-count error",
                 "count_error_rel": "relative cell-count error"}
METRICS = ("test_iou", "test_dice", "val_iou", "val_dice")
"""Always there; a run adds ``test_<key>`` for each number in its rows' ``test_details``
(per-class scores, HeLa's cell-count errors)."""


def metric_label(column: str, info: DatasetInfo | None = None) -> str:
    """``test_iou`` → ``test IoU`` (``test mIoU`` when the data set has several classes,
    ``test mIoU (alive, dead)`` when its headline averages some of them)."""
    split, _, name = column.partition("_")
    word = METRIC_LABELS.get(name, name)
    if info is not None and info.task != "binary" and name in ("iou", "dice"):
        word = "m" + word
        if info.headline_classes:
            word += f" ({', '.join(info.headline_classes)})"
    return f"{split} {word}" if name else column


def approach_sort_key(approach: str) -> tuple:
    if approach in BENCHMARKS:
        return (0, BENCHMARK_ORDER.index(approach), "")
    if approach in APPROACH_ORDER:
        return (1, APPROACH_ORDER.index(approach), "")
    return (2, 0, approach)


def approach_colors(approaches: list[str]) -> dict[str, str]:
    """The same colour for an approach in every panel and every report (greys are kept for
    the benchmarks)."""
    others = sorted(a for a in set(approaches) if a not in APPROACH_COLORS and a not in BENCHMARKS)
    return {**APPROACH_COLORS, **{a: EXTRA_COLORS[i % len(EXTRA_COLORS)] for i, a in enumerate(others)}}


# ---------------------------------------------------------------------------- loading
@dataclass
class RunData:
    """One run folder: its results rows and what run.yaml/config.yaml tell about it."""

    run_dir: Path
    rows: list[dict]
    data_path: Path | None
    info: DatasetInfo | None
    keep: dict[str, int]


@dataclass
class Panel:
    """One data set: the runs pooled into one panel of the figures."""

    name: str
    runs: list[RunData] = field(default_factory=list)

    @property
    def info(self) -> DatasetInfo | None:
        return next((r.info for r in self.runs if r.info is not None), None)


GroupsOf = Callable[[Path, list[dict]], list[str]]
"""A run folder and its rows → one settings group per row (rows of a group are pooled)."""

SETTINGS_GROUP = "settings_group"
"""The column :func:`load_run` adds: the row's settings group."""


def load_run(run_dir: Path, groups_of: GroupsOf | None = None) -> RunData:
    """Read a run's results.csv (required), run.yaml and config.yaml (optional), and the rows
    of the journals a parallel run is still writing (read only: a report of a study that
    is running shows every model finished so far)."""
    run_dir = Path(run_dir)
    path = run_dir / "results.csv"
    if not path.is_file():
        raise DataError(f"{path} not found: {run_dir} is not a run folder")
    journals = [row for _, journal in journal_tables(run_dir) for row in journal.rows]
    rows = [with_details(r) for r in ResultsTable(path, known=journals).rows]
    if groups_of is not None:
        rows = [{**r, SETTINGS_GROUP: g} for r, g in zip(rows, groups_of(run_dir, rows),
                                                         strict=True)]
    meta = _yaml(run_dir / "run.yaml")
    data_path = Path(meta["data"]) if meta.get("data") else None
    info = None
    for folder in (data_path, run_dir):  # the data set, else the run's own copy of its info
        if folder is None:
            continue
        try:
            info = read_info(folder)
            break
        except DataError:
            info = None  # names and colours fall back to defaults
    config = _yaml(run_dir / "config.yaml")
    k = int((config.get("benchmark") or {}).get("keep", 4))
    keep = {"benchmark": k, "ssl": k}  # an old config's ssl.keep was never used by the loop
    return RunData(run_dir, rows, data_path, info, keep)


def with_details(row: dict) -> dict:
    """``row`` plus a ``test_<key>`` column for each number in its ``test_details`` JSON."""
    text = row.get("test_details")
    if not text:
        return row
    try:
        details = json.loads(text)
    except (TypeError, ValueError):
        return row  # hand-edited or truncated: the row's own columns still report
    extra = {f"test_{k}": float(v) for k, v in details.items()
             if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
             and f"test_{k}" not in row}
    return {**row, **extra}


def metrics_of(panels: list[Panel]) -> list[str]:
    """The columns ``--metric`` may name for these runs: :data:`METRICS` and their details."""
    found = {c for p in panels for run in p.runs for r in run.rows for c in r
             if c.startswith("test_") and c not in METRICS and c != "test_details"
             and r[c] is not None}
    return [*METRICS, *sorted(found)]


def _yaml(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    return data if isinstance(data, dict) else {}


def panels_of(run_dirs: list[Path], groups_of: GroupsOf | None = None) -> list[Panel]:
    """Group runs into panels by data path (runs without one stay alone), in the given order."""
    panels: dict[str, Panel] = {}
    for run_dir in run_dirs:
        run = load_run(run_dir, groups_of)
        key = str(run.data_path.resolve()) if run.data_path else f"run:{run.run_dir.resolve()}"
        if key not in panels:
            panels[key] = Panel(_panel_name(run))
        panels[key].runs.append(run)
    names = [p.name for p in panels.values()]
    for panel in panels.values():  # two data folders with the same name: tell them apart
        if names.count(panel.name) > 1:
            panel.name = f"{panel.name} ({panel.runs[0].run_dir.name})"
    return list(panels.values())


def _panel_name(run: RunData) -> str:
    base = run.data_path.name if run.data_path else run.run_dir.name
    return f"{base} ({run.info.task})" if run.info else base


# ------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class Stat:
    """Mean ± std of one column over the ``n`` values of an (approach, generation)."""

    dataset: str
    approach: str
    generation: int
    mean: float
    std: float
    n: int
    settings: str = ""
    """The settings ids of its rows when the (approach, generation) holds rows of several
    settings, each group a Stat of its own; else ''."""


def model_rows(rows: list[dict]) -> list[dict]:
    """Benchmark candidates (an online trainer's too) and SSL students (other stages, e.g.
    EvalNet training, left out)."""
    return [r for r in rows if r["stage"] == "ssl" or r["stage"] in BENCHMARKS]


def is_yardstick(s: Stat) -> bool:
    """A generation-0 stage (a benchmark, or an online trainer's stage): drawn as a line."""
    return s.generation == 0


def kept_rows(run: RunData) -> list[dict]:
    """Per stage, the top-K students by validation score, as the generation loop kept them."""
    stages: dict[tuple, list[dict]] = defaultdict(list)
    for r in model_rows(run.rows):
        stages[(r["stage"], r["approach"], r["run"], r["n_teachers"], r["generation"])].append(r)
    out = []
    for (stage, *_rest, n, _gen), members in stages.items():
        k = run.keep["benchmark"] if stage in BENCHMARKS else max(run.keep["ssl"], n or 1)
        out.extend(top_k(members, k))
    return out


def stage_rows(rows: list[dict]) -> list[dict]:
    """One row per stage (the first candidate's), for per-stage columns like pseudo_iou."""
    seen: dict[tuple, dict] = {}
    for r in model_rows(rows):
        seen.setdefault((r["stage"], r["approach"], r["run"], r["n_teachers"], r["generation"]), r)
    return list(seen.values())


def stats(dataset: str, rows: list[dict], column: str) -> list[Stat]:
    """Mean ± std (population) of ``column`` per (approach, generation) and settings group,
    benchmarks first."""
    groups = [str(r.get(SETTINGS_GROUP, r.get("settings")) or "") for r in rows]
    scores = group_scores(rows, column, groups)
    labels = split_labels(rows, groups)
    keys = sorted(scores, key=lambda k: (approach_sort_key(k[0]), k[1], labels.get(k, "")))
    return [Stat(dataset, a, g, float(np.mean(scores[(a, g, s)])), float(np.std(scores[(a, g, s)])),
                 len(scores[(a, g, s)]), labels.get((a, g, s), "")) for a, g, s in keys]


def series_name(s: Stat) -> str:
    """The approach's display name, with its rows' settings ids when its stage is split."""
    return display_name(s.approach) + (f" [settings {s.settings}]" if s.settings else "")


def score_stats(panel: Panel, column: str = "test_iou", kept_only: bool = False) -> list[Stat]:
    """The panel's test score per approach and generation (runs pooled)."""
    rows = [r for run in panel.runs for r in (kept_rows(run) if kept_only else model_rows(run.rows))]
    return stats(panel.name, rows, column)


def quality_stats(panel: Panel) -> dict[str, list[Stat]]:
    """``pseudo_iou`` and ``im_fraction`` per approach and generation, one value per stage."""
    rows = [r for run in panel.runs for r in stage_rows(run.rows) if r["stage"] == "ssl"]
    return {c: stats(panel.name, rows, c) for c in ("pseudo_iou", "im_fraction")}


# ----------------------------------------------------------------------------- tables
def stats_csv(items: list[Stat]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dataset", "approach", "generation", "mean", "std", "n", "settings"])
    for s in items:
        writer.writerow([s.dataset, s.approach, s.generation, f"{s.mean:.6g}", f"{s.std:.6g}", s.n,
                         s.settings])
    return buf.getvalue()


def stats_markdown(items: list[Stat], column: str,
                   infos: dict[str, DatasetInfo | None] | None = None) -> str:
    """Per data set: a benchmark table, then approaches × generations ("mean ± std (n)")."""
    out = []
    for dataset in dict.fromkeys(s.dataset for s in items):
        mine = [s for s in items if s.dataset == dataset]
        label = metric_label(column, (infos or {}).get(dataset))
        out.append(f"### {dataset}: {label}, mean ± std (n)\n")
        bench = [s for s in mine if is_yardstick(s)]
        if bench:
            out += ["| benchmark | score |", "|---|---|"]
            out += [f"| {series_name(s)} | {_cell(s)} |" for s in bench]
            out.append("")
        ssl = [s for s in mine if not is_yardstick(s)]
        gens = sorted({s.generation for s in ssl})
        if ssl:
            out.append("| approach | " + " | ".join(f"G{g}" for g in gens) + " |")
            out.append("|---|" + "---|" * len(gens))
            cells = {(series_name(s), s.generation): _cell(s) for s in ssl}
            for name in dict.fromkeys(series_name(s) for s in ssl):
                out.append(f"| {name} | "
                           + " | ".join(cells.get((name, g), "–") for g in gens) + " |")
            out.append("")
    return "\n".join(out) if out else "(no results)\n"


def _cell(s: Stat) -> str:
    return f"{s.mean:.3f} ± {s.std:.3f} ({s.n})"


# ---------------------------------------------------------------------------- figures
def _generation_axis(ax, gens: list[int]) -> None:
    ax.set_xticks(gens, [f"G{g}" for g in gens])
    if gens:
        ax.set_xlim(min(gens) - 0.3, max(gens) + 0.3)
    ax.grid(axis="y", color="0.9")


def _series(ax, items: list[Stat], color, label: str) -> Line2D:
    x = np.array([s.generation for s in items])
    mean = np.array([s.mean for s in items])
    std = np.array([s.std for s in items])
    (line,) = ax.plot(x, mean, "-o", color=color, ms=4, lw=1.6, label=label)
    if len(x) > 1:
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15, lw=0)
    else:
        ax.errorbar(x, mean, yerr=std, color=color, capsize=3, lw=1)
    return line


Series = tuple[str, str]
"""(approach, settings): one line of a figure."""


def _by_approach(items: list[Stat]) -> dict[Series, list[Stat]]:
    out: dict[Series, list[Stat]] = defaultdict(list)
    for s in items:
        out[(s.approach, s.settings)].append(s)
    return out


def _shared_legend(fig: Figure, handles: dict[Series, Line2D], names: dict[Series, str]) -> None:
    """Below the panels, as many columns as the figure's width holds, read row by row."""
    order = sorted(handles, key=lambda k: (approach_sort_key(k[0]), k[1]))
    keys = [k for k in order if k[0] not in BENCHMARKS] + [k for k in order if k[0] in BENCHMARKS]
    ncol = max(1, min(len(keys), int(fig.get_figwidth() / 1.6)))
    keys = _row_major(keys, ncol)
    fig.legend([handles[k] for k in keys], [names[k] for k in keys],
               loc="outside lower center", frameon=False, fontsize=9, ncol=ncol)


def _row_major(items: list, ncol: int) -> list:
    """Reorder so that matplotlib's column-by-column legend reads left to right."""
    nrows = -(-len(items) // ncol)
    return [items[r * ncol + c] for c in range(ncol) for r in range(nrows)
            if r * ncol + c < len(items)]


def scores_figure(panels: list[Panel], per_panel: list[list[Stat]], column: str) -> Figure:
    """Test score over generations per approach (mean line, std band); benchmarks dashed."""
    n = len(panels)
    fig = Figure(figsize=(4.2 * n, 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    colors = approach_colors([s.approach for items in per_panel for s in items])
    handles: dict[Series, Line2D] = {}
    names: dict[Series, str] = {}
    for ax, panel, items in zip(axes, panels, per_panel, strict=True):
        groups = _by_approach(items)
        gens = sorted({s.generation for s in items if not is_yardstick(s)})
        for key, series in groups.items():
            a, name = key[0], series_name(series[0])
            names[key] = name
            if all(is_yardstick(s) for s in series):
                color, dash = BENCHMARK_STYLE[a] if a in BENCHMARK_STYLE else (colors[a],
                                                                                TRAINER_LINE)
                handles[key] = ax.axhline(series[0].mean, color=color, ls=dash, lw=1.3,
                                          label=name)
                ax.annotate(name, (0.01, series[0].mean), va="bottom", fontsize=8,
                            xycoords=("axes fraction", "data"), color=color,
                            bbox={"fc": "white", "ec": "none", "alpha": 0.6, "pad": 0.3})
            else:
                handles[key] = _series(ax, series, colors[a], name)
        _generation_axis(ax, gens)
        ax.set_title(panel.name, fontsize=10)
        ax.set_xlabel("generation")
        ax.set_ylabel(metric_label(column, panel.info))
    _shared_legend(fig, handles, names)
    return fig


def quality_figure(panels: list[Panel], per_panel: list[dict[str, list[Stat]]]) -> Figure:
    """Per data set (row): pseudo-label IoU and mean IM fraction over generations."""
    n = len(panels)
    fig = Figure(figsize=(8.4, 3.4 * n + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n, 2))
    colors = approach_colors([s.approach for q in per_panel for v in q.values() for s in v])
    handles: dict[Series, Line2D] = {}
    names: dict[Series, str] = {}
    titles = {"pseudo_iou": ("pseudo-label quality", "pseudo-label IoU (IM left out)"),
              "im_fraction": ("inconsistency mask size", "mean IM fraction per image")}
    for row, panel, quality in zip(axes, panels, per_panel, strict=True):
        gens = sorted({s.generation for v in quality.values() for s in v})
        for ax, (column, items) in zip(row, quality.items(), strict=True):
            for key, series in _by_approach(items).items():
                names[key] = series_name(series[0])
                handles[key] = _series(ax, series, colors[key[0]], names[key])
            if not items:
                ax.text(0.5, 0.5, "not recorded", ha="center", va="center",
                        transform=ax.transAxes, color="0.5")
            _generation_axis(ax, gens)
            ax.set_title(f"{panel.name}: {titles[column][0]}", fontsize=9)
            ax.set_xlabel("generation")
            ax.set_ylabel(titles[column][1].replace("IoU", metric_label("_iou", panel.info)[1:]))
            if column == "im_fraction":
                ax.set_ylim(bottom=0)
    if handles:
        _shared_legend(fig, handles, names)
    return fig


def fallback_info(run_dir: Path) -> DatasetInfo | None:
    """Task and default names from a checkpoint when dataset.yaml is not reachable."""
    from imseg.storage import load_checkpoint

    ckpt = next(iter(sorted((Path(run_dir) / "models").glob("*/*/c*.pt"))), None)
    if ckpt is None:
        return None
    task = load_checkpoint(ckpt).get("task") or {}
    if "kind" not in task:
        return None
    n = int(task.get("n_classes", 1))
    return DatasetInfo(task=task["kind"], classes=[f"class {i}" for i in range(n)],
                       image_size=(1, 1))



# ---------------------------------------------------------------------------- report
def write_report(run_dirs: list[Path], out: Path, column: str = "test_iou",
                 kept_only: bool = False, samples: bool = True,
                 groups_of: GroupsOf | None = None) -> list[Path]:
    """Tables (scores.md/.csv, quality.csv), figures (scores, quality) and, when runs kept
    samples, the method figures. Returns the files written. ``groups_of``: the settings
    group of each row of a run (default: its settings id); groups are never pooled."""
    if not run_dirs:
        raise DataError("no run folders given")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    panels = panels_of(run_dirs, groups_of)
    if column not in (known := metrics_of(panels)):
        raise DataError(f"unknown metric {column!r}; these runs have {', '.join(known)}")
    scores = [score_stats(p, column, kept_only) for p in panels]
    quality = [quality_stats(p) for p in panels]
    flat = [s for items in scores for s in items]
    written = [out / "scores.csv", out / "scores.md", out / "quality.csv"]
    (out / "scores.csv").write_text(stats_csv(flat))
    which = "top-K kept students" if kept_only else "all students"
    (out / "scores.md").write_text(f"Scores over {which} of each generation.\n\n"
                                   + _split_note(flat)
                                   + stats_markdown(flat, column, {p.name: p.info for p in panels}))
    (out / "quality.csv").write_text(_quality_csv(quality))
    written += save_figure(scores_figure(panels, scores, column), out / "scores")
    written += save_figure(quality_figure(panels, quality), out / "quality")
    rows_of = kept_rows if kept_only else (lambda run: model_rows(run.rows))
    written += write_curve([p for panel in panels for run in panel.runs
                            for p in run_points(run.run_dir, rows_of(run), column)],
                           out, metric_label(column, panels[0].info))
    if samples:
        for panel in panels:
            for run in panel.runs:
                info = panel.info or fallback_info(run.run_dir)
                if info is not None:
                    written += sample_figures(run.run_dir, out / "samples" / run.run_dir.name,
                                              info, run.data_path)
    return written


def _split_note(items: list[Stat]) -> str:
    """A paragraph when some stage's rows were made under different settings."""
    if not any(s.settings for s in items):
        return ""
    return ("Some stages hold models trained under different settings: each settings group "
            "is listed apart, marked with its settings ids (settings.yaml in the run folder "
            "lists each id's values).\n\n")


def _quality_csv(quality: list[dict[str, list[Stat]]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dataset", "column", "approach", "generation", "mean", "std", "n_stages"])
    for q in quality:
        for column, items in q.items():
            for s in items:
                writer.writerow([s.dataset, column, s.approach, s.generation, f"{s.mean:.6g}",
                                 f"{s.std:.6g}", s.n])
    return buf.getvalue()
