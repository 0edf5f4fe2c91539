"""Same numbers before and after a change: every built-in recipe, in two source trees.

Runs ``imseg run`` with every built-in recipe (binary and multiclass sample data, 2
generations, fixed seeds, tiny sizes: a few minutes on 2 cores) once with the source
tree of a git ref (default ``HEAD``, exported with ``git archive`` into a temporary
folder) and once with the working tree, then compares the two ``results.csv`` files row
by row: the same keys, and the same value in every column that does not measure time or
name a file. Any difference is printed and the script exits 1.

    python bench/same_numbers.py            # HEAD against the working tree
    python bench/same_numbers.py 60dd324    # a commit against the working tree
    python bench/same_numbers.py --keep /tmp/same   # keep the run folders there
    python bench/same_numbers.py --tree /tmp/copy   # another tree as 'after'
    python bench/same_numbers.py --skip mean_teacher_im,mean_teacher   # redefined on purpose

A refactor that changes no numbers passes; a deliberate change of numbers shows here
which rows moved.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = Path("src/imseg/experiment/recipes.yaml")

IGNORED = {"seconds", "checkpoint", "settings"}
"""Columns that differ between two identical runs: wall time, the file a row names (the
same relative path, kept out only so a moved models folder shows as its scores), and
the settings id, a digest of the whole config that changes whenever a version adds a
config key (what resumes is decided per stage on the keys it reads: the settings
check's tests)."""
KEY = ("stage", "approach", "run", "n_teachers", "generation", "candidate")

TINY = [
    "--epochs", "2", "--candidates", "3", "--keep", "2", "--alpha", "0.25",
    "--batch-size", "4", "--seed", "7", "--device", "cpu", "--no-progress",
    "--generations", "2", "--teachers", "2", "--runs", "1", "--students", "2",
    "--set", "train.steps_per_epoch=2", "--set", "ssl.consistency_epochs=2",
    "--set", "evalnet.count=2", "--set", "evalnet.keep=1", "--set", "evalnet.epochs=2",
    "--set", "evalnet.train_loops=2", "--set", "evalnet.val_loops=1",
    "--set", "ssl.samples_per_generation=1", "--set", "benchmark.aldt_copies=2",
]
"""A study small enough for minutes on 2 CPU cores; every setting fixed here."""

TASKS = ("binary", "multiclass")


def recipes_of(tree: Path) -> list[str]:
    """The built-in recipe names of a source tree."""
    return list(yaml.safe_load((tree / RECIPES).read_text()))


def export_ref(ref: str, into: Path) -> Path:
    """The files of ``ref`` (``git archive``: no worktree bookkeeping to clean up)."""
    tree = into / "ref"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def imseg(tree: Path, *args: str) -> None:
    """``python -m imseg ARGS`` with ``tree``'s sources first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONHASHSEED": "0"}
    done = subprocess.run([sys.executable, "-m", "imseg", *args], env=env, cwd=tree,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"imseg {' '.join(args)} failed under {tree}:\n{done.stderr[-3000:]}")


def run_tree(tree: Path, data: Path, out: Path, approaches: list[str]) -> Path:
    imseg(tree, "run", "--data", str(data), "--out", str(out),
          "--approaches", ",".join(approaches), *TINY)
    return out / "results.csv"


def read_rows(path: Path, skip: frozenset[str] = frozenset()) -> dict[tuple, dict]:
    """The rows of a results.csv by key, without the approaches in ``skip``."""
    with path.open(newline="") as f:
        return {tuple(row[k] for k in KEY): row for row in csv.DictReader(f)
                if row["approach"] not in skip}


def compare(before: Path, after: Path, label: str,
            skip: frozenset[str] = frozenset()) -> list[str]:
    """Every difference between two results.csv files, as lines."""
    old, new = read_rows(before, skip), read_rows(after, skip)
    out = [f"{label}: row {k} only before" for k in sorted(old.keys() - new.keys())]
    out += [f"{label}: row {k} only after" for k in sorted(new.keys() - old.keys())]
    for key in sorted(old.keys() & new.keys()):
        for column in sorted((old[key].keys() | new[key].keys()) - IGNORED):
            a, b = old[key].get(column), new[key].get(column)
            if a != b:
                out.append(f"{label}: {key} {column}: {a!r} before, {b!r} after")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", nargs="?", default="HEAD", help="git ref of the 'before' tree")
    parser.add_argument("--keep", type=Path, help="keep data and run folders in this folder")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="the 'after' source tree (default: this working tree)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task kinds")
    parser.add_argument("--skip", default="",
                        help="comma-separated recipes and trainer stages a change redefined on "
                             "purpose: not run, not compared (a row's seed follows its name, so "
                             "a renamed recipe cannot be compared either)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="same_numbers_") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        before_tree = export_ref(args.ref, Path(tmp))
        names_before, names_after = recipes_of(before_tree), recipes_of(args.tree)
        skip = frozenset(filter(None, args.skip.split(",")))
        approaches = [n for n in names_after if n in names_before and n not in skip]
        for name in sorted(set(names_before) ^ set(names_after)):
            print(f"recipe {name!r} is built in on one side only: not compared")
        problems: list[str] = []
        for task in args.tasks.split(","):
            data = work / f"data_{task}"
            if not (data / "dataset.yaml").is_file():
                imseg(args.tree, "prepare", "sample", "--task", task, "--out", str(data),
                      "--n", "24", "--size", "32", "--seed", "3")
            print(f"{task}: {len(approaches)} recipes, {args.ref} ...", flush=True)
            before = run_tree(before_tree, data, work / f"before_{task}", approaches)
            print(f"{task}: working tree ...", flush=True)
            after = run_tree(args.tree, data, work / f"after_{task}", approaches)
            found = compare(before, after, task, skip)
            print(f"{task}: {len(read_rows(after, skip))} rows, {len(found)} differences", flush=True)
            problems += found
    for line in problems:
        print(line)
    print("same numbers" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
