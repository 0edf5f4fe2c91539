"""``imseg train``: one benchmark stage (FDT, LDT or ALDT) into a run folder.

``--trainer fixmatch|unimatch|mean_teacher`` trains LDT (or ALDT) with that online SSL
trainer on the labeled pairs plus the unlabeled images; its rows' approach is the
trainer (``fixmatch``). Settings as YAML: ``--trainer '{name: unimatch, threshold: 0.9}'``.

Under ``torchrun --nproc-per-node N -m imseg train ...`` every candidate is
trained in turn with DDP over the N processes; rank 0 writes the checkpoints
and results rows, the other ranks write into a scratch folder that is removed.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch
import yaml

from imseg.commands.common import add_training_options, config_from_args, open_run
from imseg.config import Config
from imseg.data.dataset import load_dataset
from imseg.errors import ConfigError
from imseg.experiment.benchmarks import BENCHMARKS, run_benchmark
from imseg.experiment.context import RunContext
from imseg.experiment.settings import benchmark_stage
from imseg.results import ResultsTable, top_k
from imseg.runtime import configure_threads, resolve_device
from imseg.training import distributed
from imseg.training.trainers import TRAINERS, TrainerPart


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a benchmark stage: FDT, LDT or ALDT")
    add_training_options(p)
    p.add_argument("--benchmark", choices=BENCHMARKS, default="ldt")
    p.add_argument("--run", type=int, default=0, help="run index (seed and labeled split)")
    p.add_argument("--trainer", default="supervised",
                   help="supervised (default), or an online SSL trainer that adds the "
                        "unlabeled images: fixmatch, unimatch, mean_teacher; with settings as "
                        "YAML, e.g. '{name: unimatch, threshold: 0.9}'")
    p.set_defaults(func=_run)


def parse_trainer(text: str, config: Config) -> TrainerPart:
    """``--trainer``'s value: a name, or a YAML mapping with a name and settings."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--trainer {text!r}: not a name or YAML mapping ({exc})") from None
    return TRAINERS.parse(value, config, "--trainer")  # type: ignore[return-value]


def _run(args: argparse.Namespace) -> int:
    if args.run < 0:
        raise ConfigError(f"--run {args.run}: runs are numbered from 0 (the run's seed and "
                          "labeled split follow from it)")
    config = config_from_args(args)
    trainer = parse_trainer(args.trainer, config)
    with distributed.process_group(config.device) as (me, device):
        if me.is_writer:
            ctx = open_run(args, config, [benchmark_stage(args.benchmark, trainer)])
        distributed.barrier()  # rank 0 has created the run folder and its config
        if not me.is_writer:
            ctx = follower_context(Path(args.data), Path(args.out), config, device)
        elif device is not None:
            ctx.device = device
        try:
            rows = run_benchmark(ctx, args.benchmark, args.run, trainer)
        finally:
            if not me.is_writer:
                shutil.rmtree(ctx.run_dir, ignore_errors=True)
    if me.is_writer:
        print(format_rows(rows, top_k(rows, config.benchmark.keep)))
        print(f"results: {ctx.results.path}")
    return 0


def follower_context(data_dir: Path, run_dir: Path, config: Config,
                     device: torch.device | None) -> RunContext:
    """A DDP rank other than 0: it sees the run's rows (so it skips the same finished
    models as rank 0) but writes its files into a scratch folder of its own."""
    configure_threads()
    scratch = Path(tempfile.mkdtemp(prefix="imseg-ddp-"))
    known = ResultsTable(run_dir / "results.csv").every_row()  # rank 0's, unmatched too
    return RunContext(scratch, data_dir, config, load_dataset(data_dir),
                      device or resolve_device(config.device),
                      ResultsTable(scratch / "results.csv", known=known, run_dir=run_dir),
                      progress=False)


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
