"""`imseg prepare folder`: any folder of images and masks → the prepared layout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from prepare_faults import fill_disk, snapshot

from imseg.cli import main
from imseg.data.dataset import Split, load_dataset, read_mask
from imseg.data.layout import SPLITS, read_info
from imseg.data.sources.folder import prepare_folder
from imseg.errors import ConfigError, DataError
from imseg.tasks import VOID

DSB = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "dsb2018"


# ------------------------------------------------------------------------ helpers
def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _image(i: int, size=(32, 32), gray=False) -> np.ndarray:
    rng = np.random.default_rng(i)
    shape = size if gray else (*size, 3)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _blocks(i: int, size=(32, 32), values=(0, 1)) -> np.ndarray:
    """A mask with vertical stripes of ``values``, shifted by ``i`` so masks differ."""
    cols = (np.arange(size[1]) // 4 + i) % len(values)
    return np.broadcast_to(np.asarray(values, np.uint8)[cols], size).copy()


def _binary_set(root: Path, n: int = 10, fg: int = 255, size=(32, 32), order=None) -> Path:
    for i in order if order is not None else range(n):
        _save(root / "images" / f"im{i:02d}.png", _image(i, size))
        _save(root / "masks" / f"im{i:02d}.png", _blocks(i, size, (0, fg)))
    return root


def _prep(root: Path, out: Path, **kw):
    return prepare_folder(images=root / "images", masks=root / "masks", out=out, **kw)


def _stems(out: Path, split: str) -> list[str]:
    return sorted(p.stem for p in (out / split / "images").glob("*.png"))


# --------------------------------------------------------------------- happy paths
def test_binary_set_layout_counts_and_labels(tmp_path):
    src = _binary_set(tmp_path / "src", n=10)
    out = tmp_path / "out"
    info = _prep(src, out, seed=3)

    assert info.task == "binary" and info.classes == ["foreground"]
    assert info.image_size == (32, 32) and info.channels == 3 and info.rotate
    assert info.source == str((src / "images").resolve())
    # 10 pairs: test 1, val 1; of the 8 left 10 % → 1 labeled, 7 unlabeled
    assert info.counts == {"train_labeled": 1, "train_unlabeled": 7, "val": 1, "test": 1}
    assert read_info(out).counts == info.counts
    all_stems = sorted(s for split in SPLITS for s in _stems(out, split))
    assert all_stems == [f"im{i:02d}" for i in range(10)]
    for split in SPLITS:  # every split carries its truth, unlabeled included
        assert _stems(out, split) == sorted(p.stem for p in (out / split / "masks").glob("*.png"))

    ds = load_dataset(out)
    assert ds.unlabeled.labels is not None and len(ds.unlabeled) == 7
    for split in (ds.labeled, ds.unlabeled, ds.val, ds.test):
        for k, stem in enumerate(split.stems):
            i = int(stem[2:])
            assert np.array_equal(split.images[k].permute(1, 2, 0).numpy(), _image(i))
            assert np.array_equal(split.labels[k, 0].numpy(), _blocks(i, values=(0, 1)))


def test_split_is_seeded_and_independent_of_creation_order(tmp_path):
    a = _binary_set(tmp_path / "a", order=range(20))
    b = _binary_set(tmp_path / "b", order=reversed(range(20)))
    _prep(a, tmp_path / "oa", seed=7, labeled_fraction=0.25)
    _prep(b, tmp_path / "ob", seed=7, labeled_fraction=0.25)
    _prep(a, tmp_path / "oc", seed=8, labeled_fraction=0.25)
    splits = {o: {s: _stems(tmp_path / o, s) for s in SPLITS} for o in ("oa", "ob", "oc")}
    assert splits["oa"] == splits["ob"]
    assert splits["oa"] != splits["oc"]
    assert {s: len(v) for s, v in splits["oa"].items()} == {
        "train_labeled": 4, "train_unlabeled": 12, "val": 2, "test": 2
    }


def test_binary_01_and_0255_give_the_same_labels(tmp_path):
    one = _binary_set(tmp_path / "one", n=6, fg=1)
    full = _binary_set(tmp_path / "full", n=6, fg=255)
    d1 = load_dataset(_prep(one, tmp_path / "o1", labeled_fraction=0.5) and tmp_path / "o1")
    d2 = load_dataset(_prep(full, tmp_path / "o2", labeled_fraction=0.5) and tmp_path / "o2")
    assert d1.labeled.stems == d2.labeled.stems
    assert np.array_equal(d1.labeled.labels.numpy(), d2.labeled.labels.numpy())
    assert set(np.unique(d1.labeled.labels.numpy()).tolist()) == {0, 1}
    # on disk both are 0/255
    stem = d1.labeled.stems[0]
    disk = read_mask(tmp_path / "o1" / "train_labeled" / "masks" / f"{stem}.png")
    assert set(np.unique(disk).tolist()) == {0, 255}


def test_mixed_file_formats_gray_and_rgb(tmp_path):
    src = tmp_path / "src"
    exts = [".png", ".jpg", ".bmp", ".tif", ".png", ".jpg"]
    for i, ext in enumerate(exts):
        _save(src / "images" / f"x{i}{ext}", _image(i, gray=i % 2 == 0))
        _save(src / "masks" / f"x{i}{'.bmp' if i == 3 else '.png'}", _blocks(i, values=(0, 255)))
    info = _prep(src, tmp_path / "rgb", labeled_fraction=1.0)
    assert info.counts["train_labeled"] == 4 and info.counts["train_unlabeled"] == 0
    ds = load_dataset(tmp_path / "rgb")
    assert ds.labeled.images.shape[1:] == (3, 32, 32)
    everything = Split.concat([ds.labeled, ds.val, ds.test])
    assert sorted(everything.stems) == [f"x{i}" for i in range(6)]
    img = everything.images[everything.stems.index("x2")].numpy()
    # a gray png becomes RGB with equal channels, pixel values kept
    assert np.array_equal(img[0], _image(2, gray=True)) and np.array_equal(img[0], img[2])
    img = everything.images[everything.stems.index("x4")].numpy()
    assert np.array_equal(np.moveaxis(img, 0, -1), _image(4, gray=True)[..., None].repeat(3, -1))

    info = _prep(src, tmp_path / "gray", labeled_fraction=1.0, channels=1)
    assert info.channels == 1
    ds = load_dataset(tmp_path / "gray")
    assert ds.labeled.images.shape[1:] == (1, 32, 32)
    assert Image.open(next((tmp_path / "gray" / "val" / "images").iterdir())).mode == "L"


def test_16_bit_gray_images_are_scaled_not_clipped(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        ramp = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 4)  # max 4092
        ramp[0, 1 + i] = 0  # distinct images: equal ones would all go to one split
        Image.fromarray(ramp).save(_dir(src / "images") / f"w{i}.png")
        _save(src / "masks" / f"w{i}.png", _blocks(i, values=(0, 255)))
    _prep(src, tmp_path / "out", channels=1, val_fraction=0.34, test_fraction=0.0)
    written = np.asarray(Image.open(next((tmp_path / "out" / "val" / "images").iterdir())))
    assert written.max() == 255 and written.min() == 0
    assert written[16, 0] == round(16 * 32 * 4 * 255 / 4092)


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_class_id_masks_infer_multiclass(tmp_path):
    src = tmp_path / "src"
    for i in range(5):
        _save(src / "images" / f"c{i}.png", _image(i))
        _save(src / "masks" / f"c{i}.png", _blocks(i, values=(0, 1, 2, 3)))
    info = _prep(src, tmp_path / "out", labeled_fraction=1.0)
    assert info.task == "multiclass"
    assert info.classes == ["class0", "class1", "class2", "class3"]
    ds = load_dataset(tmp_path / "out")
    for k, stem in enumerate(ds.labeled.stems):
        assert np.array_equal(ds.labeled.labels[k, 0].numpy(),
                              _blocks(int(stem[1:]), values=(1, 2, 3, 4)))


def test_palette_rgb_masks_become_class_ids(tmp_path):
    colors = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    pal = tmp_path / "pal.yaml"
    pal.write_text(yaml.safe_dump([{"name": n, "color": list(c)}
                                   for n, c in zip(["sea", "robot", "diver"], colors, strict=True)]))
    src = tmp_path / "src"
    for i in range(5):
        ids = _blocks(i, values=(0, 1, 2))
        _save(src / "images" / f"p{i}.jpg", _image(i))
        _save(src / "masks" / f"p{i}.bmp", np.asarray(colors, np.uint8)[ids])
    info = _prep(src, tmp_path / "out", palette=pal, labeled_fraction=1.0)
    assert info.task == "multiclass" and info.classes == ["sea", "robot", "diver"]
    assert info.colors == colors
    for split in ("train_labeled", "val", "test"):
        for path in (tmp_path / "out" / split / "masks").glob("*.png"):
            assert np.array_equal(read_mask(path), _blocks(int(path.stem[1:]), values=(0, 1, 2)))


def test_palette_with_void_entry_and_renamed_classes(tmp_path):
    colors = [(0, 0, 0), (9, 9, 9), (255, 255, 255)]  # entry 1 is void
    pal = tmp_path / "pal.json"
    pal.write_text(json.dumps([{"name": f"n{k}", "color": list(c)}
                               for k, c in enumerate(colors)]))
    src = tmp_path / "src"
    for i in range(4):
        _save(src / "images" / f"p{i}.png", _image(i))
        _save(src / "masks" / f"p{i}.png",
              np.asarray(colors, np.uint8)[_blocks(i, values=(0, 1, 2))])
    info = _prep(src, tmp_path / "out", palette=pal, ignore_index=1, classes=["bg", "snow"],
                 labeled_fraction=1.0)
    assert info.classes == ["bg", "snow"] and info.colors == [colors[0], colors[2]]
    for path in (tmp_path / "out" / "train_labeled" / "masks").glob("*.png"):
        assert np.array_equal(read_mask(path), _blocks(int(path.stem[1:]), values=(0, 255, 1)))


def test_ignore_index_inside_the_class_range_renumbers(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        _save(src / "images" / f"v{i}.png", _image(i))
        _save(src / "masks" / f"v{i}.png", _blocks(i, values=(0, 1, 2, 3)))
    info = _prep(src, tmp_path / "out", ignore_index=1, labeled_fraction=1.0)
    assert info.task == "multiclass" and len(info.classes) == 3
    assert info.extra == {"ignore_index": 1}
    ds = load_dataset(tmp_path / "out")
    for k, stem in enumerate(ds.labeled.stems):
        # source 0→class 0 (label 1), 1→void, 2→class 1 (label 2), 3→class 2 (label 3)
        expected = _blocks(int(stem[1:]), values=(1, VOID, 2, 3))
        assert np.array_equal(ds.labeled.labels[k, 0].numpy(), expected)


def test_ignore_index_above_the_classes_like_camvid(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        _save(src / "images" / f"v{i}.png", _image(i))
        _save(src / "masks" / f"v{i}.png", _blocks(i, values=(0, 1, 2, 11)))
    info = _prep(src, tmp_path / "out", ignore_index=11, labeled_fraction=1.0,
                 task="multiclass")
    assert info.classes == ["class0", "class1", "class2"]
    for path in (tmp_path / "out" / "train_labeled" / "masks").glob("*.png"):
        assert np.array_equal(read_mask(path), _blocks(int(path.stem[1:]), values=(0, 1, 2, 255)))


def test_ignore_index_in_binary_masks_is_void(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        _save(src / "images" / f"b{i}.png", _image(i))
        _save(src / "masks" / f"b{i}.png", _blocks(i, values=(0, 1, 255)))
    info = _prep(src, tmp_path / "out", ignore_index=255, labeled_fraction=1.0)
    assert info.task == "binary"
    ds = load_dataset(tmp_path / "out")
    for k, stem in enumerate(ds.labeled.stems):
        expected = _blocks(int(stem[1:]), values=(0, 1, VOID))
        assert np.array_equal(ds.labeled.labels[k, 0].numpy(), expected)
    path = next((tmp_path / "out" / "val" / "masks").glob("*.png"))
    assert set(np.unique(read_mask(path)).tolist()) == {0, 128, 255}


def test_multilabel_channels(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        planes = [_blocks(i + c, values=(0, 255)) for c in range(2)] + [np.zeros((32, 32))]
        _save(src / "images" / f"m{i}.png", _image(i))
        _save(src / "masks" / f"m{i}.png", np.stack(planes, -1).astype(np.uint8))
    info = _prep(src, tmp_path / "three", task="multilabel", labeled_fraction=1.0)
    assert info.task == "multilabel" and info.classes == ["label0", "label1", "label2"]
    info = _prep(src, tmp_path / "two", task="multilabel", classes=["a", "b"],
                 labeled_fraction=1.0)
    assert info.classes == ["a", "b"]
    ds = load_dataset(tmp_path / "two")
    assert ds.labeled.labels.shape[1:] == (2, 32, 32)
    for k, stem in enumerate(ds.labeled.stems):
        i = int(stem[1:])
        for c in range(2):
            assert np.array_equal(ds.labeled.labels[k, c].numpy(), _blocks(i + c, values=(0, 1)))


def test_size_resizes_images_and_masks_without_new_values(tmp_path):
    src = tmp_path / "src"
    for i in range(5):
        size = (40, 40) if i % 2 else (48, 36)  # mixed sizes are fine with --size
        _save(src / "images" / f"s{i}.png", _image(i, size))
        _save(src / "masks" / f"s{i}.png", _blocks(i, size, values=(0, 1, 2)))
    info = _prep(src, tmp_path / "out", size=(32, 16), labeled_fraction=1.0)
    assert info.image_size == (32, 16)
    for split in ("train_labeled", "val", "test"):
        for path in (tmp_path / "out" / split / "masks").glob("*.png"):
            mask = read_mask(path)
            assert mask.shape == (32, 16)
            assert set(np.unique(mask).tolist()) <= {0, 1, 2}
    assert load_dataset(tmp_path / "out").labeled.images.shape[2:] == (32, 16)


def test_unlabeled_folder_drops_unlabeled_truth(tmp_path):
    src = _binary_set(tmp_path / "src", n=10)
    for i in range(3):
        _save(src / "extra" / f"u{i}.jpg", _image(50 + i))
    info = _prep(src, tmp_path / "out", unlabeled=src / "extra")
    assert info.counts == {"train_labeled": 1, "train_unlabeled": 10, "val": 1, "test": 1}
    assert not (tmp_path / "out" / "train_unlabeled" / "masks").exists()
    assert {"u0", "u1", "u2"} <= set(_stems(tmp_path / "out", "train_unlabeled"))
    ds = load_dataset(tmp_path / "out")
    assert ds.unlabeled.labels is None and len(ds.unlabeled) == 10


def test_explicit_val_and_test_folders(tmp_path):
    src = _binary_set(tmp_path / "src", n=4)
    for name, base in (("val", 20), ("test", 30)):
        for i in range(2):
            _save(src / f"{name}_img" / f"{name}{i}.png", _image(base + i))
            _save(src / f"{name}_msk" / f"{name}{i}.png", _blocks(i, values=(0, 255)))
    info = _prep(src, tmp_path / "out", labeled_fraction=0.5,
                 val_images=src / "val_img", val_masks=src / "val_msk",
                 test_images=src / "test_img", test_masks=src / "test_msk")
    assert info.counts == {"train_labeled": 2, "train_unlabeled": 2, "val": 2, "test": 2}
    assert _stems(tmp_path / "out", "val") == ["val0", "val1"]
    assert _stems(tmp_path / "out", "test") == ["test0", "test1"]
    assert "renamed" not in info.extra  # no clash, no renaming


# ------------------------------------------------------- split folders numbered alike
def _numbered(root: Path, counts: dict[str, int], base: int = 0) -> Path:
    """``<split>/images/<i>.jpg`` and ``<split>/masks/<i>.png`` from 0 in every split,
    as many downloads are laid out; ``unlabeled`` gets images only."""
    for split, n in counts.items():
        for i in range(n):
            seed = base + 100 * list(counts).index(split) + i  # distinct pixels everywhere
            _save(root / split / "images" / f"{i}.jpg", _image(seed))
            if split != "unlabeled":
                _save(root / split / "masks" / f"{i}.png", _blocks(seed, values=(0, 255)))
    return root


def _prep_numbered(src: Path, out: Path, splits=("validation", "test"), **kw):
    folders = {"val": "validation", "test": "test"}
    for key, split in folders.items():
        if split in splits:
            kw[f"{key}_images"], kw[f"{key}_masks"] = src / split / "images", src / split / "masks"
    if (src / "unlabeled").is_dir():
        kw["unlabeled"] = src / "unlabeled" / "images"
    return prepare_folder(images=src / "train" / "images", masks=src / "train" / "masks",
                          out=out, progress=False, **kw)


def test_split_folders_numbered_from_zero_get_prefixed_names(tmp_path):
    src = _numbered(tmp_path / "src", {"train": 6, "validation": 3, "test": 2, "unlabeled": 4})
    out = tmp_path / "out"
    info = _prep_numbered(src, out, labeled_fraction=0.5)

    assert info.counts == {"train_labeled": 3, "train_unlabeled": 7, "val": 3, "test": 2}
    assert sorted(_stems(out, "train_labeled") + _stems(out, "train_unlabeled")) == sorted(
        [str(i) for i in range(6)] + [f"unl-{i}" for i in range(4)]
    )
    assert _stems(out, "val") == ["val-0", "val-1", "val-2"]
    assert _stems(out, "test") == ["test-0", "test-1"]
    # dataset.yaml maps each prefixed stem to its source image; the train stems are unchanged
    expected = {f"{prefix}{i}": str((src / split / "images" / f"{i}.jpg").absolute())
                for prefix, split, n in (("val-", "validation", 3), ("test-", "test", 2),
                                         ("unl-", "unlabeled", 4)) for i in range(n)}
    assert info.extra["renamed"] == expected
    assert read_info(out).extra["renamed"] == expected

    ds = load_dataset(out)
    assert ds.unlabeled.labels is None and len(ds.val) == 3 and len(ds.test) == 2
    for split in (ds.val, ds.test, ds.unlabeled, ds.labeled):
        for k, stem in enumerate(split.stems):  # each prepared image is the file it maps to
            source = Path(expected.get(stem, src / "train" / "images" / f"{stem}.jpg"))
            decoded = np.asarray(Image.open(source).convert("RGB"))
            assert np.array_equal(split.images[k].permute(1, 2, 0).numpy(), decoded)


def test_only_a_clashing_folder_is_prefixed(tmp_path):
    src = _numbered(tmp_path / "src", {"train": 6, "validation": 2})
    for i in range(2):  # test files named t0, t1: no clash
        _save(src / "test" / "images" / f"t{i}.png", _image(900 + i))
        _save(src / "test" / "masks" / f"t{i}.png", _blocks(i, values=(0, 255)))
    info = _prep_numbered(src, tmp_path / "out")
    assert _stems(tmp_path / "out", "val") == ["val-0", "val-1"]
    assert _stems(tmp_path / "out", "test") == ["t0", "t1"]
    assert sorted(info.extra["renamed"]) == ["val-0", "val-1"]


def test_a_taken_prefixed_name_is_refused(tmp_path):
    src = _numbered(tmp_path / "src", {"train": 3, "validation": 2})
    _save(src / "train" / "images" / "val-1.png", _image(700))
    _save(src / "train" / "masks" / "val-1.png", _blocks(0, values=(0, 255)))
    with pytest.raises(DataError, match=r"validation/images/1\.jpg: its prepared name val-1 "
                                        r"is taken by .*train/images/val-1\.png"):
        _prep_numbered(src, tmp_path / "out", splits=("validation",))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("split", ["validation", "test", "unlabeled"])
def test_an_image_in_two_splits_is_refused_naming_both_files(tmp_path, split):
    src = _numbered(tmp_path / "src", {"train": 5, "validation": 2, "test": 2, "unlabeled": 2})
    copy = src / split / "images" / "1.png"  # other name and format, same decoded pixels
    (src / split / "images" / "1.jpg").unlink()
    Image.open(src / "train" / "images" / "3.jpg").save(copy)
    with pytest.raises(DataError) as err:
        _prep_numbered(src, tmp_path / "out")
    message = str(err.value)
    assert f"{copy}: same pixels as {src / 'train' / 'images' / '3.jpg'}" in message
    assert not (tmp_path / "out").exists()


def test_equal_images_within_one_folder_are_kept_and_split_together(tmp_path):
    src = _binary_set(tmp_path / "src", n=20)
    for i in (1, 2, 3):  # im01..im03 copy im00's pixels
        _save(src / "images" / f"im{i:02d}.png", _image(0))
    copies = {"im00", "im01", "im02", "im03"}
    for seed in range(6):
        out = tmp_path / f"out{seed}"
        info = _prep(src, out, seed=seed, labeled_fraction=0.3)
        assert sum(info.counts.values()) == 20
        holding = [split for split in SPLITS if copies & set(_stems(out, split))]
        assert len(holding) == 1 and copies <= set(_stems(out, holding[0]))


def test_overwrite(tmp_path):
    out = tmp_path / "out"
    _prep(_binary_set(tmp_path / "a", n=10), out)
    with pytest.raises(DataError, match="not empty"):
        _prep(_binary_set(tmp_path / "b", n=6, size=(16, 16)), out)
    info = _prep(tmp_path / "b", out, overwrite=True)
    assert info.image_size == (16, 16)
    assert sum(info.counts.values()) == 6 == sum(len(_stems(out, s)) for s in SPLITS)


# ------------------------------------------------------------------------ bad input
def _no_mask(src):
    (src / "masks" / "im03.png").unlink()
    return "im03.png", {}


def _no_image(src):
    (src / "images" / "im04.png").unlink()
    return "im04.png", {}


def _unreadable_image(src):
    (src / "images" / "im05.png").write_bytes(b"not a png at all")
    return "im05.png", {}


def _truncated_mask(src):
    path = src / "masks" / "im06.png"
    path.write_bytes(path.read_bytes()[:60])
    return "im06.png", {}


def _value_outside_binary(src):
    _save(src / "masks" / "im02.png", _blocks(2, values=(0, 255, 7)))
    return "im02.png", {"task": "binary"}


def _value_outside_classes(src):
    for i in range(10):
        _save(src / "masks" / f"im{i:02d}.png", _blocks(i, values=(0, 1, 2)))
    _save(src / "masks" / "im01.png", _blocks(1, values=(0, 1, 5)))
    return "im01.png", {"classes": ["a", "b", "c"]}


def _mixed_foreground_values(src):
    _save(src / "masks" / "im08.png", _blocks(8, values=(0, 1)))
    return "im08.png", {"task": "binary"}


def _colour_not_in_palette(src):
    pal = src / "pal.yaml"
    pal.write_text("- {name: bg, color: [0, 0, 0]}\n- {name: fg, color: [255, 255, 255]}\n")
    bad = np.zeros((32, 32, 3), np.uint8)
    bad[5, 5] = (255, 0, 0)
    _save(src / "masks" / "im07.png", bad)
    return "im07.png", {"palette": pal}


def _rgb_mask_without_palette(src):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:8, :, 0] = 255
    _save(src / "masks" / "im09.png", rgb)
    return "im09.png", {}


def _mask_size_mismatch(src):
    _save(src / "masks" / "im04.png", _blocks(4, (32, 48), values=(0, 255)))
    return "im04.png", {"size": (32, 32)}


def _image_size_mismatch(src):
    _save(src / "images" / "im05.png", _image(5, (48, 32)))
    _save(src / "masks" / "im05.png", _blocks(5, (48, 32), values=(0, 255)))
    return "im05.png", {}


def _not_multiple_of_16(src):
    for i in range(10):
        _save(src / "images" / f"im{i:02d}.png", _image(i, (30, 30)))
        _save(src / "masks" / f"im{i:02d}.png", _blocks(i, (30, 30), values=(0, 255)))
    return "im00.png", {}


def _duplicate_stem(src):
    _save(src / "images" / "im03.jpg", _image(3))
    return "im03", {}


def _duplicate_across_folders(src):
    _save(src / "extra" / "im02.png", _image(2))
    return "im02.png", {"unlabeled": src / "extra"}


def _empty_masks_folder(src):
    shutil.rmtree(src / "masks")
    (src / "masks").mkdir()
    return "masks", {}


def _missing_folder(src):
    shutil.rmtree(src / "images")
    return "images", {}


@pytest.mark.parametrize(
    "breaker",
    [_no_mask, _no_image, _unreadable_image, _truncated_mask, _value_outside_binary,
     _value_outside_classes, _mixed_foreground_values, _colour_not_in_palette,
     _rgb_mask_without_palette, _mask_size_mismatch, _image_size_mismatch,
     _not_multiple_of_16, _duplicate_stem, _duplicate_across_folders, _empty_masks_folder,
     _missing_folder],
)
def test_bad_input_names_the_file_and_writes_nothing(tmp_path, breaker):
    src = _binary_set(tmp_path / "src", n=10)
    name, kw = breaker(src)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        _prep(src, out, **kw)
    assert name in str(err.value)
    assert not out.exists()


def test_messages_suggest_the_fix(tmp_path):
    src = _binary_set(tmp_path / "src", n=10)
    _image_size_mismatch(src)
    with pytest.raises(DataError, match="--size"):
        _prep(src, tmp_path / "out")
    src = _binary_set(tmp_path / "rgb", n=10)
    _rgb_mask_without_palette(src)
    with pytest.raises(DataError, match="--palette FILE.*--task multilabel"):
        _prep(src, tmp_path / "out")
    src = _binary_set(tmp_path / "bin", n=10)
    with pytest.raises(DataError, match="256 classes.*--ignore-index 255.*--task binary"):
        _prep(src, tmp_path / "out", task="multiclass")


def test_every_problem_is_listed_in_one_error(tmp_path):
    src = _binary_set(tmp_path / "src", n=12)
    _no_mask(src)  # im03
    _no_image(src)  # im04: its mask is left alone
    _unreadable_image(src)  # im05
    _truncated_mask(src)  # im06
    _save(src / "masks" / "im07.png", _blocks(7, values=(0, 255, 7)))  # value outside 0/255
    _save(src / "masks" / "im08.png", _blocks(8, (32, 48), values=(0, 255)))  # size differs
    _save(src / "extra" / "u0.png", _image(9))  # the same image as im09
    with pytest.raises(DataError) as err:
        _prep(src, tmp_path / "out", unlabeled=src / "extra", size=(32, 32), task="binary")
    message = str(err.value)
    assert message.startswith("7 problems in the input files (nothing was written):")
    wanted = [
        f"{src / 'images' / 'im03.png'}: no mask",
        f"{src / 'masks' / 'im04.png'}: no image",
        f"{src / 'images' / 'im05.png'}: cannot read",
        f"{src / 'masks' / 'im06.png'}: cannot read",
        f"{src / 'masks' / 'im08.png'}: mask size 32×48",
        f"{src / 'extra' / 'u0.png'}: same pixels as {src / 'images' / 'im09.png'}",
        f"{src / 'masks' / 'im07.png'}: values [7] outside 0/255",
    ]
    for line in wanted:
        assert f"\n  - {line}" in message
    assert "more" not in message
    assert not (tmp_path / "out").exists()


def test_a_long_problem_list_shows_20_and_counts_the_rest(tmp_path):
    src = _binary_set(tmp_path / "src", n=30)
    for i in range(25):
        (src / "masks" / f"im{i:02d}.png").unlink()
    with pytest.raises(DataError) as err:
        _prep(src, tmp_path / "out")
    lines = str(err.value).splitlines()
    assert lines[0] == "25 problems in the input files (nothing was written):"
    assert [line.split(": ")[0] for line in lines[1:21]] == [
        f"  - {src / 'images' / f'im{i:02d}.png'}" for i in range(20)
    ]
    assert lines[21:] == ["  ... and 5 more"]
    assert not (tmp_path / "out").exists()


def test_palette_mode_png_masks_give_their_indices(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        _save(src / "images" / f"q{i}.png", _image(i))
        mask = Image.fromarray(_blocks(i, values=(0, 1, 2)))
        mask.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10] + [0] * 759)  # L → P, same values
        assert mask.mode == "P"
        mask.save(_dir(src / "masks") / f"q{i}.png")
    info = _prep(src, tmp_path / "out", labeled_fraction=1.0)
    assert info.task == "multiclass" and len(info.classes) == 3
    for path in (tmp_path / "out" / "train_labeled" / "masks").glob("*.png"):
        assert np.array_equal(read_mask(path), _blocks(int(path.stem[1:]), values=(0, 1, 2)))


# ------------------------------------------------------------------------------ CLI
def test_cli_on_dsb2018_subset(tmp_path):
    if not DSB.is_dir():
        pytest.skip("shared dsb2018 data not present")
    src = tmp_path / "dsb"
    stems = sorted(p.stem for p in (DSB / "images").glob("*.png"))[:12]
    for sub in ("images", "masks"):
        (src / sub).mkdir(parents=True)
        for stem in stems:
            (src / sub / f"{stem}.png").symlink_to((DSB / sub / f"{stem}.png").resolve())
    out = tmp_path / "prepared"
    rc = main(["prepare", "folder", "--images", str(src / "images"), "--masks",
               str(src / "masks"), "--out", str(out), "--size", "64", "64",
               "--labeled-fraction", "0.2", "--seed", "1"])
    assert rc == 0
    ds = load_dataset(out)
    assert ds.info.task == "binary" and ds.info.image_size == (64, 64)
    assert (len(ds.labeled), len(ds.unlabeled), len(ds.val), len(ds.test)) == (2, 8, 1, 1)
    assert ds.labeled.images.shape[1:] == (3, 64, 64)
    labels = ds.labeled.labels.numpy()
    assert set(np.unique(labels).tolist()) == {0, 1}  # nuclei and background both present


def test_cli_reports_user_errors_without_traceback(tmp_path, capsys):
    rc = main(["prepare", "folder", "--images", str(tmp_path / "none"), "--masks",
               str(tmp_path / "none"), "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "none: folder not found" in capsys.readouterr().err


# ------------------------------------------------------- layouts as downloads have them
def _disk(i: int, size=(32, 32)) -> np.ndarray:
    """A 0/255 disk mask whose centre and radius depend on ``i`` (round edges, as lesions)."""
    yy, xx = np.mgrid[: size[0], : size[1]]
    cy, cx, r = 10 + i % 12, 12 + (3 * i) % 10, 6 + i % 5
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).astype(np.uint8) * 255


def _labels(out: Path) -> dict[str, np.ndarray]:
    """Every written mask of the prepared set by stem (binary: 0/255 on disk)."""
    return {p.stem: np.asarray(Image.open(p)) for p in sorted(out.glob("*/masks/*.png"))}


def test_isic_style_mask_suffix_is_found_and_recorded(tmp_path, capsys):
    src = tmp_path / "src"
    for i in range(10):
        _save(src / "images" / f"ISIC_{i:07d}.jpg", _image(i))
        _save(src / "masks" / f"ISIC_{i:07d}_segmentation.png", _disk(i))
    _save(src / "masks" / "ATTRIBUTION_segmentation.png", _disk(0) * 0)  # no such image
    with pytest.raises(DataError) as err:
        _prep(src, tmp_path / "bad")
    assert str(err.value) == (f"{src / 'masks' / 'ATTRIBUTION_segmentation.png'}: no image "
                              f"named ATTRIBUTION.* in {src / 'images'}")
    (src / "masks" / "ATTRIBUTION_segmentation.png").unlink()
    out = tmp_path / "out"
    assert main(["prepare", "folder", "--images", str(src / "images"), "--masks",
                 str(src / "masks"), "--out", str(out)]) == 0
    assert "masks named <image stem>_segmentation (found" in capsys.readouterr().out
    info = read_info(out)
    assert info.extra["mask_suffix"] == {str((src / "masks").absolute()): "_segmentation"}
    labels = _labels(out)
    assert sorted(labels) == [f"ISIC_{i:07d}" for i in range(10)]  # named as the images
    for stem, label in labels.items():
        assert np.array_equal(label, _disk(int(stem[-7:])))


def test_carvana_style_gif_masks_with_a_given_suffix(tmp_path):
    src = tmp_path / "src"
    for i in range(10):
        _save(src / "train" / f"car{i}_01.jpg", _image(i))
        gif = Image.fromarray((_disk(i) > 0).astype(np.uint8), mode="L").convert("P")
        gif.save(_dir(src / "train_masks") / f"car{i}_01_mask.gif")
    info = prepare_folder(images=src / "train", masks=src / "train_masks", out=tmp_path / "out",
                          mask_suffix="_mask")
    assert info.task == "binary"
    for stem, label in _labels(tmp_path / "out").items():
        assert np.array_equal(label, _disk(int(stem[3])))


def test_names_that_match_nowhere_give_one_error(tmp_path):
    src = tmp_path / "src"
    for i in range(10):
        _save(src / "images" / f"img{i}.png", _image(i))
        _save(src / "masks" / f"label{i}.png", _disk(i))
    with pytest.raises(DataError) as err:
        _prep(src, tmp_path / "out")
    message = str(err.value)
    assert message.startswith(f"{src / 'masks'}: no mask is named like an image of ")
    assert "image img0.png, mask label0.png" in message and "--mask-suffix" in message
    assert "problems" not in message  # one line, not one per file


def test_mask_suffix_needs_most_masks_to_agree():
    from imseg.data.sources.folder import mask_suffix_of

    assert mask_suffix_of(["a", "b"], ["a", "b_mask"]) == ""  # names match as they are
    assert mask_suffix_of(["a", "a_1"], ["a_mask", "a_1_mask"]) == "_mask"
    assert mask_suffix_of(["a", "b", "c"], ["a_x", "b_y", "c_z"]) == ""  # no shared suffix
    assert mask_suffix_of(["a", "b", "c"], ["a_m", "b_m", "zz"]) == "_m"


def test_kvasir_style_jpeg_masks_are_read_as_binary(tmp_path, capsys):
    src = tmp_path / "src"
    for i in range(10):
        _save(src / "images" / f"p{i}.jpg", _image(i))
        rgb = np.repeat(_disk(i)[..., None], 3, axis=2)  # a gray mask saved as RGB JPEG
        Image.fromarray(rgb).save(_dir(src / "masks") / f"p{i}.jpg", quality=75)
    raw = np.asarray(Image.open(src / "masks" / "p3.jpg"))
    assert len(np.unique(raw)) > 2  # the compression's noise the threshold removes
    out = tmp_path / "out"
    assert main(["prepare", "folder", "--images", str(src / "images"), "--masks",
                 str(src / "masks"), "--out", str(out)]) == 0
    assert "masks are JPEG (lossy): read as binary" in capsys.readouterr().out
    info = read_info(out)
    assert info.task == "binary" and info.extra["mask_threshold"] == 128
    for stem, label in _labels(out).items():
        assert (label == _disk(int(stem[1:]))).mean() > 0.99


def test_jpeg_class_id_masks_are_refused_not_emptied(tmp_path):
    src = tmp_path / "src"
    for i in range(10):
        _save(src / "images" / f"p{i}.png", _image(i))
        Image.fromarray(_blocks(i, values=(0, 1, 2))).save(_dir(src / "masks") / f"p{i}.jpg")
    with pytest.raises(DataError, match=r"no mask has a value >= 128, so every mask would be"):
        _prep(src, tmp_path / "out")
    with pytest.raises(DataError, match=r"p0.jpg: 10 of the 10 masks are JPEG, which cannot "
                                        r"keep class ids or colours .*save the masks as PNG"):
        _prep(src, tmp_path / "out", task="multiclass")


def test_instance_label_masks_need_and_take_a_threshold_of_one(tmp_path):
    src = tmp_path / "src"
    for i in range(10):
        _save(src / "images" / f"c{i}.png", _image(i))
        ids = (_disk(i) > 0).astype(np.uint16) * (300 + i)  # 16-bit instance ids
        ids[:4, :4] = 1 + i  # a second object with a small id
        Image.fromarray(ids).save(_dir(src / "masks") / f"c{i}.png")
    with pytest.raises(DataError, match=r"found up to 30\d\); .*--mask-threshold 1"):
        _prep(src, tmp_path / "bad")
    info = _prep(src, tmp_path / "out", mask_threshold=1)
    assert info.task == "binary" and info.extra["mask_threshold"] == 1
    for stem, label in _labels(tmp_path / "out").items():
        want = _disk(int(stem[1:]))
        want[:4, :4] = 255
        assert np.array_equal(label, want)


@pytest.mark.parametrize("kw", [{"palette": "p.yaml"}, {"ignore_index": 255},
                                {"task": "multiclass"}, {"classes": ["a", "b"]},
                                {"mask_threshold": 0}])
def test_mask_threshold_refuses_what_it_cannot_mean(tmp_path, kw):
    src = _binary_set(tmp_path / "src", n=4)
    kw = {"mask_threshold": 1, **kw}
    if "palette" in kw:
        kw["palette"] = tmp_path / "p.yaml"
    with pytest.raises(ConfigError, match="--mask-threshold"):
        _prep(src, tmp_path / "out", **kw)


def test_voc_style_images_without_masks_are_the_unlabeled_ones(tmp_path):
    src = _binary_set(tmp_path / "src", n=10)
    for i in range(5):
        _save(src / "images" / f"u{i}.jpg", _image(60 + i))  # beside the labeled ones
    with pytest.raises(DataError) as err:
        _prep(src, tmp_path / "bad")
    lines = str(err.value).splitlines()
    assert lines[0] == "5 problems in the input files (nothing was written):"
    assert lines[1] == (f"  - {src / 'images' / 'u0.jpg'}: no mask named u0.* in {src / 'masks'} "
                        f"(5 of 15 images have none; to train on them as unlabeled images, pass "
                        f"--unlabeled {src / 'images'})")
    assert lines[2] == f"  - {src / 'images' / 'u1.jpg'}: no mask named u1.* in {src / 'masks'}"
    info = _prep(src, tmp_path / "out", unlabeled=src / "images", labeled_fraction=1.0)
    assert info.counts == {"train_labeled": 8, "train_unlabeled": 5, "val": 1, "test": 1}
    assert _stems(tmp_path / "out", "train_unlabeled") == [f"u{i}" for i in range(5)]
    assert not (tmp_path / "out" / "train_unlabeled" / "masks").exists()


def test_macos_companion_files_are_skipped(tmp_path):
    src = _binary_set(tmp_path / "src", n=10)
    for folder in ("images", "masks"):  # AppleDouble files: named like images, not images
        (src / folder / "._im00.png").write_bytes(b"\x00\x05\x16\x07 not a png")
        (src / folder / ".DS_Store").write_bytes(b"\x00")
    info = _prep(src, tmp_path / "out")
    assert sum(info.counts.values()) == 10


def test_exif_orientation_is_applied_so_masks_drawn_on_the_shown_image_fit(tmp_path):
    src = tmp_path / "src"
    for i in range(10):
        shown = _image(i, size=(48, 32))  # 48 high, 32 wide, as a viewer shows it
        stored = np.rot90(shown, k=1)  # the camera's pixels: 32 high, 48 wide
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90° clockwise to show
        Image.fromarray(np.ascontiguousarray(stored)).save(
            _dir(src / "images") / f"e{i}.jpg", exif=exif, quality=95)
        _save(src / "masks" / f"e{i}.png", _disk(i, size=(48, 32)))
    _prep(src, tmp_path / "out", val_fraction=0.2, test_fraction=0.0)
    written = Image.open(next((tmp_path / "out" / "val" / "images").glob("*.png")))
    assert (written.height, written.width) == (48, 32)


def test_jpeg_masks_that_are_not_grey_and_two_valued_are_not_binarized_unasked(tmp_path):
    src = tmp_path / "src"
    for i in range(10):
        _save(src / "images" / f"p{i}.png", _image(i, size=(64, 64)))
        colour = np.zeros((64, 64, 3), np.uint8)
        colour[4:8, 4:8] = (255, 0, 0)  # small objects: 0.8 % of the pixels
        colour[30:34, 40 + i % 4 : 44 + i % 4] = (0, 255, 0)
        Image.fromarray(colour).save(_dir(src / "colour") / f"p{i}.jpg", quality=90)
        grey3 = _disk(i, size=(64, 64))
        grey3[50:56, 50:56] = 128  # a small middle class: 0.9 % of the pixels
        Image.fromarray(grey3).save(_dir(src / "grey3") / f"p{i}.jpg", quality=90)
    with pytest.raises(DataError, match=r"p0.jpg: a colour JPEG mask; .*--palette"):
        prepare_folder(images=src / "images", masks=src / "colour", out=tmp_path / "a")
    with pytest.raises(DataError, match=r"p0.jpg: a JPEG mask with a middle-grey area \(at x "
                                        r"5\d, y 5\d\), not a two-valued mask"):
        prepare_folder(images=src / "images", masks=src / "grey3", out=tmp_path / "b")
    info = prepare_folder(images=src / "images", masks=src / "grey3", out=tmp_path / "c",
                          mask_threshold=100)  # asked for: the user knows what it means
    assert info.task == "binary"


def test_soft_edged_jpeg_masks_of_dsb2018_are_binarized(tmp_path):
    """Real masks, halved with bilinear filtering (soft edges) and saved as JPEG."""
    if not DSB.is_dir():
        pytest.skip("shared dsb2018 data not present")
    stems = sorted(p.stem for p in (DSB / "images").glob("*.png"))[:40]
    for stem in stems:
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "images" / f"{stem}.png").symlink_to(DSB / "images" / f"{stem}.png")
        mask = Image.open(DSB / "masks" / f"{stem}.png").convert("L")
        with Image.open(DSB / "images" / f"{stem}.png") as im:
            size = im.size
        soft = mask.resize((mask.width // 2, mask.height // 2), Image.BILINEAR).resize(size)
        soft.save(_dir(tmp_path / "masks") / f"{stem}.jpg", quality=75)
    info = prepare_folder(images=tmp_path / "images", masks=tmp_path / "masks",
                          out=tmp_path / "out", size=(64, 64))
    assert info.task == "binary" and info.extra["mask_threshold"] == 128


def test_jpeg_multilabel_masks_are_told_to_use_a_threshold(tmp_path):
    src = tmp_path / "src"
    for i in range(10):
        _save(src / "images" / f"p{i}.png", _image(i))
        three = np.stack([_disk(i), np.flipud(_disk(i)), np.fliplr(_disk(i))], axis=-1)
        Image.fromarray(three).save(_dir(src / "masks") / f"p{i}.jpg", quality=70)
    with pytest.raises(DataError) as err:
        prepare_folder(images=src / "images", masks=src / "masks", out=tmp_path / "a",
                       task="multilabel", classes=["a", "b", "c"])
    assert str(err.value).splitlines()[0].endswith(
        "10 of the masks are JPEG, whose compression leaves values near, not at, 0 and 255: "
        "pass --mask-threshold 128 to read them as binary:")
    info = prepare_folder(images=src / "images", masks=src / "masks", out=tmp_path / "b",
                          task="multilabel", classes=["a", "b", "c"], mask_threshold=128)
    assert info.task == "multilabel" and info.classes == ["a", "b", "c"]


def test_bilevel_masks_read_as_any_viewer_shows_them(tmp_path):
    src = _binary_set(tmp_path / "src", n=10, fg=255)
    for i in range(0, 10, 2):  # half the masks saved as mode '1' (0/1 in memory)
        bilevel = Image.fromarray(_blocks(i, values=(0, 255))).convert("1")
        bilevel.save(src / "masks" / f"im{i:02d}.png")
    info = _prep(src, tmp_path / "out")
    assert info.task == "binary"
    for stem, label in _labels(tmp_path / "out").items():
        assert np.array_equal(label, _blocks(int(stem[2:]), values=(0, 255)))


# --------------------------------------------------------------------------- tiles
def _tile_origin(stem: str) -> tuple[str, int, int]:
    source, pos = stem.rsplit("__", 1)
    y, x = (int(p[1:]) for p in pos.split("_"))
    return source, y, x


def test_tiles_are_cut_at_the_images_own_pixels_and_split_by_image(tmp_path, capsys):
    src = tmp_path / "src"
    for i in range(10):  # large images of two sizes: 48×80 and 64×64
        size = (48, 80) if i % 2 else (64, 64)
        _save(src / "images" / f"im{i:02d}.png", _image(i, size))
        _save(src / "masks" / f"im{i:02d}.png", _blocks(i, size, (0, 255)))
    out = tmp_path / "out"
    assert main(["prepare", "folder", "--images", str(src / "images"), "--masks",
                 str(src / "masks"), "--out", str(out), "--size", "32", "32", "--tile",
                 "--labeled-fraction", "0.5"]) == 0
    assert "32×32 tiles (from 10 images)" in capsys.readouterr().out
    info = read_info(out)
    assert info.tile_scale == 1.0 and info.image_size == (32, 32)
    assert info.extra["tile_overlap"] == 0.25
    assert info.extra["tiled_images"] == {"train_labeled": 4, "train_unlabeled": 4, "val": 1,
                                          "test": 1}
    sources: dict[str, set[str]] = {}
    for split in SPLITS:
        for stem in _stems(out, split):
            source, y, x = _tile_origin(stem)
            sources.setdefault(source, set()).add(split)
            i = int(source[2:])
            size = (48, 80) if i % 2 else (64, 64)
            image = np.asarray(Image.open(out / split / "images" / f"{stem}.png"))
            mask = np.asarray(Image.open(out / split / "masks" / f"{stem}.png"))
            assert np.array_equal(image, _image(i, size)[y : y + 32, x : x + 32])
            assert np.array_equal(mask, _blocks(i, size, (0, 255))[y : y + 32, x : x + 32])
    assert len(sources) == 10 and all(len(s) == 1 for s in sources.values())  # no leak
    assert info.whole_image_scores  # scored as the user's images, not tile by tile
    ds = load_dataset(out)
    for split in (ds.labeled, ds.unlabeled, ds.val, ds.test):
        pairs = {(int(g), _tile_origin(stem)[0]) for g, stem in zip(split.groups, split.stems,
                                                                     strict=True)}
        assert len(pairs) == len({g for g, _ in pairs}) == len({s for _, s in pairs})
    # training tiles overlap (64 px at 0.25: 3 per axis), scored ones as little as covering allows
    for split, per_axis in (("train_labeled", 3), ("val", 2), ("test", 2)):
        source = _tile_origin(_stems(out, split)[0])[0]
        if source in {f"im{i:02d}" for i in range(0, 10, 2)}:  # a 64×64 image
            assert sum(s.startswith(source) for s in _stems(out, split)) == per_axis ** 2


def test_tiles_of_scaled_images_and_images_too_small(tmp_path):
    src = _binary_set(tmp_path / "src", n=6, size=(64, 96))
    info = _prep(src, tmp_path / "half", size=(32, 32), tile_scale=0.5, tile_overlap=0.0,
                 labeled_fraction=0.5)
    assert info.tile_scale == 0.5
    assert sum(info.counts.values()) == 6 * 2  # 32×48 each: two tiles cover a row of 48
    _save(src / "images" / "small.png", _image(9, (40, 24)))
    _save(src / "masks" / "small.png", _blocks(9, (40, 24), (0, 255)))
    with pytest.raises(DataError, match=r"small.png: 40×24 \(H×W\) is smaller than the 32×32 "
                                        r"tile; pass a smaller --size"):
        _prep(src, tmp_path / "out", size=(32, 32), tile_scale=1.0)
    with pytest.raises(DataError, match=r"im00.png: 64×96 \(H×W\) at --tile-scale 0.25 \(16×24\)"):
        _prep(src, tmp_path / "out2", size=(32, 32), tile_scale=0.25)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_tile_options_need_each_other(tmp_path, capsys):
    src = _binary_set(tmp_path / "src", n=4)
    base = ["prepare", "folder", "--images", str(src / "images"), "--masks", str(src / "masks")]
    for extra, message in (
        (["--tile"], "--tile cuts tiles of --size H W"),
        (["--size", "32", "32", "--tile-scale", "0.5"], "--tile-scale goes with --tile"),
        (["--size", "32", "32", "--tile", "--tile-overlap", "1"], "--tile-overlap 1.0 must lie"),
        (["--size", "32", "32", "--tile", "--tile-scale", "0"], "--tile-scale 0.0 must be"),
    ):
        assert main([*base, "--out", str(tmp_path / "out"), *extra]) == 2
        assert message in capsys.readouterr().err


def test_each_val_and_test_pixel_is_scored_in_one_tile_only(tmp_path):
    src = tmp_path / "src"
    for folder, first in (("train", 0), ("val", 10), ("test", 20)):
        for i in range(first, first + 3):  # 48×80: tiles at 0, 16 and 0, 24, 48 overlap
            _save(src / folder / "images" / f"im{i:02d}.png", _image(i, (48, 80)))
            _save(src / folder / "masks" / f"im{i:02d}.png", _blocks(i, (48, 80), (0, 255)))
    out = tmp_path / "out"
    prepare_folder(images=src / "train" / "images", masks=src / "train" / "masks", out=out,
                   val_images=src / "val" / "images", val_masks=src / "val" / "masks",
                   test_images=src / "test" / "images", test_masks=src / "test" / "masks",
                   size=(32, 32), tile_scale=1.0, labeled_fraction=0.5)
    ds = load_dataset(out)
    for split in (ds.val, ds.test):
        assert not (split.labels == VOID).any()  # the masks stay whole (EvalNet learns on them)
        labels, groups = split.scored(slice(0, len(split)))
        counts: dict[str, np.ndarray] = {}
        for stem, label in zip(split.stems, labels, strict=True):
            source, y, x = _tile_origin(stem)
            counts.setdefault(source, np.zeros((48, 80), int))[y : y + 32, x : x + 32] += (
                label[0] != VOID).numpy()
        assert len(counts) == 3 and all((c == 1).all() for c in counts.values())
        assert groups is not None and len(set(groups.tolist())) == 3
    assert ds.labeled.counted is None and ds.unlabeled.counted is None


# ------------------------------------------------- failures while writing lose nothing
def _cli(src: Path, out: Path, *flags: str) -> int:
    return main(["prepare", "folder", "--images", str(src / "images"), "--masks",
                 str(src / "masks"), "--out", str(out), *flags])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("imseg: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_overwrite_on_a_full_disk_keeps_the_old_set_and_the_users_files(
        tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    _prep(_binary_set(tmp_path / "a", n=10), out)
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    new = _binary_set(tmp_path / "b", n=8, size=(16, 16))
    fill_disk(monkeypatch, 5)
    assert _cli(new, out, "--overwrite") == 2
    line = _error_line(capsys)
    assert f"cannot write {out}/" in line and ".png: No space left on device" in line
    assert "errno 28 ENOSPC" in line and f"{out} is as it was" in line
    assert "resume" not in line and "run the same command again" in line
    assert snapshot(out) == before  # old set, notes and nothing half-written
    monkeypatch.undo()  # space freed: the advice works
    assert _cli(new, out, "--overwrite") == 0
    assert read_info(out).image_size == (16, 16) and (out / "notes.txt").read_text() == "mine"
    assert sum(len(_stems(out, s)) for s in SPLITS) == 8


def test_a_full_disk_on_a_new_out_leaves_nothing_and_the_same_command_works(
        tmp_path, capsys, monkeypatch):
    src, out = _binary_set(tmp_path / "src", n=10), tmp_path / "new" / "out"
    fill_disk(monkeypatch, 3)
    assert _cli(src, out) == 2
    assert "nothing was written" in _error_line(capsys)
    assert not out.exists()
    monkeypatch.undo()
    assert _cli(src, out) == 0 and sum(read_info(out).counts.values()) == 10


def test_a_name_too_long_once_prefixed_is_refused_before_the_old_set_is_touched(
        tmp_path):
    out = tmp_path / "out"
    _prep(_binary_set(tmp_path / "a", n=10), out)
    before = snapshot(out)
    src = _binary_set(tmp_path / "b", n=6)
    long = "x" * 251  # fits alone; "val-" + it + ".png" passes 255 bytes
    for folder in ("images", "masks"):
        shutil.copy(src / folder / "im00.png", src / folder / f"{long}.png")
        _save(src / "val" / folder / f"{long}.png", (_image(99) if folder == "images"
                                                     else _blocks(99, values=(0, 255))))
    with pytest.raises(DataError, match="shorten the file name") as err:
        _prep(src, out, val_images=src / "val" / "images", val_masks=src / "val" / "masks",
              overwrite=True)
    assert f"{src / 'val' / 'images' / long}.png" in str(err.value)
    assert "prefix" in str(err.value) and "259 bytes" in str(err.value)
    assert snapshot(out) == before


def test_a_path_longer_than_the_system_allows_is_one_line(tmp_path, capsys):
    src = _binary_set(tmp_path / "src", n=10)
    out = tmp_path.joinpath(*["d" * 200] * 25)  # over 4096 bytes
    assert _cli(src, out) == 2
    line = _error_line(capsys)
    assert "ENAMETOOLONG" in line and "shorter" in line and "d" * 200 in line


def test_what_a_killed_prepare_left_is_cleared_by_the_next(tmp_path):
    gone = _dead_pid()
    out = tmp_path / "out"
    left = out / f".imseg-partial-{gone}-0bad" / "train_labeled" / "images"
    left.mkdir(parents=True)
    (left / "half.png").write_bytes(b"\x89PNG half")
    info = _prep(_binary_set(tmp_path / "src", n=10), out)  # no --overwrite needed
    assert sum(info.counts.values()) == 10
    assert sorted(p.name for p in out.iterdir()) == sorted([*SPLITS, "dataset.yaml"])


def test_an_out_another_prepare_is_writing_is_refused(tmp_path):
    out = tmp_path / "out"
    (out / f".imseg-partial-{os.getppid()}-beef").mkdir(parents=True)
    with pytest.raises(DataError, match=f"another imseg prepare \\(process {os.getppid()}\\)"):
        _prep(_binary_set(tmp_path / "src", n=10), out, overwrite=True)
    assert (out / f".imseg-partial-{os.getppid()}-beef").is_dir()


def test_an_out_that_is_a_file_is_refused(tmp_path):
    out = tmp_path / "out"
    out.write_text("keep")
    with pytest.raises(DataError, match="not a folder"):
        _prep(_binary_set(tmp_path / "src", n=10), out, overwrite=True)
    assert out.read_text() == "keep"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions that bind the user")
def test_an_out_in_a_read_only_folder_is_one_line(tmp_path, capsys):
    src = _binary_set(tmp_path / "src", n=10)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert _cli(src, locked / "out") == 2
        line = _error_line(capsys)
    finally:
        locked.chmod(0o755)
    assert f"cannot write {locked / 'out'}" in line and "choose a writable --out" in line


def _dead_pid() -> int:
    """The id of a process that has ended."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# ---------------------------------------------- the odd masks of a binary set are named
def _binary_set_with_odd_mask(tmp_path) -> Path:
    src = _binary_set(tmp_path / "src", n=12, fg=255)
    _save(src / "masks" / "im07.png", _blocks(7, values=(0, 1, 2, 255)))
    return src


def test_a_few_odd_masks_in_a_binary_set_are_named_not_a_clean_one(tmp_path):
    src = _binary_set_with_odd_mask(tmp_path)
    with pytest.raises(DataError) as err:
        _prep(src, tmp_path / "out")
    text = str(err.value)
    assert "11 of the 12 masks are binary 0/255" in text
    assert "im07.png: values [1, 2] besides 0/255" in text
    assert "im00.png" not in text and "--ignore-index" not in text
    with pytest.raises(DataError) as err:
        _prep(src, tmp_path / "out", task="binary")
    assert "im07.png" in str(err.value) and "im00.png" not in str(err.value)


def test_ignore_index_that_is_the_foreground_of_most_masks_is_refused(tmp_path):
    src = _binary_set_with_odd_mask(tmp_path)
    with pytest.raises(DataError, match="every object pixel void in 11 of the 12") as err:
        _prep(src, tmp_path / "out", ignore_index=255)
    assert "im07.png" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_few_masks_with_255_in_a_01_set_may_mark_void(tmp_path):
    src = _binary_set(tmp_path / "src", n=12, fg=1)
    _save(src / "masks" / "im03.png", _blocks(3, values=(0, 1, 255)))
    with pytest.raises(DataError, match="im03.png: values \\[255\\] besides 0/1") as err:
        _prep(src, tmp_path / "out")
    assert "--ignore-index 255 if it marks void" in str(err.value)
    info = _prep(src, tmp_path / "out", ignore_index=255)  # the hint works as it says
    assert info.task == "binary" and info.extra["ignore_index"] == 255
