"""imseg predict on a hand-built run: stage choice by validation, original sizes, the IM."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from imseg.cli import main
from imseg.data.layout import DatasetInfo, write_info
from imseg.errors import DataError
from imseg.experiment.results import ResultsTable
from imseg.models.unet import build_unet
from imseg.predict import best_stage, predict_folder, stage_models
from imseg.storage import save_checkpoint

SIZES = [(32, 32), (20, 45), (50, 17), (64, 40)]  # (H, W)


def save_model(path: Path, out_channels: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    model = build_unet(3, out_channels, 0.25, generator=gen)
    with torch.no_grad():  # make BN statistics and biases differ between seeds too
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    save_checkpoint(path, {"model": {"kind": "unet", "in_channels": 3,
                                     "out_channels": out_channels, "alpha": 0.25},
                           "state_dict": model.state_dict()})


def make_run(tmp_path: Path, task: str = "binary", seeds: tuple[int, ...] = (1, 2, 3)) -> Path:
    """A run folder with three 'im' g1 students and two LDT candidates."""
    data = tmp_path / "data"
    classes = ["fg"] if task == "binary" else ["bg", "a", "b"]
    write_info(data, DatasetInfo(task=task, classes=classes, image_size=(32, 32)))
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.yaml").write_text(yaml.safe_dump({"data": str(data)}))
    out_channels = 1 if task == "binary" else len(classes) + 1
    table = ResultsTable(run / "results.csv")
    stages = [("ldt", "ldt", None, 0, [0.50, 0.40], [0.90, 0.90]),  # best test, worse val
              ("ssl", "im", 2, 1, [0.70, 0.60, 0.65], [0.10, 0.20, 0.30])]
    for stage, approach, n, gen, vals, tests in stages:
        for c, (v, t) in enumerate(zip(vals, tests, strict=True)):
            ckpt = f"models/{approach}/g{gen}/c{c}.pt"
            save_model(run / ckpt, out_channels, seeds[c % len(seeds)])
            table.add({"stage": stage, "approach": approach, "run": 0, "n_teachers": n,
                       "generation": gen, "candidate": c, "val_iou": v, "test_iou": t,
                       "checkpoint": ckpt})
    return run


def make_images(folder: Path) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"img{i}.{'jpg' if i == 3 else 'png'}")


def read_uncertainty(out: Path) -> list[dict]:
    with (out / "uncertainty.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_best_stage_uses_validation_not_test_and_top_n_by_val(tmp_path):
    rows = ResultsTable(make_run(tmp_path) / "results.csv").rows
    assert best_stage(rows) == ("im", 1)  # mean val 0.65 > 0.45, although LDT tests better
    assert best_stage(rows, approach="ldt") == ("ldt", 0)
    chosen = stage_models(rows, "im", 1, 2)
    assert [r["candidate"] for r in chosen] == [0, 2]  # val 0.70, 0.65
    with pytest.raises(DataError, match="im g1"):
        best_stage(rows, approach="noisy_student")


def test_masks_keep_original_sizes_and_uncertainty_is_sorted(tmp_path):
    run = make_run(tmp_path)
    make_images(tmp_path / "new")
    out = tmp_path / "pred"
    done = predict_folder(run, tmp_path / "new", out, teachers=3, batch_size=3, progress=False)
    assert done["stage"] == ("im", 1) and len(done["models"]) == 3
    for i, (h, w) in enumerate(SIZES):
        mask = np.asarray(Image.open(out / "masks" / f"img{i}.png"))
        im = np.asarray(Image.open(out / "inconsistency" / f"img{i}.png"))
        over = np.asarray(Image.open(out / "overlays" / f"img{i}.png"))
        assert mask.shape == (h, w) and im.shape == (h, w) and over.shape == (h, w, 3)
        assert set(np.unique(mask)) <= {0, 255} and set(np.unique(im)) <= {0, 255}
    table = read_uncertainty(out)
    fractions = [float(r["im_fraction"]) for r in table]
    assert fractions == sorted(fractions, reverse=True)
    assert max(fractions) > 0  # three different random models do disagree somewhere
    for r in table:  # each row's fraction is its written IM's share, at its own size
        stem = Path(r["file"]).stem
        im = np.asarray(Image.open(out / "inconsistency" / f"{stem}.png"))
        assert (int(r["height"]), int(r["width"])) == im.shape
        assert float(r["im_fraction"]) == pytest.approx((im > 0).mean(), abs=1e-6)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_identical_models_give_an_empty_inconsistency_mask(tmp_path, task):
    run = make_run(tmp_path, task, seeds=(7,))
    make_images(tmp_path / "new")
    out = tmp_path / "pred"
    predict_folder(run, tmp_path / "new", out, teachers=3, progress=False)
    assert all(float(r["im_fraction"]) == 0.0 for r in read_uncertainty(out))
    for i in range(len(SIZES)):
        assert not np.asarray(Image.open(out / "inconsistency" / f"img{i}.png")).any()
        if task == "multiclass":  # real class ids 0..C-1, never the IM class or void
            mask = np.asarray(Image.open(out / "masks" / f"img{i}.png"))
            assert set(np.unique(mask)) <= {0, 1, 2}


def test_cli_and_clear_errors(tmp_path, capsys):
    run = make_run(tmp_path)
    make_images(tmp_path / "new")
    out = tmp_path / "pred"
    assert main(["predict", "--run", str(run), "--approach", "ldt", "--images",
                 str(tmp_path / "new"), "--out", str(out), "--no-progress"]) == 0
    assert "stage ldt g0: 2 models" in capsys.readouterr().out
    assert len(read_uncertainty(out)) == len(SIZES)
    with pytest.raises(DataError, match="not a run folder"):
        predict_folder(tmp_path / "nowhere", tmp_path / "new", out, progress=False)
    with pytest.raises(DataError, match="folder not found"):
        predict_folder(run, tmp_path / "missing", out, progress=False)
    (run / "models/im/g1/c0.pt").unlink()
    with pytest.raises(DataError, match="checkpoint not found"):
        predict_folder(run, tmp_path / "new", out, progress=False)
    assert main(["predict", "--run", str(run), "--images", str(tmp_path / "new"),
                 "--out", str(out), "--generation", "7", "--no-progress"]) == 2
    assert "no trained models" in capsys.readouterr().err
