"""``imseg report``: tables and paper-style figures of one or more runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from imseg.evaluation.report import METRICS, write_report
from imseg.experiment.settings import settings_groups


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="tables and figures from runs' results.csv (and samples)")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="run folders; runs on the same data set are pooled into one panel")
    p.add_argument("--out", required=True, type=Path, help="folder for tables and figures")
    p.add_argument("--metric", default="test_iou",
                   help=f"score to tabulate and plot: {', '.join(METRICS)}, or test_<key> for "
                        "a number the rows' test_details carry, e.g. test_count_error (HeLa) "
                        "or test_iou_alive (default: test_iou)")
    p.add_argument("--kept-only", action="store_true",
                   help="only the top-K students of each stage (default: all students)")
    p.add_argument("--no-samples", action="store_true",
                   help="skip the IM and pseudo-label figures drawn from samples/")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    written = write_report(args.runs, args.out, args.metric, args.kept_only,
                           samples=not args.no_samples, groups_of=settings_groups)
    print((args.out / "scores.md").read_text())
    print(f"{len(written)} files in {args.out}")
    return 0
