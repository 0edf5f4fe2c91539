"""ISIC 2018 source: fake downloads in the official layout, as folders and as zips."""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from prepare_faults import fill_disk, snapshot

from imseg.data.dataset import load_dataset, load_split
from imseg.data.sources import isic2018
from imseg.data.sources._common import split_fraction
from imseg.data.sources.isic2018 import PARTS, prepare_isic2018
from imseg.errors import DataError, StorageError

# Mask of image k: the left `cols` of 60 columns hold `hi`, the rest `lo` (40×60).
# Binarised with > 127 and resized to 32 columns by nearest neighbour, the
# foreground keeps cols·32/60 columns: 16, 8, 24.
PATTERNS = [(30, 255, 0, 16), (15, 128, 127, 8), (45, 200, 100, 24)]
COUNTS = {"train": 10, "val": 3, "test": 4}


def ids_of(split: str) -> list[str]:
    offset = {"train": 0, "val": 100, "test": 200}[split]
    return [f"ISIC_{offset + i:07d}" for i in range(COUNTS[split])]


def colour(image_id: str) -> tuple[int, int, int]:
    k = int(image_id[5:])
    return (20 + 3 * (k % 60), 200 - k % 50, 90)


def pattern(image_id: str) -> tuple[int, int, int, int]:
    return PATTERNS[int(image_id[5:]) % 3]


def fake_files(split: str, drop_mask: str | None = None) -> dict[str, dict[str, bytes]]:
    """Part name → {file name → bytes} of one official split."""
    image_part, mask_part = PARTS[split]
    images: dict[str, bytes] = {
        "LICENSE.txt": b"CC-0",
        "ATTRIBUTION.txt": b"ISIC archive",
    }
    masks: dict[str, bytes] = {"LICENSE.txt": b"CC-0"}
    for image_id in ids_of(split):
        buf = io.BytesIO()
        Image.new("RGB", (60, 40), colour(image_id)).save(buf, format="JPEG", quality=95)
        images[f"{image_id}.jpg"] = buf.getvalue()
        cols, hi, lo, _ = pattern(image_id)
        mask = np.full((40, 60), lo, dtype=np.uint8)
        mask[:, :cols] = hi
        buf = io.BytesIO()
        Image.fromarray(mask).save(buf, format="PNG")
        if image_id != drop_mask:
            masks[f"{image_id}_segmentation.png"] = buf.getvalue()
    return {image_part: images, mask_part: masks}


def make_download(
    root: Path, as_zip: bool, skip: str | None = None, drop_mask: str | None = None
) -> Path:
    """The six official parts under ``root``, extracted or as ``<part>.zip``."""
    root.mkdir(parents=True, exist_ok=True)
    for split in PARTS:
        for part, files in fake_files(split, drop_mask).items():
            if part == skip:
                continue
            if as_zip:
                with zipfile.ZipFile(root / f"{part}.zip", "w") as zf:
                    zf.writestr(f"{part}/", b"")
                    for name, data in files.items():
                        zf.writestr(f"{part}/{name}", data)
            else:
                (root / part).mkdir()
                for name, data in files.items():
                    (root / part / name).write_bytes(data)
    return root


def stems(out: Path, split: str, folder: str = "images") -> list[str]:
    return sorted(p.stem for p in (out / split / folder).glob("*.png"))


def test_folders_layout_yaml_and_binarised_masks(tmp_path: Path) -> None:
    source = make_download(tmp_path / "src", as_zip=False)
    out = tmp_path / "out"
    info = prepare_isic2018(source, out, size=32)

    data = yaml.safe_load((out / "dataset.yaml").read_text())
    assert data["task"] == "binary" and data["classes"] == ["lesion"]
    assert data["image_size"] == [32, 32] and data["rotate"] is True
    # 10 train ids: 10 - ceil(0.9 * 10) = 1 labeled, 9 unlabeled; official val/test kept.
    expected = {"train_labeled": 1, "train_unlabeled": 9, "val": 3, "test": 4}
    assert data["counts"] == expected and info.counts == expected

    labeled, unlabeled = stems(out, "train_labeled"), stems(out, "train_unlabeled")
    assert sorted(labeled + unlabeled) == ids_of("train")
    assert stems(out, "val") == ids_of("val") and stems(out, "test") == ids_of("test")
    # unlabeled masks are written as hidden truth
    assert stems(out, "train_unlabeled", "masks") == unlabeled

    for split in ("train_labeled", "train_unlabeled", "val", "test"):
        for stem in stems(out, split):
            mask = np.asarray(Image.open(out / split / "masks" / f"{stem}.png"))
            fg = pattern(stem)[3]
            assert mask.shape == (32, 32)
            assert (mask[:, :fg] == 255).all() and (mask[:, fg:] == 0).all(), stem
            image = np.asarray(Image.open(out / split / "images" / f"{stem}.png"))
            assert image.shape == (32, 32, 3)
            assert np.abs(image.astype(int) - colour(stem)).max() <= 4, stem

    # the in-memory encoding: 1 lesion, 0 background
    val = load_split(out, "val")
    assert val.labels is not None and val.labels.shape == (3, 1, 32, 32)
    for i, stem in enumerate(val.stems):
        fg = pattern(stem)[3]
        assert val.labels[i, 0, 0, fg - 1] == 1 and val.labels[i, 0, 0, fg] == 0
    dataset = load_dataset(out)
    assert len(dataset.labeled) == 1 and len(dataset.unlabeled) == 9


def test_zipped_parts_give_the_same_data_set(tmp_path: Path) -> None:
    folders = prepare_isic2018(make_download(tmp_path / "a", as_zip=False), tmp_path / "oa", 32)
    zipped = prepare_isic2018(make_download(tmp_path / "b", as_zip=True), tmp_path / "ob", 32)
    assert not any(p.is_dir() for p in (tmp_path / "b").iterdir())  # nothing extracted
    assert folders.counts == zipped.counts
    for split in folders.counts:
        a, b = load_split(tmp_path / "oa", split), load_split(tmp_path / "ob", split)
        assert a.stems == b.stems
        assert (a.images == b.images).all() and (a.labels == b.labels).all()


def test_split_depends_on_seed_only(tmp_path: Path) -> None:
    source = make_download(tmp_path / "src", as_zip=True)
    prepare_isic2018(source, tmp_path / "a", 32, labeled_fraction=0.3, seed=42)
    prepare_isic2018(source, tmp_path / "b", 32, labeled_fraction=0.3, seed=42)
    prepare_isic2018(source, tmp_path / "c", 32, labeled_fraction=0.3, seed=3)
    a = stems(tmp_path / "a", "train_labeled")
    assert len(a) == 3  # 10 - ceil(0.7 * 10)
    assert stems(tmp_path / "b", "train_labeled") == a
    assert stems(tmp_path / "c", "train_labeled") != a
    # preparing again into the same folder replaces the earlier split: no stale files
    prepare_isic2018(source, tmp_path / "a", 32, labeled_fraction=0.3, seed=3)
    assert stems(tmp_path / "a", "train_labeled") == stems(tmp_path / "c", "train_labeled")
    assert len(stems(tmp_path / "a", "train_unlabeled")) == 7


def test_paper_counts() -> None:
    keys = [f"ISIC_{i:07d}" for i in range(2594)]
    split = split_fraction(keys, 0.1, 42, "train_labeled", "train_unlabeled")
    assert (len(split["train_labeled"]), len(split["train_unlabeled"])) == (259, 2335)
    assert sorted(split["train_labeled"] + split["train_unlabeled"]) == keys


def test_limit_takes_the_first_ids(tmp_path: Path) -> None:
    source = make_download(tmp_path / "src", as_zip=False)
    info = prepare_isic2018(source, tmp_path / "out", 32, limit=2)
    assert info.counts == {"train_labeled": 1, "train_unlabeled": 1, "val": 2, "test": 2}
    assert stems(tmp_path / "out", "test") == ids_of("test")[:2]


@pytest.mark.parametrize("as_zip", [False, True])
def test_missing_part_names_what_is_expected(tmp_path: Path, as_zip: bool) -> None:
    part = "ISIC2018_Task1_Validation_GroundTruth"
    source = make_download(tmp_path / "src", as_zip=as_zip, skip=part)
    with pytest.raises(DataError) as err:
        prepare_isic2018(source, tmp_path / "out", 32)
    assert str(source / part) in str(err.value)
    assert f"{part}.zip" in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing written before the check


@pytest.mark.parametrize("as_zip", [False, True])
def test_image_without_mask_names_the_file(tmp_path: Path, as_zip: bool) -> None:
    source = make_download(tmp_path / "src", as_zip=as_zip, drop_mask="ISIC_0000004")
    with pytest.raises(DataError, match=r"ISIC_0000004\.jpg.*ISIC_0000004_segmentation\.png"):
        prepare_isic2018(source, tmp_path / "out", 32)


def test_unrelated_out_folder_is_refused(tmp_path: Path) -> None:
    source = make_download(tmp_path / "src", as_zip=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="notes.txt"):
        prepare_isic2018(source, out, 32)
    assert (out / "notes.txt").read_text() == "mine"


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = make_download(tmp_path / "src", as_zip=True)
    parser = argparse.ArgumentParser()
    isic2018.register(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(
        ["isic2018", "--source", str(source), "--out", str(out), "--size", "32",
         "--labeled-fraction", "0.2", "--seed", "5"]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "train_labeled 2" in printed and "train_unlabeled 8" in printed
    data = yaml.safe_load((out / "dataset.yaml").read_text())
    assert data["seed"] == 5 and data["image_size"] == [32, 32]


def test_a_failed_rerun_leaves_the_earlier_set_as_it_was(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_download(tmp_path / "src", as_zip=False)
    out = tmp_path / "out"
    prepare_isic2018(source, out, 32, seed=42)
    before = snapshot(out)
    fill_disk(monkeypatch, after=5)  # the disk fills while the new set is written
    with pytest.raises(StorageError, match="No space left"):
        prepare_isic2018(source, out, 32, seed=3)
    assert snapshot(out) == before  # nothing half-written, nothing of the old set lost
    monkeypatch.undo()
    prepare_isic2018(source, out, 32, seed=3)  # once there is room, the same call works
    assert snapshot(out) != before and not list(out.glob(".imseg-partial-*"))
