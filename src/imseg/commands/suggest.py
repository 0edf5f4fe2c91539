"""``imseg suggest``: rank images by how much labeling them should help, pick ``k`` that
are not near-copies, and write the models' masks as pre-annotations to correct
(:mod:`imseg.active.suggest`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from imseg.active.diversity import DEFAULT_MIN_DISTANCE, SPREADS
from imseg.active.scores import SCORES
from imseg.active.suggest import suggest
from imseg.commands.predict import add_model_options, describe_models, models_from_args
from imseg.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "suggest", help="which images to label next: rank by the run's inconsistency, "
                        "pick k unlike ones, write their masks as pre-annotations",
        description="Ranks the run's data set's unlabeled images (or --images) by the "
                    "share of pixels where the run's best models disagree (--score im), "
                    "or the ensemble's mean entropy; writes ranking.csv, a contact sheet, "
                    "and the picks' images, masks, COCO and LabelMe pre-annotations. "
                    "Correct them in a labeling tool, then add them with imseg prepare add.")
    add_model_options(p)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--k", type=int, default=20, help="how many images to pick (default: 20)")
    p.add_argument("--images", type=Path,
                   help="folder of images to rank (default: the run's unlabeled split)")
    p.add_argument("--score", choices=SCORES, default="im",
                   help="im: share of pixels where the models disagree (default); entropy: "
                        "the ensemble's mean entropy")
    p.add_argument("--class", dest="class_name", metavar="NAME",
                   help="rank by this class's IM share only (--score im)")
    p.add_argument("--diversity", type=float, default=DEFAULT_MIN_DISTANCE,
                   help="skip an image whose thumbnail is closer than this (0..1; 0: off) "
                        f"to one already picked (default: {DEFAULT_MIN_DISTANCE})")
    p.add_argument("--spread", choices=SPREADS, default=SPREADS[0],
                   help="near-copies: the top of the ranking, near-copies skipped "
                        "(--diversity; default); clusters: the picks shared among groups of "
                        "alike images in proportion to their sizes, the best-ranked of each, "
                        "so they follow the pool's mix of scenes")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out, removing what an earlier suggest wrote there first")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if args.checkpoint and args.images is None:
        raise ConfigError("--checkpoint has no run whose unlabeled images to rank: "
                          "add --images")
    models = models_from_args(args)
    print(describe_models(models))
    found = suggest(models, args.run, args.out, args.k, args.images, args.score,
                    args.class_name, args.diversity, args.device, args.batch_size,
                    not args.no_progress, args.overwrite, args.spread)
    print(f"picked {len(found.picked)} of {len(found.ranked)} images "
          f"({len(found.near)} skipped: "
          f"{'near-copies' if args.spread == SPREADS[0] else 'in a cluster picked already'}):")
    for candidate in found.picks[:5]:
        print(f"  {candidate.source.stem:<30} IM {candidate.scores.im:.3f}  "
              f"entropy {candidate.scores.entropy:.3f}")
    print(f"ranking.csv, contact_sheet.png, images/, masks/, coco.json and labelme/ in "
          f"{args.out}")
    return 0
