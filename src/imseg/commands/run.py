"""``imseg run``: the semi-supervised study (approaches × runs × teacher counts × generations)."""

from __future__ import annotations

import argparse

from imseg.commands.common import add_training_options, config_from_args, open_run
from imseg.evaluation.summary import summary_table
from imseg.experiment.runner import run_study
from imseg.experiment.settings import settings_groups, study_stages


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run SSL approaches over generations (resumable)")
    add_training_options(p)
    p.add_argument("--approaches", type=_str_list,
                   help="comma-separated recipes, e.g. im,noisy_student (ssl.approaches)")
    p.add_argument("--generations", type=int)
    p.add_argument("--teachers", type=_int_list, help="teacher counts, e.g. 2,3,4")
    p.add_argument("--runs", type=int)
    p.add_argument("--students", type=int, help="students trained per generation")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--address", help="Ray cluster address (default: start a local one)")
    p.add_argument("--gpus-per-model", type=float, default=0.0)
    p.add_argument("--cpus-per-model", type=float, default=1.0)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args, **{
        "ssl.approaches": args.approaches,
        "ssl.generations": args.generations,
        "ssl.teachers": args.teachers,
        "ssl.runs": args.runs,
        "ssl.students": args.students,
    })
    ctx = open_run(args, config, study_stages(config))
    executor = None
    if args.executor == "ray":
        from imseg.experiment.ray_executor import ray_executor

        executor = ray_executor(args.address, args.gpus_per_model, args.cpus_per_model)
    run_study(ctx, executor)
    rows = ctx.results.rows
    print(summary_table(rows, groups=settings_groups(ctx.run_dir, rows, ctx.config)))
    for line in stage_notes(ctx.results.rows):
        print(line)
    print(f"results: {ctx.results.path}")
    return 0


def stage_notes(rows: list[dict]) -> list[str]:
    """One ``note:`` line per generation whose rows carry a note (e.g. few pseudo pairs)."""
    seen: dict[tuple, str] = {}
    for r in rows:
        if r.get("note"):
            key = (r["approach"], r["run"], r["n_teachers"], r["generation"])
            seen.setdefault(key, r["note"])
    return [f"note: {a} r{run} n{n if n is not None else '-'} g{g}: {note}"
            for (a, run, n, g), note in seen.items()]
