"""``imseg train``: one benchmark stage (FDT, LDT or ALDT) into a run folder."""

from __future__ import annotations

import argparse
import sys

from imseg.commands.common import add_training_options, config_from_args
from imseg.experiment.benchmarks import BENCHMARKS, run_benchmark
from imseg.experiment.context import RunContext
from imseg.experiment.results import top_k


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a benchmark stage: FDT, LDT or ALDT")
    add_training_options(p)
    p.add_argument("--benchmark", choices=BENCHMARKS, default="ldt")
    p.add_argument("--run", type=int, default=0, help="run index (seed and labeled split)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    ctx = RunContext.open(args.data, args.out, config, progress=not args.no_progress,
                          command=" ".join(sys.argv))
    rows = run_benchmark(ctx, args.benchmark, args.run)
    print(format_rows(rows, top_k(rows, config.benchmark.keep)))
    print(f"results: {ctx.results.path}")
    return 0


def format_rows(rows: list[dict], kept: list[dict]) -> str:
    """A small text table of candidates, the kept ones starred."""
    kept_ids = {r["candidate"] for r in kept}
    lines = [f"{'stage':<6} {'cand':>4} {'val_iou':>8} {'test_iou':>8} {'test_dice':>9} {'sec':>6}"]
    for r in rows:
        star = "*" if r["candidate"] in kept_ids else " "
        lines.append(f"{r['stage']:<6} {r['candidate']:>4}{star}{_f(r['val_iou']):>8} "
                     f"{_f(r['test_iou']):>8} {_f(r['test_dice']):>9} {r['seconds']:>6.1f}")
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
