"""Following a study: TensorBoard boards that agree with results.csv, a log line when each
stage starts and each net finishes (EvalNets too), nothing doubled on resume."""

from __future__ import annotations

import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import TINY, read_rows

from imseg.config import build_config
from imseg.experiment import watch
from imseg.experiment.benchmarks import run_benchmark
from imseg.experiment.context import RunContext
from imseg.experiment.evalnet_stage import prepare_kind
from imseg.experiment.runner import run_study
from imseg.training import tensorboard

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator")

EPOCHS = 2
CONFIG = {**TINY, "train": {**TINY["train"], "epochs": EPOCHS},
          "ssl": {**TINY["ssl"], "approaches": ["im"],
                  "inconsistency": {"binary_filter": False}},  # keep pairs: samples to show
          "evalnet": {"count": 2, "keep": 1, "epochs": EPOCHS, "train_loops": 1,
                      "val_loops": 1}}


def board(run: Path, name: str):
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard" / name),
                                             size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def scalars(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def event_files(run: Path) -> list[Path]:
    return sorted((run / "tensorboard").rglob("events.out.tfevents.*"))


@pytest.fixture(scope="module")
def study(binary_data, tmp_path_factory) -> Path:
    """A tiny study (LDT, one IM generation) plus its IM++ EvalNets, run once."""
    run = tmp_path_factory.mktemp("watch") / "run"
    ctx = RunContext.open(binary_data, run, build_config(overrides=CONFIG), progress=False)
    try:
        run_study(ctx)
        prepare_kind(ctx, 0, "im_plus_plus")
    finally:
        ctx.close()
    return run


def assert_board_matches_row(run: Path, row: dict) -> None:
    """The model's board (``models/ldt/r0_g0/c1``, its checkpoint's place) has every epoch
    once and the scores of its results row."""
    acc = board(run, str(Path(row["checkpoint"]).with_suffix("")))
    assert [s for s, _ in scalars(acc, "train/loss")] == list(range(1, EPOCHS + 1))
    assert [s for s, _ in scalars(acc, "train/lr")] == list(range(1, EPOCHS + 1))
    val = dict(scalars(acc, "val/iou"))
    assert val[int(row["best_epoch"])] == pytest.approx(float(row["val_iou"]), abs=1e-6)
    assert max(val.values()) == pytest.approx(float(row["val_iou"]), abs=1e-6)
    assert scalars(acc, "final/test_iou")[0][1] == pytest.approx(float(row["test_iou"]),
                                                                  abs=1e-6)
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")


def test_each_model_has_a_board_whose_numbers_are_its_results_row(study):
    rows = read_rows(study / "results.csv")
    assert len(rows) == 4
    for row in rows:
        assert_board_matches_row(study, row)


def test_models_trained_fused_each_get_their_own_board(binary_data, tmp_path):
    fused = {**CONFIG, "train": {**CONFIG["train"], "fuse": "always"}}
    ctx = RunContext.open(binary_data, tmp_path / "run", build_config(overrides=fused),
                          progress=False)
    try:
        run_benchmark(ctx, "ldt", 0)
    finally:
        ctx.close()
    assert "one at a time" not in (tmp_path / "run" / "log.txt").read_text()  # fused indeed
    rows = read_rows(tmp_path / "run" / "results.csv")
    assert len(rows) == 2
    for row in rows:
        assert_board_matches_row(tmp_path / "run", row)


def test_stage_boards_hold_the_spread_of_test_iou_per_generation(study):
    rows = read_rows(study / "results.csv")
    for name, step, approach in [("stages/ldt/r0", 0, "ldt"), ("stages/im/r0_n2", 1, "im")]:
        test = [float(r["test_iou"]) for r in rows if r["approach"] == approach]
        acc = board(study, name)
        assert scalars(acc, "test_iou/mean") == [(step, pytest.approx(statistics.fmean(test),
                                                                      abs=1e-6))]
        assert scalars(acc, "test_iou/std")[0][1] == pytest.approx(statistics.pstdev(test),
                                                                   abs=1e-6)
        assert scalars(acc, "test_iou/max")[0][1] == pytest.approx(max(test), abs=1e-6)


def test_pseudo_labels_and_evalnets_are_shown(study):
    pseudo = board(study, "pseudo/im/r0_n2")
    shown = pseudo.Tags()["images"]
    assert len(shown) == CONFIG["ssl"]["samples_per_generation"]
    image = pseudo.Images(shown[0])[0]
    assert image.step == 1 and image.width > image.height > 0  # the wide IM-creation view
    evalnets = read_rows(study / "evalnet_results.csv")
    for row in evalnets:
        acc = board(study, f"evalnets/{row['kind']}/r0/e{row['index']}")
        mae = dict(scalars(acc, "val/mae"))
        assert sorted(mae) == list(range(1, EPOCHS + 1))
        assert mae[int(row["best_epoch"])] == pytest.approx(float(row["val_mae"]), abs=1e-6)


def test_the_log_says_when_stages_start_and_each_net_finishes(study):
    log = (study / "log.txt").read_text()
    for line in ["ldt r0: training 2 of 2 models on", "ldt r0 c1: best epoch",
                 "im r0 n2 g1: pseudo-labeling 22 images with 2 teachers",
                 "im r0 n2 g1: kept 22 of 22 images as pseudo pairs",
                 "im r0 n2 g1: training 2 of 2 models on 24 pairs", "im r0 n2 g1 c1: best epoch",
                 "evalnet im_plus_plus r0: training 2 of 2 EvalNets",
                 "evalnet im_plus_plus r0 e1: best epoch"]:
        assert line in log


def test_a_resumed_study_writes_no_step_twice(study, binary_data):
    before = {p: p.stat().st_size for p in event_files(study)}
    ctx = RunContext.open(binary_data, study, build_config(overrides=CONFIG), progress=False)
    try:
        run_study(ctx)  # everything is done: nothing trains, nothing is written again
    finally:
        ctx.close()
    assert {p: p.stat().st_size for p in event_files(study)} == before
    assert "training" not in (study / "log.txt").read_text().split("resuming")[-1]


def test_no_boards_when_switched_off_or_without_the_package(tmp_path, monkeypatch):
    off = SimpleNamespace(config=build_config(sets=["log.tensorboard=false"]), run_dir=tmp_path)
    assert watch.open_board(off, "models/x", 1) is None
    on = SimpleNamespace(config=build_config(), run_dir=tmp_path)
    said: list[str] = []
    monkeypatch.setattr(tensorboard, "installed", lambda: False)
    monkeypatch.setattr(watch, "_said_missing", [])
    monkeypatch.setattr(watch.log, "info", lambda message, *args: said.append(message))
    assert watch.open_board(on, "models/x", 1) is None
    assert watch.watch_model(on, SimpleNamespace(folder=lambda: "x", candidate=0)).on_epoch \
        is None
    assert said == ['no TensorBoard files: pip install "imseg[tensorboard]" to get them '
                    "(or set log.tensorboard: false to silence this)"]  # once
    assert not (tmp_path / "tensorboard").exists()


def test_under_ray_each_board_is_written_by_one_worker(binary_data, tmp_path):
    ray = pytest.importorskip("ray")
    from imseg.experiment.ray_executor import ray_executor

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ctx = RunContext.open(binary_data, tmp_path / "run", build_config(overrides=CONFIG),
                              progress=False)
        run_study(ctx, ray_executor())
        ctx.close()
    finally:
        ray.shutdown()
    run = tmp_path / "run"
    for row in read_rows(run / "results.csv"):
        assert_board_matches_row(run, row)
    folders = {p.parent for p in event_files(run)}
    assert {str(f.relative_to(run / "tensorboard")) for f in folders} >= {
        "stages/ldt/r0", "stages/im/r0_n2", "pseudo/im/r0_n2"}
    assert all(len(list(f.glob("events.out.tfevents.*"))) == 1 for f in folders)
