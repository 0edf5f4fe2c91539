"""imseg predict on a hand-built run: stage choice by validation, original sizes, the IM;
a run whose data folder is gone, and given checkpoints."""

from __future__ import annotations

import csv
import errno
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from imseg.cli import main
from imseg.data.layout import DatasetInfo, read_info, write_info
from imseg.data.tiles import Tiling
from imseg.errors import DataError
from imseg.models.checkpoint import ModelSpec, checkpoint_payload
from imseg.models.unet import build_unet
from imseg.predict import (
    best_stage,
    checkpoint_files,
    checkpoint_models,
    predict_folder,
    predict_images,
    run_models,
    stage_models,
)
from imseg.results import ResultsTable, checkpoint_name
from imseg.storage import save_checkpoint
from imseg.tasks import Task

SIZES = [(32, 32), (20, 45), (50, 17), (64, 40)]  # (H, W)


def save_model(path: Path, info: DatasetInfo, seed: int, old_format: bool = False,
               noise: float = 0.2, **extra) -> None:
    """A random U-Net for ``info``'s data, its weights shifted by ``noise`` (0.2: large
    logits; 0.05: logits about 1, as trained nets have); ``old_format``: as imseg wrote it
    before checkpoints carried the data set's metadata."""
    gen = torch.Generator().manual_seed(seed)
    out_channels = info.task_obj.out_channels
    model = build_unet(3, out_channels, 0.25, generator=gen)
    with torch.no_grad():  # make BN statistics and biases differ between seeds too
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * noise)
    if old_format:
        payload = {"model": {"kind": "unet", "in_channels": 3, "out_channels": out_channels,
                             "alpha": 0.25}, "state_dict": model.state_dict()}
    else:
        payload = checkpoint_payload(ModelSpec(3, out_channels, 0.25), model.state_dict(), info,
                                     **extra)
    save_checkpoint(path, payload)


def make_run(tmp_path: Path, task: str = "binary", seeds: tuple[int, ...] = (1, 2, 3),
             old_format: bool = False, noise: float = 0.2, tile_scale: float = 0.0) -> Path:
    """A run folder with three 'im' g1 students and two LDT candidates; its data folder
    (``tmp_path/data``) holds only dataset.yaml."""
    data = tmp_path / "data"
    classes = ["fg"] if task == "binary" else ["bg", "a", "b"]
    info = DatasetInfo(task=task, classes=classes, image_size=(32, 32), tile_scale=tile_scale)
    write_info(data, info)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.yaml").write_text(yaml.safe_dump({"data": str(data)}))
    table = ResultsTable(run / "results.csv")
    stages = [("ldt", "ldt", None, 0, [0.50, 0.40], [0.90, 0.90]),  # best test, worse val
              ("ssl", "im", 2, 1, [0.70, 0.60, 0.65], [0.10, 0.20, 0.30])]
    for stage, approach, n, gen, vals, tests in stages:
        for c, (v, t) in enumerate(zip(vals, tests, strict=True)):
            key = {"stage": stage, "approach": approach, "run": 0, "n_teachers": n,
                   "generation": gen, "candidate": c}
            ckpt = checkpoint_name(key)
            save_model(run / ckpt, info, seeds[c % len(seeds)], old_format, noise,
                       val={"iou": v}, test={"iou": t})
            table.add({**key, "val_iou": v, "test_iou": t, "checkpoint": ckpt})
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


def read_masks(out: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted((out / "masks").glob("*.png"))}


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
    models = run_models(run, teachers=3)
    assert models.stage == ("im", 1) and len(models.models) == 3
    assert [m.val["iou"] for m in models.metas] == [0.70, 0.65, 0.60]
    predict_folder(models, tmp_path / "new", out, batch_size=3, progress=False)
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
    predict_folder(run_models(run), tmp_path / "new", out, progress=False)
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
        run_models(tmp_path / "nowhere")
    with pytest.raises(DataError, match="folder not found"):
        predict_folder(run_models(run), tmp_path / "missing", out, progress=False)
    (run / "models/im/r0_n2_g1/c0.pt").unlink()  # a lost model is left out, with a warning
    assert [m.path.name for m in run_models(run).metas] == ["c2.pt", "c1.pt"]
    assert main(["predict", "--run", str(run), "--images", str(tmp_path / "new"),
                 "--out", str(out), "--generation", "7", "--no-progress"]) == 2
    assert "no trained models" in capsys.readouterr().err


def test_run_predicts_after_its_data_folder_is_deleted(tmp_path):
    run = make_run(tmp_path)
    make_images(tmp_path / "new")
    predict_folder(run_models(run), tmp_path / "new", tmp_path / "before", progress=False)
    shutil.rmtree(tmp_path / "data")
    models = run_models(run)  # the checkpoints carry what dataset.yaml said
    assert models.info.classes == ["fg"] and models.info.image_size == (32, 32)
    predict_folder(models, tmp_path / "new", tmp_path / "after", progress=False)
    before, after = read_masks(tmp_path / "before"), read_masks(tmp_path / "after")
    assert before.keys() == after.keys() and len(before) == len(SIZES)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_old_checkpoints_fall_back_to_the_runs_dataset_yaml(tmp_path):
    run = make_run(tmp_path, "multiclass", old_format=True)
    models = run_models(run)
    assert models.info.classes == ["bg", "a", "b"]  # through run.yaml
    assert [m.val for m in models.metas] == [{"iou": 0.70}, {"iou": 0.65}, {"iou": 0.60}]
    shutil.move(tmp_path / "data" / "dataset.yaml", run / "dataset.yaml")
    assert run_models(run).info.classes == ["bg", "a", "b"]  # the run's own copy
    (run / "dataset.yaml").unlink()
    with pytest.raises(DataError, match="predate the data set's metadata"):
        run_models(run)
    with pytest.raises(DataError, match="use --run"):
        checkpoint_models([run / "models/im/r0_n2_g1/c0.pt"])


def test_given_checkpoints_predict_like_the_run_and_one_model_has_no_im(tmp_path, capsys):
    run = make_run(tmp_path, "multiclass")
    make_images(tmp_path / "new")
    best = run / "models/im/r0_n2_g1/c0.pt"  # val 0.70: the stage's top model
    predict_folder(run_models(run, teachers=1), tmp_path / "new", tmp_path / "r", progress=False)
    assert main(["predict", "--checkpoint", str(best), "--images", str(tmp_path / "new"),
                 "--out", str(tmp_path / "c"), "--no-progress"]) == 0
    assert "no inconsistency maps" in capsys.readouterr().out
    from_run, from_ckpt = read_masks(tmp_path / "r"), read_masks(tmp_path / "c")
    assert len(from_ckpt) == len(SIZES)
    assert all(np.array_equal(from_run[k], from_ckpt[k]) for k in from_run)
    assert not (tmp_path / "c" / "inconsistency").exists()
    assert not (tmp_path / "c" / "uncertainty.csv").exists()
    # two checkpoints: the same outputs as the run's two best
    two = [best, run / "models/im/r0_n2_g1/c2.pt"]
    predict_folder(run_models(run, teachers=2), tmp_path / "new", tmp_path / "r2", progress=False)
    predict_folder(checkpoint_models(two), tmp_path / "new", tmp_path / "c2", progress=False)
    assert read_uncertainty(tmp_path / "r2") == read_uncertainty(tmp_path / "c2")


def test_checkpoints_of_other_data_and_wrong_options_are_refused(tmp_path, capsys):
    binary = make_run(tmp_path / "b")
    multiclass = make_run(tmp_path / "m", "multiclass")
    make_images(tmp_path / "new")
    with pytest.raises(DataError, match="trained on other data"):
        checkpoint_models([binary / "models/ldt/r0_g0/c0.pt", multiclass / "models/ldt/r0_g0/c0.pt"])
    ckpt = str(binary / "models/ldt/r0_g0/c0.pt")
    images = ["--images", str(tmp_path / "new"), "--out", str(tmp_path / "o")]
    assert main(["predict", "--checkpoint", ckpt, "--teachers", "2", *images]) == 2
    assert "--teachers chooses models of a run" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # exactly one of --run / --checkpoint
        main(["predict", "--run", str(binary), "--checkpoint", ckpt, *images])
    with pytest.raises(SystemExit):
        main(["predict", *images])
    assert "one of the arguments --run --checkpoint is required" in capsys.readouterr().err


def test_models_scored_by_other_headline_classes_still_predict_together(tmp_path):
    """A HeLa model from before headline_classes beside one from after: same interface."""
    old = DatasetInfo(task="multilabel", classes=["alive", "dead", "position"],
                      image_size=(32, 32))
    new = DatasetInfo(task="multilabel", classes=["alive", "dead", "position"],
                      image_size=(32, 32), headline_classes=["alive", "dead"],
                      test_metrics=["cell_count"])
    save_model(tmp_path / "old.pt", old, 1)
    save_model(tmp_path / "new.pt", new, 2)
    models = checkpoint_models([tmp_path / "new.pt", tmp_path / "old.pt"])
    assert models.info.headline_classes == ["alive", "dead"]
    make_images(tmp_path / "img")
    predict_folder(models, tmp_path / "img", tmp_path / "out", progress=False)
    assert len(read_masks(tmp_path / "out")) == len(SIZES)


def test_trained_run_predicts_after_its_data_folder_moved(binary_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(binary_data, data)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--benchmark", "ldt",
                 "--candidates", "2", "--epochs", "1", "--alpha", "0.25", "--batch-size", "8",
                 "--device", "cpu", "--no-progress"]) == 0
    images = data / "test" / "images"
    predict_folder(run_models(run), images, tmp_path / "before", progress=False)
    shutil.move(images, tmp_path / "new")
    shutil.move(data, tmp_path / "moved")
    models = run_models(run)
    expected = replace(read_info(tmp_path / "moved"), extra={})  # extra is not carried
    assert models.info == expected and not (tmp_path / "data").exists()
    assert all(m.val["iou"] is not None and m.test for m in models.metas)
    predict_folder(models, tmp_path / "new", tmp_path / "after", progress=False)
    before, after = read_masks(tmp_path / "before"), read_masks(tmp_path / "after")
    assert before and all(np.array_equal(before[k], after[k]) for k in before)


def test_compiled_models_predict_as_eager_ones(tmp_path, monkeypatch):
    """``--compile always`` (auto does so for a large folder on a CPU): same masks and IMs."""
    from imseg.training.inference import CompiledFullBatches

    calls: list[tuple] = []
    forward = CompiledFullBatches.forward
    monkeypatch.setattr(CompiledFullBatches, "forward",
                        lambda self, x: calls.append(tuple(x.shape)) or forward(self, x))
    run = make_run(tmp_path, noise=0.05)
    make_images(tmp_path / "new")
    models = run_models(run, teachers=3)
    predict_folder(models, tmp_path / "new", tmp_path / "eager", batch_size=4, progress=False,
                   compile_inference="never")
    assert calls == []
    predict_folder(models, tmp_path / "new", tmp_path / "fast", batch_size=4, progress=False,
                   compile_inference="always")
    assert calls == [(4, 3, 32, 32)] * 3  # each of the 3 models, compiled, on the one batch
    eager, fast = read_masks(tmp_path / "eager"), read_masks(tmp_path / "fast")
    assert eager.keys() == fast.keys()
    for stem, mask in eager.items():
        assert (fast[stem] == mask).mean() > 0.99  # compiled logits differ in the last bits
    fractions = [{r["file"]: float(r["im_fraction"]) for r in read_uncertainty(tmp_path / way)}
                 for way in ("eager", "fast")]
    assert fractions[0].keys() == fractions[1].keys()
    for file, fraction in fractions[0].items():
        assert fractions[1][file] == pytest.approx(fraction, abs=0.02)


def test_new_images_are_read_as_training_images_were(tmp_path):
    """16-bit images scaled as prepare scales them (not clipped), photos upright."""
    run = make_run(tmp_path)
    new = tmp_path / "new"
    new.mkdir()
    wide = (np.arange(32 * 48, dtype=np.uint16).reshape(32, 48) * 2)  # max 3070: > 255
    Image.fromarray(wide).save(new / "wide.png")
    scaled = np.round(wide * (255.0 / wide.max())).astype(np.uint8)
    Image.fromarray(np.repeat(scaled[..., None], 3, axis=2)).save(new / "scaled.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90° clockwise
    Image.fromarray(np.zeros((20, 36, 3), np.uint8)).save(new / "photo.jpg", exif=exif)
    predict_folder(run_models(run, teachers=3), new, tmp_path / "pred", progress=False)
    masks = read_masks(tmp_path / "pred")
    assert np.array_equal(masks["wide"], masks["scaled"])
    assert masks["photo"].shape == (36, 20)  # as shown, not as stored

    # a data set whose 16-bit images kept their high byte (HeLa) is read so here too
    models = run_models(run, teachers=3)
    models = replace(models, info=replace(models.info, wide_images="high_byte"))
    high = np.repeat((wide >> 8).astype(np.uint8)[..., None], 3, axis=2)
    Image.fromarray(high).save(new / "high.png")
    (new / "scaled.png").unlink()
    predict_folder(models, new, tmp_path / "pred_high", progress=False)
    masks = read_masks(tmp_path / "pred_high")
    assert np.array_equal(masks["wide"], masks["high"])


@pytest.mark.parametrize("tiles", ["never", "always"])
def test_unreadable_images_are_named_after_the_others_are_predicted(tmp_path, tiles):
    run = make_run(tmp_path)
    make_images(tmp_path / "new")
    (tmp_path / "new" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "pred"
    with pytest.raises(DataError) as err:
        predict_folder(run_models(run, teachers=3), tmp_path / "new", out, batch_size=2,
                       progress=False, tiles=tiles)
    lines = str(err.value).splitlines()
    assert lines[0] == f"1 of 5 images could not be read; the other 4 were predicted into {out}:"
    assert lines[1].startswith(f"  - {tmp_path / 'new' / 'broken.png'}: cannot read")
    assert sorted(read_masks(out)) == [f"img{i}" for i in range(4)]
    assert sorted(r["file"] for r in read_uncertainty(out)) == [
        "img0.png", "img1.png", "img2.png", "img3.jpg"]


def test_a_stopped_prediction_resumes_and_other_models_are_refused(tmp_path, monkeypatch):
    import imseg.predict as predict_module

    run = make_run(tmp_path)
    make_images(tmp_path / "new")
    whole, out = tmp_path / "whole", tmp_path / "pred"
    predict_folder(run_models(run, teachers=3), tmp_path / "new", whole, progress=False)
    # as a prediction stopped inside img2 leaves it: img0 and img1 whole, img2 in part
    predict_folder(run_models(run, teachers=3), tmp_path / "new", out, progress=False)
    (out / "inconsistency" / "img2.png").unlink()
    for sub in ("masks", "overlays", "inconsistency"):
        (out / sub / "img3.png").unlink()
    (out / "uncertainty.csv").unlink()
    seen = []
    real = predict_module.predict_images
    monkeypatch.setattr(predict_module, "predict_images",
                        lambda models, task, images, *a, **k: seen.append(len(images))
                        or real(models, task, images, *a, **k))
    predict_folder(run_models(run, teachers=3), tmp_path / "new", out, progress=False)
    assert sum(seen) == 2  # only the two unfinished images
    assert (out / "uncertainty.csv").read_text() == (whole / "uncertainty.csv").read_text()
    assert read_masks(out).keys() == read_masks(whole).keys()
    for stem, mask in read_masks(out).items():
        assert np.array_equal(mask, read_masks(whole)[stem])
    seen.clear()
    predict_folder(run_models(run, teachers=3), tmp_path / "new", out, progress=False)
    assert seen == []  # all done: nothing predicted again
    # another picture copied in under the same name, keeping its older time (cp -p)
    replaced = tmp_path / "new" / "img1.png"
    earlier = replaced.stat().st_mtime - 86400
    Image.fromarray(np.full((20, 45, 3), 7, np.uint8)).save(replaced)
    os.utime(replaced, (earlier, earlier))
    predict_folder(run_models(run, teachers=3), tmp_path / "new", out, progress=False)
    assert seen == [1]

    shutil.copytree(tmp_path / "new", tmp_path / "other")
    with pytest.raises(DataError, match=r"pred holds predictions of the images in .*new; "
                                        r"choose another --out for .*other"):
        predict_folder(run_models(run, teachers=3), tmp_path / "other", out, progress=False)

    with pytest.raises(DataError, match=r"pred holds predictions of other models \(.*c0.pt"):
        predict_folder(run_models(run, "ldt", 0, teachers=2), tmp_path / "new", out,
                       progress=False)
    (out / "predict.yaml").unlink()  # as an older imseg left it
    with pytest.raises(DataError, match="holds predictions without predict.yaml"):
        predict_folder(run_models(run, teachers=3), tmp_path / "new", out, progress=False)


class PixelNet(torch.nn.Module):
    """A binary 'model' that looks at one pixel at a time: foreground where the pixel's
    mean is above 127.5, with the same logit wherever in a tile the pixel lies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.mean(1, keepdim=True) - 127.5) * 0.1


def test_tiles_show_a_model_new_images_at_its_training_scale():
    rng = np.random.default_rng(0)
    large = rng.integers(0, 256, (100, 70, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (20, 17, 3), dtype=np.uint8)  # mirrored out to one tile
    models, task = [PixelNet(), PixelNet()], Task("binary", 1)
    truth = [(img.astype(float).mean(-1) > 127.5) for img in (large, small)]
    for overlap in (0.5, 0.0):
        tiled = predict_images(models, task, [large, small], (32, 32), torch.device("cpu"),
                               amp=False, tiling=Tiling(1.0, overlap), batch_size=3)
        for pred, want in zip(tiled, truth, strict=True):
            assert pred.label.shape == (1, *want.shape)
            assert np.array_equal(pred.label[0] > 0, want)  # every pixel, seams included
            assert not pred.im.any()
    resized = predict_images(models, task, [large], (32, 32), torch.device("cpu"), amp=False)
    assert ((resized[0].label[0] > 0) != truth[0]).mean() > 0.3  # resized: pixels are lost


def test_models_trained_on_tiles_cut_new_images_alike(tmp_path, capsys):
    run = make_run(tmp_path, tile_scale=1.0)
    make_images(tmp_path / "new")
    out = tmp_path / "pred"
    assert main(["predict", "--run", str(run), "--images", str(tmp_path / "new"), "--out",
                 str(out), "--no-progress"]) == 0
    assert ("input: tiles of the images at their own pixels, overlapping by 0.5 (as in "
            "training)") in capsys.readouterr().out
    for i, (h, w) in enumerate(SIZES):
        assert np.asarray(Image.open(out / "masks" / f"img{i}.png")).shape == (h, w)
    assert yaml.safe_load((out / "predict.yaml").read_text())["input"] == {"scale": 1.0,
                                                                          "overlap": 0.5}
    whole = tmp_path / "whole"
    predict_folder(run_models(run), tmp_path / "new", whole, progress=False, tiles="never")
    assert any(not np.array_equal(a, b) for a, b in  # the 64×40 image: two tiles, not one
               zip(read_masks(out).values(), read_masks(whole).values(), strict=True))
    with pytest.raises(DataError, match=r"pred holds predictions of images cut into tiles "
                                        r"\(.*\), not resized whole; choose another --out"):
        predict_folder(run_models(run), tmp_path / "new", out, progress=False, tiles="never")
    resized_run = make_run(tmp_path / "r")
    with pytest.raises(DataError, match=r"trained on other data .*\(binary \['fg'\] 32x32x3, "
                                        r"tiles at scale 1 vs binary \['fg'\] 32x32x3, "
                                        r"resized images\)"):
        checkpoint_models([resized_run / "models/ldt/r0_g0/c0.pt", run / "models/ldt/r0_g0/c0.pt"])


def test_a_full_disk_names_the_file_and_a_rerun_resumes(tmp_path, monkeypatch, capsys):
    import imseg.predict as predict_module
    from imseg.storage import atomic_write

    run = make_run(tmp_path)
    make_images(tmp_path / "new")
    args = ["predict", "--run", str(run), "--images", str(tmp_path / "new"), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    real, written = predict_module.save_png, []

    def fill_up(path, array):
        if len(written) == 7:  # img2's overlay: the disk is full

            def no_space(tmp):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

            atomic_write(path, no_space)
        written.append(path)
        real(path, array)

    monkeypatch.setattr(predict_module, "save_png", fill_up)
    out = tmp_path / "pred"
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {out / 'overlays' / 'img2.png'}: No space left on device (errno 28 " \
           "ENOSPC); free some space (or use another --out), then run the same command to " \
           "resume" in err and "Traceback" not in err
    assert not list((out / "overlays").glob(".*"))  # no half-written file
    monkeypatch.setattr(predict_module, "save_png", real)
    assert main([*args, "--out", str(out)]) == 0
    assert (out / "uncertainty.csv").read_text() == (tmp_path / "whole" / "uncertainty.csv").read_text()


def test_predict_skips_rows_without_their_model_and_names_a_damaged_table(tmp_path, capsys):
    run = make_run(tmp_path)
    make_images(tmp_path / "new")
    rows = ResultsTable(run / "results.csv").rows
    ResultsTable(run / "results.csv").merge([{**rows[2], "candidate": 7, "val_iou": 0.99}])
    # ^ a pasted row claiming the best val score, naming im c0's checkpoint
    assert [m.path.name for m in run_models(run, teachers=1).metas] == ["c0.pt"]  # val 0.70
    with (run / "results.csv").open("a") as fh:
        fh.write('x,1,2,"unterminated\n')
    assert main(["predict", "--run", str(run), "--images", str(tmp_path / "new"), "--out",
                 str(tmp_path / "pred"), "--no-progress"]) == 2
    assert "results.csv line 8: damaged" in capsys.readouterr().err


def test_a_folder_of_checkpoints_stands_for_its_files_in_number_order(tmp_path):
    for name in ("model10.pt", "model2.pt", "model1.pt", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [p.name for p in checkpoint_files([tmp_path])] == ["model1.pt", "model2.pt",
                                                              "model10.pt"]
