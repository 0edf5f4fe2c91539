"""Where a generation's time goes, and what the cheaper BatchNorm refresh saves, side by side.

    python bench/generation_cost.py [--quick] [--threads 1] [--epochs 10] [--rounds 2]

One IM generation as the five-generation study runs it (LDT: 3 candidates, then IM G1:
3 teachers, 3 students; the ``small`` preset's protocol, ``--epochs`` epochs of N // 16
steps) on dsb2018 prepared at 64 px (``../shared/data/dsb2018``; the built-in binary
sample without it), once per variant of ``train.bn_stats`` / ``bn_stats_batches``:

- ``precise-all``: the default, statistics over the whole training set before each
  validation (up to 200 batches);
- ``precise-8``: over 8 random training batches (128 images);
- ``running``: the momentum averages (no refresh pass; the paper's presets).

Each variant runs in its own worker process (same seeds, so model k of one variant is
paired with model k of the others), alternating the order over ``--rounds``. The worker
times the phases of ``imseg.training.fit.fit`` (training steps, the BatchNorm refresh,
validation) and the rest (pseudo-labeling, data, checkpoints, test). Reports seconds per
phase, the variant's total against the default's as a ratio, and every model's test IoU
beside the default's (whether the cheaper pass changes the numbers, and by how much).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    ROOT,
    emit,
    finish,
    load_warning,
    machine,
    median,
    parser,
    run_worker,
    worker_env,
)

VARIANTS = {
    "precise-all": ["--set", "train.bn_stats=precise"],
    "precise-8": ["--set", "train.bn_stats=precise", "--set", "train.bn_stats_batches=8"],
    "running": ["--set", "train.bn_stats=running"],
}
PHASES = ("train", "bn_refresh", "validate")
DSB = ROOT.parent / "shared" / "data" / "dsb2018"


def prepare(data: Path, quick: bool) -> str:
    """Prepare the data set into ``data``; returns what it is."""
    imseg = [sys.executable, "-m", "imseg"]
    if DSB.is_dir() and not quick:
        subprocess.run([*imseg, "prepare", "folder", "--images", str(DSB / "images"),
                        "--masks", str(DSB / "masks"), "--out", str(data), "--size", "64", "64",
                        "--seed", "42"], check=True, capture_output=True, cwd=ROOT)
        return "dsb2018 at 64 px (53 labeled, 479 unlabeled, 66 val, 66 test)"
    subprocess.run([*imseg, "prepare", "sample", "--task", "binary", "--out", str(data)],
                   check=True, capture_output=True, cwd=ROOT)
    return "the built-in binary sample"


# ------------------------------------------------------------------------- worker
def worker(data: str, out: str, epochs: int, flags: list[str]) -> None:
    """Run one IM generation with fit's phases timed; print the RESULT line."""
    import imseg.training.fit as fit_module
    from imseg.cli import main as imseg_main
    from imseg.results import ResultsTable

    spent = dict.fromkeys(PHASES, 0.0)

    def timed(phase: str, fn):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[phase] += time.perf_counter() - start
        return call

    fit_module.supervised_epoch = timed("train", fit_module.supervised_epoch)
    fit_module.refresh_bn_stats = timed("bn_refresh", fit_module.refresh_bn_stats)
    fit_module.evaluate_model = timed("validate", fit_module.evaluate_model)
    start = time.perf_counter()
    code = imseg_main(["run", "--data", data, "--out", out, "--config", "small",
                       "--approaches", "im", "--teachers", "3", "--runs", "1",
                       "--generations", "1", "--students", "3", "--candidates", "3",
                       "--epochs", str(epochs), "--no-progress", *flags])
    total = time.perf_counter() - start
    if code:
        raise SystemExit(code)
    rows = ResultsTable(Path(out) / "results.csv").rows
    emit({"total_s": total, **{f"{p}_s": s for p, s in spent.items()},
          "test_iou": {f"{r['stage']}_g{r['generation']}_c{r['candidate']}": r["test_iou"]
                       for r in rows}})


# ------------------------------------------------------------------------- driver
def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--worker", nargs=3, metavar=("DATA", "OUT", "VARIANT"), help="internal")
    args = p.parse_args()
    if args.worker:
        data, out, variant = args.worker
        return worker(data, out, args.epochs, VARIANTS[variant])
    if args.quick:
        args.epochs, args.rounds = 2, 1
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        what = prepare(data, args.quick)
        env = worker_env(args.threads)
        for rnd in range(args.rounds):
            order = list(VARIANTS) if rnd % 2 == 0 else list(reversed(VARIANTS))
            for variant in order:
                out = Path(tmp) / f"{variant}{rnd}"
                cmd = [sys.executable, str(Path(__file__)), "--epochs", str(args.epochs),
                       "--worker", str(data), str(out), variant]
                got = run_worker(cmd, env)
                runs[variant].append(got)
                print(f"round {rnd} {variant}: {got['total_s']:.1f} s", flush=True)
    result = {"bench": "generation_cost", "machine": machine(), "threads": args.threads,
              "data": what, "epochs": args.epochs, "variants": {}}
    base = median([r["total_s"] for r in runs["precise-all"]])
    base_iou = runs["precise-all"][0]["test_iou"]
    print(f"\none IM generation on {what}, {args.epochs} epochs, {args.threads} thread(s); "
          "median seconds over rounds")
    print(f"{'variant':<12} {'total':>7} {'train':>7} {'bn':>7} {'val':>7} {'other':>7} "
          f"{'ratio':>6}  mean test IoU (paired diff to precise-all: mean, max |diff|)")
    for variant, got in runs.items():
        phases = {ph: median([r[f"{ph}_s"] for r in got]) for ph in PHASES}
        total = median([r["total_s"] for r in got])
        ious = got[0]["test_iou"]
        diffs = [ious[k] - base_iou[k] for k in base_iou]
        summary = {"total_s": total, **{f"{ph}_s": s for ph, s in phases.items()},
                   "other_s": total - sum(phases.values()), "ratio": base / total,
                   "test_iou": ious, "mean_test_iou": sum(ious.values()) / len(ious),
                   "mean_diff": sum(diffs) / len(diffs), "max_abs_diff": max(map(abs, diffs))}
        result["variants"][variant] = summary
        print(f"{variant:<12} {total:7.1f} {phases['train']:7.1f} {phases['bn_refresh']:7.1f} "
              f"{phases['validate']:7.1f} {summary['other_s']:7.1f} {summary['ratio']:5.2f}x  "
              f"{summary['mean_test_iou']:.4f} ({summary['mean_diff']:+.4f}, "
              f"{summary['max_abs_diff']:.4f})")
    warning = load_warning(args.threads)
    if warning:
        print(warning)
    print("ratio = precise-all's seconds / the variant's (above 1: faster)")
    emit(result)
    finish(args, result)


if __name__ == "__main__":
    sys.exit(main())
