"""Options shared by the commands that train models, and config building from them."""

from __future__ import annotations

import argparse
import sys

from imseg.config import Config, build_config, nested
from imseg.experiment.context import RunContext
from imseg.experiment.settings import Stage


def add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="prepared data set folder (has dataset.yaml)")
    p.add_argument("--out", required=True, help="run folder; results.csv and models go here")
    p.add_argument("--config", action="append", default=[], metavar="YAML",
                   help="config file or preset name (quick, small, isic2018, ...; repeatable; later wins)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.lr=0.001")
    p.add_argument("--epochs", type=int, help="epochs per model (train.epochs)")
    p.add_argument("--candidates", type=int, help="models per benchmark stage")
    p.add_argument("--keep", type=int, help="top-K models kept per stage")
    p.add_argument("--alpha", type=float, help="U-Net width multiplier")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true",
                   help="hide progress bars (they are shown only on a terminal anyway)")
    p.add_argument("--accept-new-settings", action="store_true",
                   help="continue although stages this command reuses or extends hold "
                        "models trained under other settings; each results row records the "
                        "settings it was trained under, summaries keep them apart")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal: in a redirected log they are carriage-return noise
    (one line per finished model is logged instead)."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def open_run(args: argparse.Namespace, config: Config,
             stages: list[Stage] | None = None) -> RunContext:
    """The run folder of a training command, opened as its flags say; ``stages``: those
    the command may train, reuse or extend (their settings are checked)."""
    return RunContext.open(args.data, args.out, config, progress=show_progress(args),
                           command=" ".join(sys.argv),
                           accept_new_settings=args.accept_new_settings, stages=stages)


def config_from_args(args: argparse.Namespace, **extra: object) -> Config:
    """Defaults ← --config files ← flags ← --set."""
    flags = nested(**{
        "train.epochs": args.epochs,
        "benchmark.candidates": args.candidates,
        "benchmark.keep": args.keep,
        "train.alpha": args.alpha,
        "train.batch_size": args.batch_size,
        "seed": args.seed,
        "device": args.device,
        **extra,
    })
    return build_config(args.config, flags, args.set)
