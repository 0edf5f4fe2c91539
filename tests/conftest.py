"""Shared fixtures: tiny generated data sets and a config small enough for CPU tests; the
kill-and-resume check that several run tests share."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imseg.config import build_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

TINY = {
    "device": "cpu",
    "train": {"alpha": 0.25, "epochs": 1, "batch_size": 8, "bn_momentum": 0.1,
              "eval_batch_size": 32},
    "benchmark": {"candidates": 2, "keep": 2, "aldt_copies": 1},
    "ssl": {"generations": 1, "teachers": [2], "runs": 1, "students": 2,
            "consistency_epochs": 2, "samples_per_generation": 2},
}


@pytest.fixture
def tiny_config():
    """A config that trains each model for one epoch of one or two steps."""
    return build_config(overrides=TINY)


def _sample(tmp_path_factory, task: str) -> Path:
    from imseg.data.sources.sample import prepare_sample

    out = tmp_path_factory.mktemp(f"sample_{task}") / "data"
    prepare_sample(task, out, n=24, size=32, seed=1)
    return out


@pytest.fixture(scope="session")
def binary_data(tmp_path_factory) -> Path:
    return _sample(tmp_path_factory, "binary")


@pytest.fixture(scope="session")
def multiclass_data(tmp_path_factory) -> Path:
    return _sample(tmp_path_factory, "multiclass")


@pytest.fixture(scope="session")
def multilabel_data(tmp_path_factory) -> Path:
    return _sample(tmp_path_factory, "multilabel")


RESUME_KEYS = ["stage", "approach", "run", "n_teachers", "generation", "candidate", "seed",
               "val_iou", "test_iou", "pseudo_iou", "im_fraction", "n_train_pairs"]
"""The results columns a resumed run must reproduce exactly (not the seconds)."""


def read_rows(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def cli_run(data: Path, out: Path, config: Path) -> subprocess.Popen:
    """``imseg run`` in a child process (one thread), so that it can be killed."""
    cmd = [sys.executable, "-m", "imseg", "run", "--data", str(data), "--out", str(out),
           "--config", str(config), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def rows_done(out: Path) -> int:
    path = out / "results.csv"
    return len(read_rows(path)) if path.is_file() else 0


def kill_and_resume(data: Path, config: Path, tmp_path: Path, after_rows: int = 3,
                    until: Callable[[Path], bool] | None = None):
    """Run ``config`` uninterrupted; run it again, SIGKILL it once ``after_rows`` models are
    done (or once ``until(run folder)`` holds), start it once more. Returns (the
    uninterrupted rows, the resumed rows)."""
    ref = cli_run(data, tmp_path / "ref", config)
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()
    expected = read_rows(tmp_path / "ref" / "results.csv")
    out = tmp_path / "killed"
    proc = cli_run(data, out, config)
    until = until or (lambda folder: rows_done(folder) >= after_rows)
    deadline = time.time() + 300
    while time.time() < deadline and not until(out):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert until(out) and rows_done(out) < len(expected)
    again = cli_run(data, out, config)
    assert again.wait(timeout=300) == 0, again.stderr.read().decode()
    return expected, read_rows(out / "results.csv")


def same_rows(rows: list[dict], expected: list[dict], keys=RESUME_KEYS) -> bool:
    return [{k: r[k] for k in keys} for r in rows] == [{k: r[k] for k in keys} for r in expected]
