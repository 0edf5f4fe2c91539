"""`imseg prepare hela` on a tiny fake download in the original layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY, read_rows
from PIL import Image

from imseg.cli import main
from imseg.data.dataset import load_dataset
from imseg.data.sources.hela import (
    disc_radii,
    dot_centres,
    position_discs,
    prepare_hela,
)
from imseg.data.tiles import TILE_SEP
from imseg.errors import DataError

H, W = 48, 64  # crop 32, overlap 0.6 -> 3 x 4 crops per image
DOTS = [(10, 10), (10, 30), (40, 56)]  # radii 5, 5, 8 (clipped from 7)


def disc(shape, cy, cx, r):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def brightfield(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (H, W), dtype=np.uint8)


def alive_mask() -> np.ndarray:
    m = np.zeros((H, W), dtype=np.uint8)
    m[:, : W // 2] = 255
    return m


def dots_mask() -> np.ndarray:
    m = np.zeros((H, W), dtype=np.uint8)
    for y, x in DOTS:
        m[y - 1 : y + 2, x - 1 : x + 2] = 255  # 3x3 dots
    return m


def make_download(root: Path, n_train: int = 10, mod_position_in_test: bool = True) -> Path:
    base = root / "original_data"
    plan = {"train_full": n_train, "val": 2, "test": 2}
    for split, n in plan.items():
        for i in range(n):
            stem = f"{split}_2019-03-{i + 1:02d}_A{i % 3 + 1}_1"
            bf = base / split / "brightfield"
            bf.mkdir(parents=True, exist_ok=True)
            img = brightfield(i + 100 * len(split))
            if i % 2 == 0:
                Image.fromarray(img).save(bf / f"{stem}.tif")
            else:
                Image.fromarray(img).save(bf / f"{stem}.png")
            png(base / split / "alive" / f"{stem}.png", alive_mask())
            png(base / split / "dead" / f"{stem}.png", 255 - alive_mask())
            if split == "test" and mod_position_in_test:
                sq = np.zeros((H, W), dtype=np.uint8)
                sq[20:26, 20:26] = 255
                png(base / split / "mod_position" / f"{stem}.png", sq)
            else:
                png(base / split / "pos" / f"{stem}.png", dots_mask())
    return base


def crops_by_source(out: Path, split: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for p in sorted((out / split / "images").glob("*.png")):
        found.setdefault(p.stem.rsplit(TILE_SEP, 1)[0], []).append(p.stem)
    return found


def test_position_discs_follow_the_nearest_neighbour_rule():
    dots = dots_mask() > 0
    assert dot_centres(dots).tolist() == [list(d) for d in DOTS]
    assert disc_radii(np.array(DOTS)).tolist() == [5, 5, 8]
    discs = position_discs(dots)
    expected = disc((H, W), 10, 10, 5) | disc((H, W), 10, 30, 5) | disc((H, W), 40, 56, 8)
    assert np.array_equal(discs, expected)
    assert expected.sum() == 81 + 81 + (197 - 2)  # the r=8 disc loses a pixel at two edges
    lone = np.zeros((20, 20), dtype=bool)
    lone[10, 10] = True
    assert position_discs(lone).sum() == 29  # a lone cell gets the minimum radius 3


def test_prepare_layout_counts_and_disjoint_sources(tmp_path):
    base = make_download(tmp_path / "dl")
    out = tmp_path / "hela"
    info = prepare_hela(tmp_path / "dl", out, crop=32, overlap=0.6, seed=42)
    per_image = 3 * 4
    assert info.counts == {"train_labeled": 1 * per_image, "train_unlabeled": 9 * per_image,
                           "val": 2 * per_image, "test": 2 * per_image}
    assert info.task == "multilabel" and info.classes == ["alive", "dead", "position"]
    assert info.channels == 1 and info.rotate is True and info.image_size == (32, 32)
    assert info.headline_classes == ["alive", "dead"]  # the paper's mIoU_ad
    assert info.task_obj.headline == (0, 1) and info.test_metrics == ["cell_count"]
    labeled = crops_by_source(out, "train_labeled")
    unlabeled = crops_by_source(out, "train_unlabeled")
    assert not set(labeled) & set(unlabeled)
    train_stems = {p.stem for p in (base / "train_full" / "brightfield").iterdir()}
    assert set(labeled) | set(unlabeled) == train_stems
    assert all(len(v) == per_image for v in (labeled | unlabeled).values())
    assert len(list((out / "train_unlabeled" / "masks").glob("*.png"))) == 9 * per_image
    meta = yaml.safe_load((out / "dataset.yaml").read_text())
    assert sorted(meta["extra"]["source_images"]["train_labeled"]) == sorted(labeled)
    assert meta["extra"]["position"] == {"train_full": "pos", "val": "pos",
                                         "test": "mod_position"}


def test_crop_content_matches_the_source(tmp_path):
    base = make_download(tmp_path / "dl", n_train=3)
    out = tmp_path / "hela"
    prepare_hela(base, out, crop=32, overlap=0.6)  # --source = original_data itself
    ds = load_dataset(out)
    split = ds.val
    stem = "val_2019-03-01_A1_1"  # a tif brightfield
    i = split.stems.index(f"{stem}{TILE_SEP}y00016_x00011")
    img = brightfield(0 + 100 * len("val"))
    assert np.array_equal(split.images[i, 0].numpy(), img[16:48, 11:43])
    lab = split.labels[i].numpy()
    assert np.array_equal(lab[0], (alive_mask() > 0)[16:48, 11:43])
    assert np.array_equal(lab[1], (alive_mask() == 0)[16:48, 11:43])
    discs = disc((H, W), 10, 10, 5) | disc((H, W), 10, 30, 5) | disc((H, W), 40, 56, 8)
    assert np.array_equal(lab[2], discs[16:48, 11:43])
    # mod_position is used as it is: the square stays a square
    j = ds.test.stems.index(f"test_2019-03-01_A1_1{TILE_SEP}y00008_x00011")
    sq = np.zeros((H, W), dtype=bool)
    sq[20:26, 20:26] = True
    assert np.array_equal(ds.test.labels[j, 2].numpy(), sq[8:40, 11:43])


def test_sixteen_bit_and_colour_brightfields(tmp_path):
    base = make_download(tmp_path / "dl", n_train=3)
    bf = base / "val" / "brightfield"
    (bf / "val_2019-03-01_A1_1.tif").unlink()
    Image.fromarray(np.full((H, W), 40000, dtype=np.uint16)).save(bf / "val_2019-03-01_A1_1.tif")
    (bf / "val_2019-03-02_A2_1.png").unlink()
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(bf / "val_2019-03-02_A2_1.png")
    out = tmp_path / "hela"
    prepare_hela(base, out, crop=32, overlap=0.6)
    ds = load_dataset(out)
    first = [i for i, s in enumerate(ds.val.stems) if s.startswith("val_2019-03-01")]
    second = [i for i, s in enumerate(ds.val.stems) if s.startswith("val_2019-03-02")]
    assert ds.val.images[first].unique().tolist() == [40000 >> 8]
    grey = int(Image.fromarray(rgb).convert("L").getpixel((0, 0)))
    assert ds.val.images[second].unique().tolist() == [grey]
    assert ds.info.wide_images == "high_byte"  # so predict reads new 16-bit images alike
    assert ds.info.tile_scale == 1.0  # crops of the own pixels: predict cuts new images alike


def test_same_seed_same_output_and_seed_changes_split(tmp_path):
    make_download(tmp_path / "dl", n_train=10)
    a = prepare_hela(tmp_path / "dl", tmp_path / "a", crop=32, overlap=0.6, seed=7)
    b = prepare_hela(tmp_path / "dl", tmp_path / "b", crop=32, overlap=0.6, seed=7)
    assert a.extra["source_images"] == b.extra["source_images"]
    for p in sorted((tmp_path / "a").rglob("*.png")):
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()
    picks = {
        tuple(prepare_hela(tmp_path / "dl", tmp_path / "c", crop=48, overlap=0.0, seed=s)
              .extra["source_images"]["train_labeled"])
        for s in range(4)
    }
    assert len(picks) > 1


def test_missing_mask_names_the_file(tmp_path):
    base = make_download(tmp_path / "dl", n_train=3)
    (base / "train_full" / "dead" / "train_full_2019-03-02_A2_1.png").unlink()
    with pytest.raises(DataError, match="train_full_2019-03-02_A2_1.*no dead mask"):
        prepare_hela(tmp_path / "dl", tmp_path / "out", crop=32)


def test_mask_size_mismatch_is_an_error(tmp_path):
    base = make_download(tmp_path / "dl", n_train=3)
    png(base / "val" / "alive" / "val_2019-03-01_A1_1.png", np.zeros((H, W - 1), np.uint8))
    with pytest.raises(DataError, match="val_2019-03-01_A1_1.png: size"):
        prepare_hela(tmp_path / "dl", tmp_path / "out", crop=32)


def test_cli(tmp_path, capsys):
    make_download(tmp_path / "dl", n_train=3)
    rc = main(["prepare", "hela", "--source", str(tmp_path / "dl"), "--out",
               str(tmp_path / "out"), "--crop", "32", "--seed", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "train_labeled 12" in text and "train_unlabeled 24" in text


def _trained(tmp_path: Path) -> Path:
    """A run folder with one tiny model trained on a prepared fake HeLa download."""
    make_download(tmp_path / "dl", n_train=3)
    prepare_hela(tmp_path / "dl", tmp_path / "hela", crop=32, seed=1)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "benchmark": {"candidates": 1, "keep": 1}}))
    assert main(["train", "--data", str(tmp_path / "hela"), "--out", str(tmp_path / "run"),
                 "--config", str(config), "--no-progress"]) == 0
    return tmp_path / "run"


def test_a_trained_model_reports_mIoU_ad_and_the_cell_count_error(tmp_path):
    _trained(tmp_path)
    (row,) = read_rows(tmp_path / "run" / "results.csv")
    details = json.loads(row["test_details"])
    assert float(row["test_iou"]) == pytest.approx(sum(details["class_iou"][:2]) / 2, abs=1e-6)
    assert details["iou_all"] == pytest.approx(sum(details["class_iou"]) / 3)
    assert {"count_error", "count_error_alive", "count_error_dead"} <= details.keys()


def test_a_hela_model_predicts_whole_brightfields_in_crops_as_it_was_trained(tmp_path, capsys):
    run = _trained(tmp_path)
    new = tmp_path / "dl" / "original_data" / "test" / "brightfield"
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--images", str(new), "--out",
                 str(tmp_path / "pred"), "--no-progress"]) == 0
    assert "input: tiles of the images at their own pixels" in capsys.readouterr().out
    masks = sorted((tmp_path / "pred" / "masks").glob("*.png"))
    assert len(masks) == 2
    for path in masks:  # alive, dead, position at the brightfield's own size
        assert np.asarray(Image.open(path)).shape == (H, W, 3)
