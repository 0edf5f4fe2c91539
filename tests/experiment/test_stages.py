"""A stage's candidates trained fused (one grouped net) or one at a time give the same rows;
a run killed inside a model resumes inside it."""

from __future__ import annotations

import shutil

import pytest
from conftest import TINY, kill_and_resume, same_rows

from imseg.config import build_config
from imseg.csvrows import format_cell
from imseg.errors import DataError
from imseg.experiment import stages
from imseg.experiment.context import RunContext
from imseg.experiment.stages import load_models, train_stage
from imseg.models.checkpoint import load_model
from imseg.results import COLUMNS, Place, checkpoint_name

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


def _reopen(data, run_dir, ctx: RunContext) -> RunContext:
    """The run folder opened again, as a resumed command does."""
    ctx.close()
    return RunContext.open(data, run_dir, ctx.config, progress=False)


def _student_of(ctx: RunContext) -> None:
    """An IM student of the stage's models (its checkpoint a copy: only its row matters)."""
    row = {"stage": "ssl", "approach": "im", "run": 0, "n_teachers": 2, "generation": 1,
           "candidate": 0}
    path = ctx.run_dir / checkpoint_name(row)
    path.parent.mkdir(parents=True)
    shutil.copy(ctx.run_dir / "models/ldt/r0_g0/c0.pt", path)
    ctx.results.add({**row, "val_iou": 0.5, "checkpoint": checkpoint_name(row)})


def test_a_deleted_checkpoint_trains_exactly_that_model_again(binary_data, tmp_path):
    run = tmp_path / "run"
    ctx, before = _stage(binary_data, run, "never", count=2)
    _student_of(ctx)
    (run / "models/ldt/r0_g0/c1.pt").unlink()
    ctx, after = _stage(binary_data, run, "never", count=2, ctx=_reopen(binary_data, run, ctx))
    assert {k: format_cell(v) for k, v in after[0].items()} == \
        {k: format_cell(v) for k, v in before[0].items()}  # kept as written
    assert after[1]["seed"] == before[1]["seed"]
    assert after[1]["val_iou"] == pytest.approx(before[1]["val_iou"], abs=1e-6)  # the same one
    assert (run / "models/ldt/r0_g0/c1.pt").is_file()
    assert len(ctx.results.rows) == 3 and not ctx.results.unmatched


def test_a_model_trained_again_differently_stops_while_students_learned_from_it(
        binary_data, tmp_path):
    run = tmp_path / "run"
    ctx, _ = _stage(binary_data, run, "never", count=2)
    _student_of(ctx)
    ctx.close()
    text = (run / "results.csv").read_text()  # as if c1 had scored 0.99 before it was lost
    rows = text.splitlines()
    cells = rows[2].split(",")
    cells[COLUMNS.index("val_iou")] = "0.99"
    (run / "results.csv").write_text("\n".join([*rows[:2], ",".join(cells), *rows[3:]]) + "\n")
    (run / "models/ldt/r0_g0/c1.pt").unlink()
    ctx = RunContext.open(binary_data, run, ctx.config, progress=False)
    with pytest.raises(DataError, match=r"ldt r0 c1 was trained again .*missing.* came out "
                                        r"different \(val IoU 0.9900 before.*1 later models "
                                        r"may have learned from the old one \(im r0 n2 g1\)"):
        _stage(binary_data, run, "never", count=2, ctx=ctx)
    assert not (run / "models/ldt/r0_g0/c1.pt").exists()  # no checkpoint beside the old row
    # without models that learned from it, the new model simply replaces the row
    ctx.results.rows.pop()  # the student's row
    _, rows = _stage(binary_data, run, "never", count=2, ctx=ctx)
    assert rows[1]["val_iou"] != 0.99 and (run / "models/ldt/r0_g0/c1.pt").is_file()


def test_a_damaged_checkpoint_says_how_to_recover(binary_data, tmp_path):
    run = tmp_path / "run"
    ctx, rows = _stage(binary_data, run, "never", count=2)
    path = run / "models/ldt/r0_g0/c0.pt"
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(DataError, match=r"c0.pt: not an imseg checkpoint .*; delete it and run "
                                        "the same imseg run/train command again"):
        load_models(ctx, rows)
    shutil.copy(run / "models/ldt/r0_g0/c1.pt", path)  # a file of another model
    with pytest.raises(DataError, match=r"c0.pt: not the model of its results row ldt r0 c0 "
                                        r"\(it records ldt r0 c1\); delete it"):
        load_models(ctx, rows)


def _unfinished(run_dir) -> list:
    return sorted((run_dir / "models").glob("*/*/*.unfinished")) if run_dir.is_dir() else []


def test_a_run_killed_inside_a_model_resumes_inside_it(binary_data, tmp_path):
    """With a snapshot after every epoch, a run killed in the middle of a model picks that
    model up at its next epoch and ends with the rows of a run never stopped; no snapshot
    is left behind."""
    import yaml

    train = {**TINY["train"], "epochs": 40, "steps_per_epoch": 2, "snapshot_minutes": 0}
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({**TINY, "train": train,
                                      "benchmark": {**TINY["benchmark"], "candidates": 1},
                                      "ssl": {**TINY["ssl"], "approaches": ["im"],
                                              "teachers": [1], "students": 1}}))
    expected, resumed = kill_and_resume(binary_data, config, tmp_path, until=_unfinished)
    assert same_rows(resumed, expected)
    log = (tmp_path / "killed" / "log.txt").read_text()
    assert "resuming at epoch" in log
    assert _unfinished(tmp_path / "killed") == _unfinished(tmp_path / "ref") == []


def test_a_fused_stage_resumes_from_its_snapshot_and_leaves_none(binary_data, tmp_path,
                                                                  monkeypatch, caplog):
    """A fused group's snapshot is taken up by the same group; one whose group changed is
    set aside and removed once the stage is done."""
    import logging

    from imseg.training import fused
    from imseg.training.snapshot import Snapshots

    class Stop(Exception):
        pass

    real = fused.fit_fused

    def stopped(*args, **kwargs):  # stop after epoch 1 of 2, past its snapshot
        def hook(log):
            if log.epoch == 2:
                raise Stop
        return real(*args, **{**kwargs, "on_epoch": [hook]})

    cfg = build_config(overrides={**TINY, "train": {**TINY["train"], "epochs": 2,
                                                    "fuse": "always", "snapshot_minutes": 0}})
    run = tmp_path / "run"
    ctx = RunContext.open(binary_data, run, cfg, progress=False)
    train, _ = ctx.splits_for_run(0)
    monkeypatch.setattr(stages, "fit_fused", stopped)
    with pytest.raises(Stop):
        train_stage(ctx, Place("ldt", "ldt"), 3, train, cfg.train.alpha)
    snapshot = run / "models/ldt/r0_g0/fused.unfinished"
    assert snapshot.is_file() and not ctx.results.rows
    monkeypatch.setattr(stages, "fit_fused", real)
    with caplog.at_level(logging.INFO, logger="imseg"):
        rows = train_stage(ctx, Place("ldt", "ldt"), 3, train, cfg.train.alpha)
    assert "ldt r0 c0, ldt r0 c1, ldt r0 c2: resuming at epoch 2" in caplog.text
    assert not snapshot.exists() and len(rows) == 3
    _, whole = _stage(binary_data, tmp_path / "whole", "always", count=3)
    assert [r["val_iou"] for r in rows] == [r["val_iou"] for r in whole]

    # a snapshot of another group is set aside, and removed once the stage is done
    ctx2 = RunContext.open(binary_data, tmp_path / "other", cfg, progress=False)
    stale = tmp_path / "other/models/ldt/r0_g0/fused.unfinished"
    Snapshots(stale, {"models": []}, 0.0).write({"epoch": 1})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="imseg"):
        train_stage(ctx2, Place("ldt", "ldt"), 3, train, cfg.train.alpha)
    assert "training state not used (it belongs to" in caplog.text
    assert not stale.exists()
