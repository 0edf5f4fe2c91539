"""The generation loop with an smp model (Unet, resnet18 encoder, random init) at 64 px:
LDT and IM generation 1 end to end, growing students by encoder, resume after a stop
with the same rows, and predict from the run's checkpoints alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RESUME_KEYS, TINY, read_rows, same_rows
from PIL import Image

from imseg.config import build_config
from imseg.experiment.context import RunContext
from imseg.experiment.runner import run_study
from imseg.models.checkpoint import read_checkpoint
from imseg.predict import predict_folder, run_models

pytest.importorskip("timm")
pytest.importorskip("segmentation_models_pytorch")

MODEL = {"arch": "Unet", "encoder": "resnet18", "weights": "none",
         "options": {"decoder_channels": [64, 32, 16, 16, 8]},  # a light decoder: CPU seconds
         "student_encoders": ["resnet34"]}


@pytest.fixture(scope="module")
def data64(tmp_path_factory) -> Path:
    from imseg.data.sources.sample import prepare_sample

    out = tmp_path_factory.mktemp("sample64") / "data"
    prepare_sample("binary", out, n=24, size=64, seed=1)
    return out


def encoder_config(approaches: list[str]):
    # one-epoch teachers find little foreground: without the binary filter pairs still flow
    ssl = {**TINY["ssl"], "approaches": approaches, "students": 1,
           "inconsistency": {"binary_filter": False}}
    train = {**TINY["train"], "steps_per_epoch": 1}
    return build_config(overrides={**TINY, "train": train, "ssl": ssl, "model": MODEL})


def test_ldt_and_im_train_an_smp_unet_and_the_run_predicts(data64, tmp_path):
    ctx = RunContext.open(data64, tmp_path / "run", encoder_config(["im", "im_plus"]),
                          progress=False)
    run_study(ctx)
    ctx.close()
    by = {}
    for r in ctx.results.rows:
        by.setdefault((r["approach"], r["generation"]), []).append(r)
    assert len(by[("ldt", 0)]) == 2 and len(by[("im", 1)]) == len(by[("im_plus", 1)]) == 1
    assert by[("im", 1)][0]["pseudo_iou"] is not None

    def spec(row):
        return read_checkpoint(ctx.run_dir / row["checkpoint"])[1].spec

    assert (spec(by[("ldt", 0)][0]).arch, spec(by[("ldt", 0)][0]).encoder) == ("Unet", "resnet18")
    assert spec(by[("im", 1)][0]).encoder == "resnet18"  # same-size students
    assert spec(by[("im_plus", 1)][0]).encoder == "resnet34"  # growing: student_encoders
    assert [by[k][0]["model"] for k in (("ldt", 0), ("im", 1), ("im_plus", 1))] == \
        ["Unet/resnet18", "Unet/resnet18", "Unet/resnet34"]
    assert by[("im_plus", 1)][0]["params"] > by[("im", 1)][0]["params"]
    assert by[("im_plus", 1)][0]["alpha"] == by[("im", 1)][0]["alpha"]  # alpha: tiny U-Net only

    images = data64 / "test" / "images"
    out = tmp_path / "pred"
    models = run_models(ctx.run_dir, "ldt", 0)  # two models: an ensemble with its IM
    table = predict_folder(models, images, out, progress=False)
    assert table is not None and len(table) == len(list(images.iterdir()))
    for row in table:
        mask = np.asarray(Image.open(out / "masks" / (Path(row["file"]).stem + ".png")))
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}


class _Stop(Exception):
    """A stop in the middle of a run (what a kill leaves: rows of finished models only)."""


def test_a_stopped_run_resumes_to_the_same_rows(data64, tmp_path, monkeypatch):
    import imseg.experiment.stages as stages

    cfg = encoder_config(["im"])
    ref = RunContext.open(data64, tmp_path / "ref", cfg, progress=False)
    run_study(ref)
    ref.close()
    real_fit, calls = stages.fit, []

    def stopping_fit(*args, **kwargs):
        if len(calls) == 2:
            raise _Stop
        calls.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(stages, "fit", stopping_fit)
    stopped = RunContext.open(data64, tmp_path / "run", cfg, progress=False)
    with pytest.raises(_Stop):
        run_study(stopped)
    stopped.close()
    assert len(stopped.results.rows) == 2 < len(ref.results.rows)
    monkeypatch.setattr(stages, "fit", real_fit)
    again = RunContext.open(data64, tmp_path / "run", cfg, progress=False)
    run_study(again)
    again.close()
    resumed = read_rows(again.run_dir / "results.csv")
    assert same_rows(resumed, read_rows(ref.run_dir / "results.csv"), [*RESUME_KEYS, "params"])
    # the resumed models are the uninterrupted run's, weight for weight
    last = ref.results.rows[-1]["checkpoint"]
    a = torch.load(ref.run_dir / last, weights_only=True)["state_dict"]
    b = torch.load(again.run_dir / last, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_fused_stage_of_smp_models_trains_them_one_at_a_time(data64, tmp_path, monkeypatch):
    import imseg.experiment.stages as stages

    starts, fused = [], []
    real_start = stages._start
    monkeypatch.setattr(stages, "_start", lambda *a, **k: starts.append(1) or real_start(*a, **k))
    monkeypatch.setattr(stages, "fit_fused", lambda *a, **k: fused.append(1))
    cfg = encoder_config(["im"])
    cfg.train.fuse = "always"
    ctx = RunContext.open(data64, tmp_path / "run", cfg, progress=False)
    train, _ = ctx.splits_for_run(0)
    rows = stages.train_stage(ctx, stages.Place("ldt", "ldt"), 2, train, cfg.train.alpha)
    ctx.close()
    assert len(rows) == 2 and not fused
    assert len(starts) == 2  # each net built once: none for a grouping that cannot happen
