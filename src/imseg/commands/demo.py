"""``imseg demo``: the method once, briefly, on generated data.

The binary sample data; LDT; one generation of IM and of Noisy Student beside it
(the study of ``imseg run``, sized by the demo preset); FDT; a table of test IoU
with the gain over LDT, and the figures of ``imseg report``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from imseg.commands.common import show_progress
from imseg.config import Config, build_config
from imseg.data.sources.sample import prepare_sample
from imseg.evaluation.report import BENCHMARKS, Stat, model_rows, stats, write_report
from imseg.evaluation.visualize import display_name
from imseg.experiment.benchmarks import run_benchmark
from imseg.experiment.context import RunContext
from imseg.experiment.recipes import resolve_recipes
from imseg.experiment.runner import run_study

PRESET = "demo"
SAMPLE_SEED = 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="LDT, one IM and Noisy Student generation, FDT on generated "
                                    "data (about 3 CPU-minutes)")
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--config", action="append", default=[], metavar="YAML",
                   help="preset or file applied over the demo preset (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5")
    p.add_argument("--n", type=int, default=200,
                   help="train images of the generated data, 10%% labeled (default 200)")
    p.add_argument("--size", type=int, default=64, help="image side, multiple of 16 (default 64)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--accept-new-settings", action="store_true",
                   help="continue in a demo folder trained under other settings")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    config = build_config([PRESET, *args.config], sets=args.set)
    out = Path(args.out)
    data = out / "data"
    info = prepare_sample("binary", data, n=args.n, size=args.size, seed=SAMPLE_SEED)
    c = info.counts
    print(f"sample data: {data} ({c['train_labeled']} labeled, {c['train_unlabeled']} "
          f"unlabeled, {c['val']} val, {c['test']} test images, {args.size} px)")
    ctx = RunContext.open(data, out, config, progress=show_progress(args), command="imseg demo",
                          accept_new_settings=args.accept_new_settings)
    print(plan(config, c["train_labeled"], c["train_labeled"] + c["train_unlabeled"]))
    run_study(ctx)
    run_benchmark(ctx, "fdt")
    rows = ctx.results.rows
    print()
    print(score_table(rows))
    print()
    print(pseudo_label_lines(rows, c["train_labeled"]))
    figures = write_report([out], out / "report")
    print()
    print(figure_lines(figures, out / "report"))
    print(f"results:     {ctx.results.path}")
    print(f"done in {time.perf_counter() - start:.0f} s")
    ctx.close()
    return 0


def plan(config: Config, labeled: int, train: int) -> str:
    """What the demo is about to train, in words."""
    ssl, bench, t = config.ssl, config.benchmark, config.train
    steps = f" × {t.steps_per_epoch} steps" if t.steps_per_epoch else ""
    lines = [f"training, every model {t.epochs} epochs{steps}:",
             f"  LDT: {bench.candidates} models on the {labeled} labeled pairs"]
    teachers = {"top_1": "best model", "all": "models",
                "top_n": f"top {'/'.join(map(str, ssl.teachers))} models"}
    for name, recipe in resolve_recipes(config, ssl.approaches).items():
        lines.append(f"  {display_name(name)}: {recipe.generation_count(config)} generation(s) "
                     f"of {ssl.students} students, teachers "
                     f"{display_name(recipe.start_stage)}'s {teachers[recipe.teachers.name]} "
                     f"({recipe.description})")
    lines.append(f"  FDT: {bench.candidates} models on all {train} pairs with their true masks")
    return "\n".join(lines)


def _row_name(s: Stat) -> str:
    name = display_name(s.approach)
    return name if s.approach in BENCHMARKS else f"{name} G{s.generation}"


def score_table(rows: list[dict], column: str = "test_iou") -> str:
    """LDT, each approach by generation, FDT: mean ± sd over models and the gain over LDT."""
    found = stats("demo", model_rows(rows), column)
    ldt = next((s for s in found if s.approach == "ldt"), None)
    ordered = ([s for s in found if s.approach == "ldt"]
               + [s for s in found if s.approach not in BENCHMARKS]
               + [s for s in found if s.approach == "fdt"])
    label = column.replace("_", " ").replace("iou", "IoU")
    lines = [f"{'':<20} {label + ' (mean ± sd)':>22} {'models':>6}  {'vs LDT':>6}"]
    for s in ordered:
        gain = "" if ldt is None or s is ldt else f"{s.mean - ldt.mean:+.3f}"
        line = f"{_row_name(s):<20} {s.mean:>14.3f} ± {s.std:.3f} {s.n:>6}  {gain:>6}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def pseudo_label_lines(rows: list[dict], labeled: int) -> str:
    """Per SSL stage: what its students trained on and how good the pseudo labels were."""
    lines = ["pseudo labels (against the hidden true masks of the unlabeled images):"]
    seen = set()
    for r in model_rows(rows):
        key = (r["approach"], r["generation"])
        if r["stage"] != "ssl" or key in seen:
            continue
        seen.add(key)
        text = (f"  {display_name(r['approach'])} G{r['generation']}: {r['n_train_pairs']} "
                f"training pairs ({labeled} labeled + {int(r['n_train_pairs']) - labeled} "
                "pseudo-labeled)")
        if r.get("pseudo_iou") is not None:
            text += f", pseudo-label IoU {float(r['pseudo_iou']):.3f}"
        if r.get("im_fraction") is not None:
            text += (f" outside the IM, which covers {100 * float(r['im_fraction']):.1f} % "
                     "of their pixels")
        lines.append(text)
    return "\n".join(lines)


def figure_lines(written: list[Path], folder: Path) -> str:
    """Where the scores figure and the IM creation figure are (or why there is none)."""
    pngs = [p for p in written if p.suffix == ".png"]
    scores = next((p for p in pngs if p.name == "scores.png"), None)
    im = next((p for p in pngs if p.name.startswith("im_r") and p.name.endswith("_im.png")), None)
    lines = [f"scores figure:      {scores}"]
    if im is not None:
        lines.append(f"IM creation figure: {im}")
    else:
        lines.append("IM creation figure: none (IM kept none of the sampled unlabeled images)")
    lines.append(f"all tables and figures: {folder}")
    return "\n".join(lines)
