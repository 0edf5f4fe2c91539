"""A redirected log: no progress bars, one readable line per finished model."""

from __future__ import annotations

import re

from imseg.cli import main
from imseg.logs import model_line, place_name


def test_place_names():
    assert place_name({"stage": "ldt", "approach": "ldt", "run": 0, "n_teachers": None,
                       "generation": 0, "candidate": 1}) == "ldt r0 c1"
    assert place_name({"stage": "ssl", "approach": "im", "run": 1, "n_teachers": 3,
                       "generation": 2, "candidate": 0}) == "im r1 n3 g2 c0"


def test_model_line_reads_well():
    row = {"stage": "ldt", "approach": "ldt", "run": 0, "n_teachers": None, "generation": 0,
           "candidate": 0, "best_epoch": 3, "val_iou": 0.51234, "test_iou": None,
           "n_train_pairs": 20, "seconds": 1.26}
    assert model_line(row, 5) == ("ldt r0 c0: best epoch 3/5, val iou 0.512, test iou -, "
                                  "20 pairs, 1.3 s")


def test_a_redirected_train_log_has_one_line_per_model_and_no_bars(binary_data, tmp_path,
                                                                   capsys):
    # stderr is captured here, as in a redirected log: no --no-progress needed
    assert main(["train", "--data", str(binary_data), "--out", str(tmp_path / "run"),
                 "--epochs", "2", "--candidates", "2", "--alpha", "0.25", "--batch-size", "4",
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "\r" not in captured.out
    lines = [line for line in captured.err.splitlines() if "best epoch" in line]
    assert len(lines) == 2
    for c, line in enumerate(lines):
        assert re.fullmatch(rf"\d\d:\d\d:\d\d ldt r0 c{c}: best epoch [12]/2, val iou \d\.\d{{3}}, "
                            r"test iou \d\.\d{3}, \d+ pairs, \d+\.\d s", line), line
