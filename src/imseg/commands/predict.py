"""``imseg predict``: masks, overlays and inconsistency maps for new images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from imseg.config import AutoMode
from imseg.errors import ConfigError
from imseg.predict import (
    DEFAULT_TEACHERS,
    ModelSet,
    checkpoint_models,
    predict_folder,
    run_models,
    tiling_for,
)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Which models to use: a run's stage or checkpoint files (exactly one of the two)."""
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="run folder (has results.csv)")
    source.add_argument("--checkpoint", type=Path, action="append", metavar="FILE",
                        help="a model checkpoint (.pt) instead of a run; repeat for several")
    p.add_argument("--approach", help="with --run: the stage's approach "
                                      "(default: the best by mean val IoU)")
    p.add_argument("--generation", type=int, help="with --run: the stage's generation "
                                                  "(benchmarks: 0)")
    p.add_argument("--teachers", type=int,
                   help=f"with --run: top-n models of the stage (default: {DEFAULT_TEACHERS})")


def models_from_args(args: argparse.Namespace) -> ModelSet:
    if args.checkpoint:
        given = [f for f in ("approach", "generation", "teachers") if getattr(args, f) is not None]
        if given:
            raise ConfigError(f"--{given[0]} chooses models of a run; it does not go with "
                              "--checkpoint")
        return checkpoint_models(args.checkpoint)
    teachers = DEFAULT_TEACHERS if args.teachers is None else args.teachers
    if teachers < 1:
        raise ConfigError("--teachers must be at least 1")
    return run_models(args.run, args.approach, args.generation, teachers)


def describe_models(models: ModelSet) -> str:
    """One line: the stage (if any) and each model's checkpoint and validation score."""
    def score(meta) -> str:
        iou = meta.val.get("iou")
        return "" if iou is None else f" (val {iou:.3f})"

    listed = ", ".join(f"{meta.path}{score(meta)}" for meta in models.metas)
    stage = f"stage {models.stage[0]} g{models.stage[1]}: " if models.stage else ""
    count = f"{len(models.metas)} model{'s' if len(models.metas) > 1 else ''}"
    return f"{stage}{count}: {listed}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="predict new images with a run's best models (or given checkpoints); "
                        "rank them by uncertainty (inconsistency mask size)",
        description="With two or more models, also writes inconsistency/ (where the models "
                    "disagree) and uncertainty.csv; a single model (--teachers 1 or one "
                    "--checkpoint) has no disagreement, so those are left out.")
    add_model_options(p)
    p.add_argument("--images", required=True, type=Path, help="folder of images, any size")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--compile", default="auto", choices=get_args(AutoMode),
                   help="run the models through torch.compile: auto = on a CPU when the "
                        "folder is large (>= 2 TFLOP of convolutions; 1.2-1.6x faster "
                        "once compiled, after a compile of 10-20 s)")
    p.add_argument("--tiles", default="auto", choices=get_args(AutoMode),
                   help="cut images into overlapping tiles of the training size instead of "
                        "resizing them whole: auto = when the models were trained on tiles "
                        "(prepare --tile, HeLa); always = also for other models (at the "
                        "images' own pixels)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    models = models_from_args(args)
    print(describe_models(models))
    wanted = args.teachers or DEFAULT_TEACHERS
    if args.run and len(models.metas) < wanted:
        have = len(models.metas)
        print(f"note: the stage has {have} model{'s' if have != 1 else ''}, fewer than the "
              f"{wanted} {'asked for' if args.teachers else 'used by default'}; predicting "
              f"with {'it' if have == 1 else 'them'}")
    tiling = tiling_for(models.info, args.tiles)
    if tiling is not None:
        why = "as in training" if models.info.tile_scale else "--tiles always"
        print(f"input: {tiling.describe()} ({why})")
    table = predict_folder(models, args.images, args.out, args.batch_size, args.device,
                           not args.no_progress, args.compile, args.tiles)
    if table is None:
        print(f"one model: masks and overlays in {args.out} (no inconsistency maps)")
        return 0
    print("most uncertain (label these next):")
    for r in table[:5]:
        print(f"  {r['file']:<30} {r['width']}x{r['height']}  IM {r['im_fraction']:.3f}")
    print(f"masks, overlays, inconsistency maps and uncertainty.csv in {args.out}")
    return 0
