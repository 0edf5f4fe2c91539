"""``imseg demo``: the binary sample data, LDT and FDT trained briefly, a small table."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from imseg.config import build_config
from imseg.data.sources.sample import prepare_sample
from imseg.evaluation.summary import summary_table
from imseg.experiment.benchmarks import run_benchmark
from imseg.experiment.context import RunContext


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train LDT and FDT briefly on generated sample data")
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--config", action="append", default=["demo"], metavar="YAML",
                   help="preset or file (default: the demo preset)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    data = out / "data"
    info = prepare_sample("binary", data, n=200, size=64, seed=0)
    print(f"sample data: {data} ({info.counts})")
    config = build_config(args.config)
    ctx = RunContext.open(data, out, config, progress=not args.no_progress, command="imseg demo")
    for stage in ("ldt", "fdt"):
        print(f"training {stage.upper()}: {config.benchmark.candidates} candidates, "
              f"{config.train.epochs} epochs each")
        run_benchmark(ctx, stage)
    print()
    print(summary_table(ctx.results.rows))
    print()
    print(f"results:     {ctx.results.path}")
    print(f"checkpoints: {out / 'models'}")
    print(f"config:      {out / 'config.yaml'}")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0
