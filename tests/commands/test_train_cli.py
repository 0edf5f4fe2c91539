"""`imseg train` through the command line, on generated data and on real dsb2018 pairs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from conftest import SHARED_DATA

from imseg.cli import main
from imseg.models.checkpoint import load_model

TINY_FLAGS = ["--epochs", "1", "--alpha", "0.25", "--batch-size", "4", "--device", "cpu",
              "--no-progress", "--set", "train.bn_momentum=0.1"]


def _rows(run: Path) -> list[dict]:
    with (run / "results.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_benchmarks_share_one_run_folder(binary_data, tmp_path, capsys):
    run = tmp_path / "run"
    for bench in ("ldt", "aldt", "fdt"):
        assert main(["train", "--data", str(binary_data), "--out", str(run), "--benchmark", bench,
                     "--candidates", "2", "--keep", "1", *TINY_FLAGS,
                     "--set", "benchmark.aldt_copies=2"]) == 0
    rows = _rows(run)
    assert [(r["stage"], r["candidate"]) for r in rows] == [
        ("ldt", "0"), ("ldt", "1"), ("aldt", "0"), ("aldt", "1"), ("fdt", "0"), ("fdt", "1")]
    labeled = len(list((binary_data / "train_labeled" / "images").glob("*.png")))
    unlabeled = len(list((binary_data / "train_unlabeled" / "images").glob("*.png")))
    n_pairs = {r["stage"]: int(r["n_train_pairs"]) for r in rows}
    assert n_pairs == {"ldt": labeled, "aldt": 3 * labeled, "fdt": labeled + unlabeled}
    for r in rows:
        assert r["generation"] == "0" and r["n_teachers"] == ""
        assert 0.0 <= float(r["val_iou"]) <= 1.0 and 0.0 <= float(r["test_dice"]) <= 1.0
        assert int(r["params"]) > 0
    # the checkpoint rebuilds the model it was saved from
    model = load_model(run / rows[0]["checkpoint"])
    assert sum(p.numel() for p in model.parameters()) > 0
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["train"]["epochs"] == 1 and resolved["benchmark"]["candidates"] == 2
    # running the same command again trains nothing new
    assert main(["train", "--data", str(binary_data), "--out", str(run), "--benchmark", "ldt",
                 "--candidates", "2", *TINY_FLAGS, "--set", "benchmark.aldt_copies=2"]) == 0
    assert len(_rows(run)) == 6
    assert "results:" in capsys.readouterr().out


def test_same_seed_same_scores(binary_data, tmp_path):
    scores = []
    for name in ("a", "b"):
        main(["train", "--data", str(binary_data), "--out", str(tmp_path / name), "--candidates",
              "1", "--seed", "5", *TINY_FLAGS])
        scores.append([r["val_iou"] for r in _rows(tmp_path / name)])
    assert scores[0] == scores[1]


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epoch: 1}\n")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--config",
                 str(bad)]) == 2
    assert "train.epoch: unknown key" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED_DATA / "dsb2018").is_dir(), reason="../shared/data/dsb2018 absent")
def test_prepare_folder_and_train_on_real_nuclei(tmp_path):
    src = SHARED_DATA / "dsb2018"
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for path in sorted((src / "images").glob("*.png"))[:16]:
        (images / path.name).symlink_to(path)
        (masks / path.name).symlink_to(src / "masks" / path.name)
    data = tmp_path / "data"
    assert main(["prepare", "folder", "--images", str(images), "--masks", str(masks), "--out",
                 str(data), "--size", "64", "64", "--labeled-fraction", "0.5",
                 "--val-fraction", "0.25", "--test-fraction", "0.25"]) == 0
    info = yaml.safe_load((data / "dataset.yaml").read_text())
    assert info["task"] == "binary" and sum(info["counts"].values()) == 16
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--candidates", "1",
                 *TINY_FLAGS]) == 0
    (row,) = _rows(run)
    assert row["stage"] == "ldt" and int(row["n_train_pairs"]) == info["counts"]["train_labeled"]
    assert row["test_iou"] != ""


@pytest.mark.parametrize(("flags", "message"), [
    (["--alpha", "0.001"], "train.alpha: must be a number of at least 0.0625 (1/16): the first "
                           "layer has 16·alpha filters and needs at least one; got 0.001"),
    (["--alpha", "nan"], "train.alpha: must be a number of at least 0.0625"),
    (["--run", "-1"], "--run -1: runs are numbered from 0"),
    (["--set", "ssl.noise.student_alphas=[1, 0.01]"], "ssl.noise.student_alphas.1: must be"),
    (["--set", "ssl.teachers=[0]"], "ssl.teachers.0: Input should be greater than or equal to 1"),
])
def test_out_of_range_numbers_are_one_line_errors(binary_data, tmp_path, capsys, flags, message):
    args = ["train", "--data", str(binary_data), "--out", str(tmp_path / "run"), *TINY_FLAGS]
    assert main([*args, *flags]) == 2  # later flags win
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "results.csv").exists()


def test_a_damaged_results_file_is_one_error(binary_data, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(binary_data), "--out", str(run), "--candidates", "1",
            *TINY_FLAGS]
    assert main(args) == 0
    with (run / "results.csv").open("a") as fh:
        fh.write('x,1,2,"unterminated\n')
    assert main(args) == 2
    assert capsys.readouterr().err.strip().endswith(
        "results.csv line 3: damaged (fewer cells than the header has); repair or delete that "
        "line (the model of a deleted line is trained again when the run resumes)")
