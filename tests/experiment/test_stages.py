"""A stage's candidates trained fused (one grouped net) or one at a time give the same rows."""

from __future__ import annotations

import pytest
from conftest import TINY

from imseg.config import build_config
from imseg.experiment import stages
from imseg.experiment.context import RunContext
from imseg.experiment.stages import Place, load_model, train_stage

SCORE_TOLERANCE = 0.05
"""float32 Adam amplifies rounding on near-zero gradients (tests/training/test_fused.py
shows equality in float64); tiny models' scores stay within this of each other."""


def _stage(data, run_dir, fuse: str, count: int = 3, ctx: RunContext | None = None):
    cfg = build_config(overrides={**TINY, "train": {**TINY["train"], "epochs": 2,
                                                    "fuse": fuse}})
    ctx = ctx or RunContext.open(data, run_dir, cfg, progress=False)
    ctx.config = cfg
    train, _ = ctx.splits_for_run(0)
    return ctx, train_stage(ctx, Place("ldt", "ldt"), count, train, cfg.train.alpha)


def _count_fused_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = stages.fit_fused

    def spy(nets, *args, **kwargs):
        calls.append(len(nets))
        return real(nets, *args, **kwargs)

    monkeypatch.setattr(stages, "fit_fused", spy)
    return calls


KEY = ("stage", "approach", "run", "candidate", "seed", "best_epoch", "n_train_pairs", "params")


@pytest.mark.parametrize("data", ["binary_data", "multiclass_data"])
def test_fused_and_single_stages_write_the_same_rows(data, request, tmp_path, monkeypatch):
    folder = request.getfixturevalue(data)
    calls = _count_fused_calls(monkeypatch)
    _, fused = _stage(folder, tmp_path / "fused", "always")
    _, single = _stage(folder, tmp_path / "single", "never")
    assert len(fused) == len(single) == 3
    for a, b in zip(fused, single, strict=True):
        assert a["checkpoint"] == b["checkpoint"]
        assert {k: a[k] for k in KEY if k != "best_epoch"} == \
            {k: b[k] for k in KEY if k != "best_epoch"}
        assert abs(a["val_iou"] - b["val_iou"]) < SCORE_TOLERANCE
        assert abs(a["test_iou"] - b["test_iou"]) < SCORE_TOLERANCE
        # checkpoints stay single-model files
        model = load_model(tmp_path / "fused" / a["checkpoint"])
        assert next(model.parameters()).shape[1] == 3  # one model's RGB input, not 3 groups
    assert calls == [3]  # one grouped training of the three candidates, none for "never"


def test_a_fused_stage_resumes_only_its_unfinished_models(binary_data, tmp_path, monkeypatch):
    ctx, first = _stage(binary_data, tmp_path / "run", "never", count=1)
    calls = _count_fused_calls(monkeypatch)
    _, rows = _stage(binary_data, tmp_path / "run", "always", count=3, ctx=ctx)
    assert calls == [2]
    assert rows[0] == first[0]  # kept, not retrained
    _, whole = _stage(binary_data, tmp_path / "whole", "always", count=3)
    for a, b in zip(rows[1:], whole[1:], strict=True):
        assert a["seed"] == b["seed"]
        assert abs(a["val_iou"] - b["val_iou"]) < SCORE_TOLERANCE
