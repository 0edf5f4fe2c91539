"""Shared fixtures: tiny generated data sets and a config small enough for CPU tests."""

from __future__ import annotations

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
    "ssl": {"generations": 1, "teachers": [2], "runs": 1, "students": 2, "keep": 2,
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
