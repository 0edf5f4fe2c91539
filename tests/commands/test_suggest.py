"""``imseg suggest`` from the command line: the ranking, the picks' files, the diversity
rule, and pre-annotations that ``imseg prepare coco|labelme`` read back as the same masks."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "active"))
from active_helpers import random_run  # noqa: E402

from imseg.active.annotations import UNCERTAIN  # noqa: E402
from imseg.cli import main  # noqa: E402
from imseg.data.layout import read_info  # noqa: E402
from imseg.data.sources.sample import prepare_sample  # noqa: E402


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suggest")
    prepare_sample("multiclass", root / "data", n=16, size=32, seed=3, labeled_fraction=0.25)
    return random_run(root / "data", root / "run", noise=0.2)


def suggest_cli(run: Path, out: Path, *extra: str) -> int:
    return main(["suggest", "--run", str(run), "--out", str(out), "--no-progress",
                 "--device", "cpu", *extra])


def class_names(info, mask: np.ndarray) -> np.ndarray:
    """A multiclass or binary mask as class names (binary background: 'background')."""
    if info.task == "binary":
        return np.where(mask == 255, info.classes[0], "background")
    return np.asarray(info.classes)[mask]


def ranking(out: Path) -> list[dict]:
    with (out / "ranking.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_ranks_every_unlabeled_image_and_writes_the_picks(multiclass_run, tmp_path):
    out = tmp_path / "out"
    assert suggest_cli(multiclass_run, out, "--k", "4") == 0
    rows = ranking(out)
    data = read_info(multiclass_run.parent / "data")
    assert len(rows) == data.counts["train_unlabeled"]
    ims = [float(r["im"]) for r in rows]
    assert ims == sorted(ims, reverse=True) and ims[0] > 0
    assert set(rows[0]) >= {"entropy", "im_disc", "im_square", "im_triangle"}
    picks = [r["image"] for r in rows if r["pick"]]
    assert len(picks) == 4
    for sub in ("images", "masks", "uncertain"):
        assert sorted(p.stem for p in (out / sub).glob("*.png")) == sorted(picks)
    assert sorted(p.stem for p in (out / "labelme").glob("*.json")) == sorted(picks)
    assert Image.open(out / "contact_sheet.png").size[1] > Image.open(out / "contact_sheet.png").size[0]
    assert suggest_cli(multiclass_run, out) == 2  # not empty: --overwrite needed


def test_other_scores_and_one_class_rank_differently(multiclass_run, tmp_path, capsys):
    assert suggest_cli(multiclass_run, tmp_path / "e", "--score", "entropy", "--k", "2") == 0
    entropies = [float(r["entropy"]) for r in ranking(tmp_path / "e")]
    assert entropies == sorted(entropies, reverse=True)
    assert suggest_cli(multiclass_run, tmp_path / "c", "--class", "square", "--k", "2") == 0
    squares = [float(r["im_square"]) for r in ranking(tmp_path / "c")]
    assert squares == sorted(squares, reverse=True)
    assert suggest_cli(multiclass_run, tmp_path / "x", "--class", "giraffe") == 2
    assert "--class ranks by one class's IM share" in capsys.readouterr().err
    assert suggest_cli(multiclass_run, tmp_path / "y", "--teachers", "1") == 2
    assert "one model has no inconsistency mask" in capsys.readouterr().err


def test_near_copies_are_not_picked_together(multiclass_run, tmp_path):
    images = tmp_path / "images"
    source = multiclass_run.parent / "data" / "train_unlabeled" / "images"
    shutil.copytree(source, images)
    assert suggest_cli(multiclass_run, tmp_path / "plain", "--images", str(images), "--k", "1") == 0
    first = images / f"{ranking(tmp_path / 'plain')[0]['image']}.png"  # the top one
    for i in range(3):
        shutil.copy(first, images / f"copy{i}.png")  # four copies of one scene
    assert suggest_cli(multiclass_run, tmp_path / "on", "--images", str(images), "--k", "5") == 0
    assert suggest_cli(multiclass_run, tmp_path / "off", "--images", str(images), "--k", "5",
                       "--diversity", "0") == 0
    copies = {first.stem, "copy0", "copy1", "copy2"}
    picked = {way: {r["image"] for r in ranking(tmp_path / way) if r["pick"]}
              for way in ("on", "off")}
    assert len(picked["on"] & copies) == 1 and len(picked["off"] & copies) == 4
    skipped = [r for r in ranking(tmp_path / "on") if r["near_copy_of"]]
    assert {r["image"] for r in skipped} | {r["near_copy_of"] for r in skipped} == copies


def test_clusters_spread_the_picks_and_say_so_in_the_history(multiclass_run, tmp_path):
    out = tmp_path / "clusters"
    assert suggest_cli(multiclass_run, out, "--k", "4", "--spread", "clusters") == 0
    rows = ranking(out)
    picked = [int(r["rank"]) for r in rows if r["pick"]]
    assert len(picked) == 4 and picked[0] == 1  # the top image is always its cluster's best
    skipped = [r for r in rows if r["near_copy_of"]]
    assert all(int(r["rank"]) < picked[-1] and not r["pick"] for r in skipped)
    assert {r["image"] for r in rows if r["pick"]} >= {r["near_copy_of"] for r in skipped}
    assert suggest_cli(multiclass_run, tmp_path / "again", "--k", "4", "--spread",
                       "clusters") == 0
    assert ranking(tmp_path / "again") == rows  # seeded: the same picks on every rerun
    data = tmp_path / "data"
    shutil.copytree(multiclass_run.parent / "data", data)
    assert main(["prepare", "add", "--data", str(data), "--images", str(out / "images"),
                 "--masks", str(out / "masks")]) == 0
    assert read_info(data).chosen_by == ["im-clusters"]


def test_prepare_coco_and_labelme_read_the_pre_annotations_back(multiclass_run, tmp_path):
    out = tmp_path / "out"
    assert suggest_cli(multiclass_run, out, "--k", "6") == 0
    masks = {p.stem: np.asarray(Image.open(p)) for p in (out / "masks").glob("*.png")}
    uncertain = {p.stem: np.asarray(Image.open(p)) > 0 for p in (out / "uncertain").glob("*.png")}
    classes = read_info(multiclass_run.parent / "data").classes
    present = {classes[v] for mask in masks.values() for v in np.unique(mask)}
    assert len(present) >= 3  # the readers meet several classes
    coco = json.loads((out / "coco.json").read_text())  # without the marks: the classes
    dropped = {c["id"] for c in coco["categories"] if c["name"] == UNCERTAIN}
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] not in dropped]
    (tmp_path / "classes.json").write_text(json.dumps(coco))
    common = ["--labeled-fraction", "1", "--val-fraction", "0.2", "--test-fraction", "0.2",
              "--size", "32", "32"]
    assert main(["prepare", "coco", "--images", str(out / "images"), "--annotations",
                 str(tmp_path / "classes.json"), "--out", str(tmp_path / "c"), *common]) == 0
    assert main(["prepare", "labelme", "--images", str(out / "images"), "--annotations",
                 str(out / "labelme"), "--labels", str(out / "labelme" / "labels.txt"),
                 "--out", str(tmp_path / "l"), *common]) == 0
    for folder, marked in (("c", False), ("l", True)):
        info = read_info(tmp_path / folder)
        for stem, mask in masks.items():
            (path,) = (tmp_path / folder).glob(f"*/masks/{stem}.png")  # in whichever split
            back = np.asarray(Image.open(path))
            names = class_names(info, back)
            expected = np.asarray(classes)[mask]
            if marked:  # LabelMe: the marks drawn last, over the classes
                expected = np.where(uncertain[stem], UNCERTAIN, expected)
            assert (names == expected).all(), (folder, stem)


def test_overwrite_removes_the_earlier_suggestion_and_keeps_the_users_files(multiclass_run,
                                                                             tmp_path):
    out = tmp_path / "out"
    assert suggest_cli(multiclass_run, out, "--k", "4") == 0
    (out / "notes.txt").write_text("mine")
    (out / "corrected").mkdir()
    (out / "corrected" / "a.png").write_bytes(b"mine")
    assert suggest_cli(multiclass_run, out, "--k", "2", "--score", "entropy",
                       "--overwrite") == 0
    picks = sorted(r["image"] for r in ranking(out) if r["pick"])
    assert len(picks) == 2
    for sub in ("images", "masks", "uncertain"):
        assert sorted(p.stem for p in (out / sub).glob("*.png")) == picks
    assert sorted(p.stem for p in (out / "labelme").glob("*.json")) == picks
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "corrected" / "a.png").read_bytes() == b"mine"
