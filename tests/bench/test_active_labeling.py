"""bench/active_labeling.py on a tiny sample set, one epoch: the rounds add the chosen
images with their true masks, and the curves and imseg report's figure come out."""

from __future__ import annotations

import csv
import importlib.util
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from imseg.data.layout import read_info

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "active_labeling.py"


def load_script():
    spec = importlib.util.spec_from_file_location("active_labeling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rounds_add_the_chosen_images_with_their_true_masks(binary_data, tmp_path):
    bench = load_script()
    data = tmp_path / "data"
    shutil.copytree(binary_data, data)
    out = tmp_path / "out"
    argv = ["--data", str(data), "--out", str(out), "--seeds", "0", "--strategies", "random",
            "im", "--start", "0.1", "--step", "0.1", "--rounds", "1", "--teachers", "2",
            "--", "--epochs", "1", "--candidates", "2", "--alpha", "0.25", "--batch-size", "8",
            "--device", "cpu"]
    assert bench.main(argv) == 0
    with (out / "curves.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["strategy"], r["round"], r["labeled"]) for r in rows] == [
        ("random", "0", "2"), ("random", "1", "4"), ("im", "0", "2"), ("im", "1", "4")]
    assert all(0 <= float(r["test_iou"]) <= 1 for r in rows)
    with (out / "report" / "labeled.csv").open() as fh:  # imseg report's curve of the rounds
        curve = {(r["chosen_by"], r["labeled"]) for r in csv.DictReader(fh)}
    assert curve == {("random", "2"), ("random", "4"), ("im", "2"), ("im", "4")}
    picks = [r for r in csv.DictReader((out / "picks" / "im_s0_r1" / "ranking.csv").open())
             if r["pick"]]
    after = out / "sets" / "im_s0_r1"
    assert sorted(read_info(after).extra["history"][-1]["added"]) == sorted(
        r["image"] for r in picks)
    assert read_info(after).chosen_by == ["im"]
    for r in picks:  # the annotator's masks are the true ones
        truth = np.asarray(Image.open(data / "train_unlabeled" / "masks" / f"{r['image']}.png"))
        label = np.asarray(Image.open(after / "train_labeled" / "masks" / f"{r['image']}.png"))
        assert np.array_equal(truth, label)
    assert read_info(data).counts == read_info(binary_data).counts  # the source set is kept
    assert bench.main(argv) == 0  # a rerun skips what is done and writes the same curves
    with (out / "curves.csv").open() as fh:
        assert [r["test_iou"] for r in csv.DictReader(fh)] == [r["test_iou"] for r in rows]
