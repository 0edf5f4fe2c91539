"""``imseg predict``: masks, overlays and inconsistency maps for new images."""

from __future__ import annotations

import argparse
from pathlib import Path

from imseg.predict import DEFAULT_TEACHERS, predict_folder


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict new images with a run's best models; rank "
                                       "them by uncertainty (inconsistency mask size)")
    p.add_argument("--run", required=True, type=Path, help="run folder (has results.csv)")
    p.add_argument("--approach", help="stage's approach (default: the best by mean val IoU)")
    p.add_argument("--generation", type=int, help="stage's generation (benchmarks: 0)")
    p.add_argument("--images", required=True, type=Path, help="folder of images, any size")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--teachers", type=int, default=DEFAULT_TEACHERS,
                   help=f"top-n models of the stage (default: {DEFAULT_TEACHERS})")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.teachers < 1 or args.batch_size < 1:
        from imseg.errors import ConfigError

        raise ConfigError("--teachers and --batch-size must be at least 1")
    done = predict_folder(args.run, args.images, args.out, args.approach, args.generation,
                          args.teachers, args.batch_size, args.device, not args.no_progress)
    approach, generation = done["stage"]
    models = ", ".join(f"{r['checkpoint']} (val {r['val_iou']:.3f})" for r in done["models"])
    print(f"stage {approach} g{generation}: {len(done['models'])} models: {models}")
    if len(done["models"]) < args.teachers:
        print(f"note: the stage has only {len(done['models'])} models; asked for {args.teachers}")
    print("most uncertain (label these next):")
    for r in done["uncertainty"][:5]:
        print(f"  {r['file']:<30} {r['width']}x{r['height']}  IM {r['im_fraction']:.3f}")
    print(f"masks, overlays, inconsistency maps and uncertainty.csv in {args.out}")
    return 0
