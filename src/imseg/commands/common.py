"""Options shared by the commands that train models, and config building from them."""

from __future__ import annotations

import argparse

from imseg.config import Config, build_config, nested


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
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


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
