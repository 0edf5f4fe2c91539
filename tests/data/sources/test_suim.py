"""`imseg prepare suim` on a tiny fake download and on the real SUIM samples."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from imseg.cli import main
from imseg.data.dataset import load_dataset, read_mask
from imseg.data.sources.suim import (
    CROP_SEP,
    image_rng,
    prepare_suim,
    random_crops,
    rgb_to_class,
)
from imseg.errors import DataError

SAMPLES = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "suim_samples"
H, W = 48, 64
PALETTE = [(0, 0, 0), (0, 0, 255), (0, 255, 0), (0, 255, 255),
           (255, 0, 0), (255, 0, 255), (255, 255, 0), (255, 255, 255)]
OPTS = {"crops": 2, "min_crop": 16, "max_crop": 32, "size": 16}


def stem_of(i: int, prefix: str = "d_r") -> str:
    return f"{prefix}_{i + 1}_"


def write_pair(folder: Path, stem: str, cls: int, mask_size: tuple[int, int] = (H, W)) -> None:
    """An image and a BMP mask filled with one class colour."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem) + cls)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(img).save(folder / "images" / f"{stem}.jpg", quality=95)
    mask = np.zeros((*mask_size, 3), dtype=np.uint8)
    mask[:] = PALETTE[cls]
    Image.fromarray(mask).save(folder / "masks" / f"{stem}.bmp")


def make_download(root: Path, n_train_val: int = 10) -> Path:
    for i in range(n_train_val):
        write_pair(root / "train_val", stem_of(i), i % 8)
    for i in range(3):
        write_pair(root / "TEST", stem_of(i, "t"), (i + 3) % 8)
    # a per-class subfolder, as in the real download: ignored
    sub = root / "train_val" / "masks" / "FV"
    sub.mkdir()
    Image.fromarray(np.zeros((H, W), dtype=np.uint8)).save(sub / "d_r_1_.bmp")
    return root


def classes_by_source(out: Path) -> dict[str, tuple[str, set[int]]]:
    """source stem → (split, class ids found in its crop masks)."""
    found: dict[str, tuple[str, set[int]]] = {}
    for path in sorted(out.glob("*/masks/*.png")):
        split = path.parent.parent.name
        source = path.stem.rsplit(CROP_SEP, 1)[0]
        ids = set(np.unique(read_mask(path)).tolist())
        prev_split, prev = found.get(source, (split, set()))
        assert prev_split == split, f"crops of {source} in {prev_split} and {split}"
        found[source] = (split, prev | ids)
    return found


def test_rgb_to_class_palette_and_off_palette_count():
    mask = np.array([PALETTE], dtype=np.uint8)  # 1 x 8
    ids, off = rgb_to_class(mask)
    assert ids.tolist() == [[0, 1, 2, 3, 4, 5, 6, 7]] and off == 0
    noisy = np.array([[[250, 3, 5], [200, 100, 10], [30, 240, 100], [12, 130, 250]]],
                     dtype=np.uint8)
    ids, off = rgb_to_class(noisy)
    # near-palette noise snaps silently; 3 pixels have a channel in 64..191
    assert ids.tolist() == [[4, 4, 2, 3]] and off == 3


def test_random_crops_bounds_and_seeding():
    crops = random_crops(48, 64, 50, 16, 32, image_rng(1, "a_"))
    assert {side for _, _, side in crops} <= set(range(16, 33))
    assert all(y + s <= 48 and x + s <= 64 for y, x, s in crops)
    assert len({side for _, _, side in crops}) > 5
    assert crops == random_crops(48, 64, 50, 16, 32, image_rng(1, "a_"))
    assert crops != random_crops(48, 64, 50, 16, 32, image_rng(1, "b_"))
    small = random_crops(20, 64, 5, 32, 64, image_rng(1, "a_"))
    assert all(side == 20 for _, _, side in small)  # clipped to the short side


def test_prepare_layout_counts_classes_and_report(tmp_path):
    src = make_download(tmp_path / "dl")
    # one off-palette pixel in one mask, one mask at half size
    noisy = src / "train_val" / "masks" / "d_r_3_.bmp"
    arr = np.asarray(Image.open(noisy)).copy()
    arr[5, 5] = (200, 100, 10)
    arr[6, 6] = (250, 4, 2)  # noise near a palette colour: not counted
    Image.fromarray(arr).save(noisy)
    write_pair(src / "TEST", "t_2_", 4, mask_size=(H // 2, W // 2))
    out = tmp_path / "suim"
    info = prepare_suim(src, out, seed=42, **OPTS)
    # train_val 10 -> val ceil(1.0) = 1, train 9 -> labeled ceil(0.9) = 1, unlabeled 8
    assert info.counts == {"train_labeled": 2, "train_unlabeled": 16, "val": 2, "test": 6}
    assert info.task == "multiclass" and len(info.classes) == 8 and info.rotate is False
    assert info.colors == PALETTE and info.image_size == (16, 16) and info.channels == 3
    assert info.extra["off_palette_pixels"] == 1 and info.extra["off_palette_masks"] == 1
    assert info.extra["off_palette_examples"] == {"train_val/masks/d_r_3_.bmp": 1}
    assert info.extra["size_mismatch_count"] == 1
    assert info.extra["size_mismatch_files"] == ["TEST/masks/t_2_.bmp"]
    found = classes_by_source(out)  # also: both crops of an image in one split
    assert set(found) == {stem_of(i) for i in range(10)} | {stem_of(i, "t") for i in range(3)}
    for i in range(10):
        if i == 2:  # its colour, and robots where the noisy pixel falls into a crop
            assert found[stem_of(i)][1] in ({2}, {2, 4})
        else:
            assert found[stem_of(i)][1] == {i % 8}
    assert found["t_2_"] == ("test", {4})  # the resized half-size mask
    ds = load_dataset(out)
    assert ds.test.images.shape == (6, 3, 16, 16)
    assert set(ds.labeled.labels.unique().tolist()) <= set(range(1, 9))


def test_same_seed_same_crops_independent_of_other_images(tmp_path):
    make_download(tmp_path / "dl")
    prepare_suim(tmp_path / "dl", tmp_path / "a", seed=3, **OPTS)
    prepare_suim(tmp_path / "dl", tmp_path / "b", seed=3, **OPTS)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
               for f in files_a)
    # more images in the download: the crops of the common images stay the same
    make_download(tmp_path / "dl2", n_train_val=14)
    prepare_suim(tmp_path / "dl2", tmp_path / "c", seed=3, **OPTS)
    by_name = {p.name: p for p in (tmp_path / "c").glob("*/images/*.png")}
    for p in (tmp_path / "a").glob("*/images/*.png"):
        assert p.read_bytes() == by_name[p.name].read_bytes()


def test_zipped_download_and_original_data_folder(tmp_path):
    src = make_download(tmp_path / "dl")
    nested = tmp_path / "base" / "original_data"
    nested.mkdir(parents=True)
    for part in ("train_val", "TEST"):
        with zipfile.ZipFile(nested / f"{part}.zip", "w") as z:
            for p in sorted((src / part).rglob("*")):
                if p.is_file():
                    z.write(p, f"{part}/{p.relative_to(src / part).as_posix()}")
    a = prepare_suim(src, tmp_path / "a", **OPTS)
    b = prepare_suim(tmp_path / "base", tmp_path / "b", **OPTS)
    assert a.counts == b.counts and a.extra["source_images"] == b.extra["source_images"]


def test_image_without_mask_names_the_file(tmp_path):
    src = make_download(tmp_path / "dl")
    (src / "train_val" / "masks" / "d_r_4_.bmp").unlink()
    with pytest.raises(DataError, match="d_r_4_.jpg: no mask"):
        prepare_suim(src, tmp_path / "out", **OPTS)


def test_cli(tmp_path, capsys):
    make_download(tmp_path / "dl")
    rc = main(["prepare", "suim", "--source", str(tmp_path / "dl"), "--out", str(tmp_path / "o"),
               "--min-crop", "16", "--max-crop", "32", "--size", "16"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "test 6" in text and "off-palette pixels snapped: 0" in text


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared SUIM samples not available")
def test_real_suim_samples(tmp_path):
    src = tmp_path / "dl"
    stems = sorted(p.stem for p in (SAMPLES / "images").glob("*.jpg"))
    assert len(stems) == 8
    for i, stem in enumerate(stems):
        part = src / ("train_val" if i < 6 else "TEST")
        (part / "images").mkdir(parents=True, exist_ok=True)
        (part / "masks").mkdir(parents=True, exist_ok=True)
        (part / "images" / f"{stem}.jpg").symlink_to(SAMPLES / "images" / f"{stem}.jpg")
        (part / "masks" / f"{stem}.bmp").symlink_to(SAMPLES / "masks" / f"{stem}.bmp")
    out = tmp_path / "suim"
    info = prepare_suim(src, out, size=64)
    # 6 train_val -> val 1, train 5 -> labeled 1, unlabeled 4; two crops each
    assert info.counts == {"train_labeled": 2, "train_unlabeled": 8, "val": 2, "test": 4}
    meta = yaml.safe_load((out / "dataset.yaml").read_text())
    assert meta["extra"]["off_palette_pixels"] == info.extra["off_palette_pixels"] >= 0
    assert info.extra["size_mismatch_count"] == 0
    found: set[int] = set()
    for path in out.glob("*/masks/*.png"):
        mask = read_mask(path)
        assert mask.shape == (64, 64)
        found |= set(np.unique(mask).tolist())
    assert found <= set(range(8)) and len(found) >= 3
    ds = load_dataset(out)
    assert ds.val.images.shape == (2, 3, 64, 64)
