"""Simulated active labeling: does labeling the images the IM ranks first beat random?

    python bench/active_labeling.py --data PREPARED --out OUT [--seeds 0 1]
        [--strategies random im entropy im-clusters] [--start 0.05] [--step 0.05] [--rounds 3] [--im]
        [-- imseg train/run options, e.g. --epochs 30 --candidates 3 --device cuda]

The true masks of the unlabeled images (a prepared set's ``train_unlabeled/masks``)
stand in for the annotator. Per seed, the training pool (labeled and unlabeled source
images; a tiled set's tiles stay with their image) is split anew: ``--start`` of it
labeled, the same start for every strategy. Each round trains LDT (with ``--im`` also
IM generation 1, through ``imseg run``) on the round's set, then a strategy chooses
``--step`` of the pool more: ``random`` (seeded), ``im`` or ``entropy`` (``imseg
suggest``'s ranking and near-copy rule over the run's models), ``im-clusters`` or
``entropy-clusters`` (the same ranking, ``--spread clusters``); they are added with
their true masks by ``imseg prepare add``'s code, giving the next round's set.

Kept for inspection and resume (a finished round is skipped on a rerun):
``OUT/sets/<strategy>_s<seed>_r<round>/`` (round 0: ``start_s<seed>``, shared),
``OUT/runs/`` alike, ``OUT/picks/`` (suggest's output per choice).
``OUT/curves.csv``: strategy, seed, round, labeled images, approach, mean test IoU
of the stage's models, seconds to train and to choose. ``OUT/report/``: ``imseg report``
of every round's run; its ``labeled.png`` is test IoU against labeled images, one line
per strategy and stage (mean over seeds, the band spans them), as ``imseg report
OUT/runs/*`` draws it.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from imseg.active.add import add_labels
from imseg.active.diversity import SPREADS
from imseg.active.images import SourceImage, split_sources
from imseg.active.suggest import suggest
from imseg.cli import main as imseg
from imseg.data.layout import SPLITS, finalize_counts, read_info, split_dirs
from imseg.errors import DataError
from imseg.evaluation.report import write_report
from imseg.predict import run_models
from imseg.results import ResultsTable
from imseg.storage import save_png

STRATEGIES = ("random", "im", "entropy", "im-clusters", "entropy-clusters")
"""``random``, or a suggest score with its ``--spread`` rule after a dash (default
near-copies)."""
COLUMNS = ["strategy", "seed", "round", "labeled", "approach", "test_iou", "train_seconds",
           "choose_seconds"]


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True,
                   help="a prepared set whose unlabeled split has its true masks")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES[:3]))
    p.add_argument("--start", type=float, default=0.05, help="labeled share to start with")
    p.add_argument("--step", type=float, default=0.05, help="share of the pool added per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds of adding")
    p.add_argument("--im", action="store_true", help="also IM generation 1 each round")
    p.add_argument("--teachers", type=int, default=3, help="models suggest ranks with")
    return p.parse_known_args(argv)


# ------------------------------------------------------------------------------ sets
def pool_of(data: Path) -> list[SourceImage]:
    """The training pool's source images; each must have its true mask."""
    pool = split_sources(data, "train_labeled") + split_sources(data, "train_unlabeled")
    blind = [s.stem for s in pool if s.read_mask() is None]
    if blind:
        raise DataError(f"{data}: no true masks of {len(blind)} unlabeled images (e.g. "
                        f"{blind[0]}); the simulation needs them as its annotator")
    return pool


def start_set(data: Path, target: Path, share: float, seed: int) -> None:
    """A copy of ``data`` whose labeled split is ``share`` of the pool, chosen by seed."""
    if (target / "dataset.yaml").is_file():
        return
    pool = pool_of(data)
    n = max(1, round(share * len(pool)))
    chosen = {pool[i].stem for i in np.random.default_rng(seed).permutation(len(pool))[:n]}
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    link_copy(data, partial)
    for source in split_sources(partial, "train_labeled") + split_sources(partial,
                                                                          "train_unlabeled"):
        split = "train_labeled" if source.stem in chosen else "train_unlabeled"
        for stem, piece in source.pieces.items():
            _move_pair(piece.path, split, stem)
    info = read_info(partial)
    info.extra = {**info.extra, "active_labeling": {"seed": seed, "start": share,
                                                    "from": str(Path(data).resolve())}}
    finalize_counts(partial, info)
    partial.rename(target)


def _move_pair(image: Path, split: str, stem: str) -> None:
    """Move a prepared image and its mask into ``split`` of the same set."""
    root = image.parent.parent.parent
    images, masks = split_dirs(root, split)
    if image.parent == images:
        return
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    image.rename(images / f"{stem}.png")
    (image.parent.parent / "masks" / f"{stem}.png").rename(masks / f"{stem}.png")


def link_copy(source: Path, target: Path) -> None:
    """A prepared set's copy made of hard links (imseg writes new files, never into old)."""
    target.mkdir(parents=True)
    for split in SPLITS:
        if (source / split).is_dir():
            shutil.copytree(source / split, target / split, copy_function=_link)
    shutil.copy2(source / "dataset.yaml", target / "dataset.yaml")


def _link(a: str, b: str) -> None:
    try:
        Path(b).hardlink_to(a)
    except OSError:
        shutil.copy2(a, b)


# ---------------------------------------------------------------------------- rounds
def train(data: Path, run: Path, with_im: bool, extra: list[str]) -> float:
    """LDT (and IM g1) on ``data`` into ``run``; the seconds it took (0 when done)."""
    command = (["run", "--approaches", "im", "--generations", "1"] if with_im
               else ["train", "--benchmark", "ldt"])
    begin = time.perf_counter()
    if imseg([*command, "--data", str(data), "--out", str(run), "--no-progress", *extra]):
        raise SystemExit(f"training {run} failed")
    return time.perf_counter() - begin


def choose(strategy: str, data: Path, run: Path, picks: Path, n: int, seed: int,
           round_: int, teachers: int) -> list[SourceImage]:
    """The ``n`` unlabeled source images the strategy labels next."""
    unlabeled = split_sources(data, "train_unlabeled")
    if strategy == "random":
        order = np.random.default_rng([seed, round_]).permutation(len(unlabeled))
        return [unlabeled[i] for i in order[:n]]
    score, _, spread = strategy.partition("-")
    found = suggest(run_models(run, teachers=teachers), run, picks, k=n, score=score,
                    overwrite=True, spread=spread or SPREADS[0])
    by_stem = {s.stem: s for s in unlabeled}
    return [by_stem[c.source.stem] for c in found.picks]


def annotate(chosen: list[SourceImage], data: Path, folder: Path) -> None:
    """What the annotator hands back: each chosen image and its true mask."""
    info = read_info(data)
    shutil.rmtree(folder, ignore_errors=True)
    for source in chosen:
        image = source.read(info)
        save_png(folder / "images" / f"{source.stem}.png",
                 image[..., 0] if image.shape[-1] == 1 else image)
        save_png(folder / "masks" / f"{source.stem}.png", source.read_mask())


def next_set(data: Path, target: Path, chosen: list[SourceImage], folder: Path,
             strategy: str) -> None:
    """``data`` with the chosen images labeled, as ``target``."""
    if (target / "dataset.yaml").is_file():
        return
    annotate(chosen, data, folder)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    link_copy(data, partial)
    add_labels(partial, folder / "images", masks=folder / "masks", chosen_by=strategy)
    partial.rename(target)


def stage_scores(run: Path, with_im: bool) -> dict[str, float]:
    """Mean test IoU of LDT's (and IM g1's) models."""
    rows = ResultsTable(run / "results.csv").rows
    wanted = {"ldt": ("ldt", 0)} | ({"im": ("im", 1)} if with_im else {})
    out = {}
    for name, (approach, generation) in wanted.items():
        scores = [float(r["test_iou"]) for r in rows if r["approach"] == approach
                  and int(r["generation"] or 0) == generation and r.get("test_iou") is not None]
        if scores:
            out[name] = float(np.mean(scores))
    return out


def simulate(args: argparse.Namespace, extra: list[str]) -> list[dict]:
    out = args.out
    rows = []
    n_pool = len(pool_of(args.data))
    n_step = max(1, round(args.step * n_pool))
    for seed in args.seeds:
        start = out / "sets" / f"start_s{seed}"
        start_set(args.data, start, args.start, seed)
        start_run = out / "runs" / f"start_s{seed}"
        start_seconds = train(start, start_run, args.im, [*extra, "--seed", str(seed)])
        for strategy in args.strategies:
            data, run, seconds, choosing = start, start_run, start_seconds, 0.0
            for round_ in range(args.rounds + 1):
                labeled = len(split_sources(data, "train_labeled"))
                for approach, iou in stage_scores(run, args.im).items():
                    rows.append({"strategy": strategy, "seed": seed, "round": round_,
                                 "labeled": labeled, "approach": approach,
                                 "test_iou": round(iou, 6), "train_seconds": round(seconds, 1),
                                 "choose_seconds": round(choosing, 1)})
                if round_ == args.rounds:
                    break
                name = f"{strategy}_s{seed}_r{round_ + 1}"
                begin = time.perf_counter()
                chosen = choose(strategy, data, run, out / "picks" / name, n_step, seed, round_,
                                args.teachers)
                choosing = time.perf_counter() - begin
                previous, data = data, out / "sets" / name
                next_set(previous, data, chosen, out / "annotator" / name, strategy)
                run = out / "runs" / name
                seconds = train(data, run, args.im, [*extra, "--seed", str(seed)])
    return rows


# --------------------------------------------------------------------------- outputs
def write_curves(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    args, extra = parse(argv)
    if extra and extra[0] == "--":
        extra = extra[1:]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = simulate(args, extra)
    write_curves(args.out / "curves.csv", rows)
    runs = sorted(p.parent for p in (args.out / "runs").glob("*/results.csv"))
    write_report(runs, args.out / "report", samples=False)
    print(f"curves.csv in {args.out}; imseg report's labeled.png in {args.out / 'report'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
