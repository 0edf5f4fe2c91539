"""A redirected log: no progress bars, one readable line per finished model."""

from __future__ import annotations

import re

import pytest

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


def _train(data, run, *extra):
    return main(["train", "--data", str(data), "--out", str(run), "--epochs", "2",
                 "--candidates", "2", "--alpha", "0.25", "--batch-size", "4", "--device", "cpu",
                 *extra])


def test_the_run_folder_keeps_its_history_across_resumes_and_errors(binary_data, tmp_path):
    run = tmp_path / "run"
    assert _train(binary_data, run) == 0
    assert _train(binary_data, run) == 0  # everything done: a resume that trains nothing
    assert _train(binary_data, run, "--epochs", "3") == 2  # other settings: refused
    lines = (run / "log.txt").read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
    assert re.fullmatch(stamp + rf"starting {re.escape(str(run))}: .+", lines[0]), lines[0]
    assert re.fullmatch(stamp + r"ldt r0: training 2 of 2 models on \d+ pairs", lines[1])
    assert [re.fullmatch(stamp + r"ldt r0 c(\d): best epoch .*", x).group(1)
            for x in lines[2:4]] == ["0", "1"]
    for line in lines[4:6]:  # a resume that trains nothing starts no stage
        assert re.fullmatch(stamp + rf"resuming \(2 models done\) {re.escape(str(run))}: .+",
                            line), line
    assert re.fullmatch(stamp + r"imseg: error: .* trained under other settings.*",
                        lines[6]), lines[6]
    assert len([x for x in lines if re.match(stamp, x)]) == 7  # nothing else, nothing twice


def test_an_unexpected_error_leaves_its_traceback_in_the_run_log(binary_data, tmp_path,
                                                                monkeypatch):
    import imseg.commands.train as train_command

    def broken(*args, **kwargs):
        raise RuntimeError("a bug somewhere")

    monkeypatch.setattr(train_command, "run_benchmark", broken)
    with pytest.raises(RuntimeError):
        _train(binary_data, tmp_path / "run")
    text = (tmp_path / "run" / "log.txt").read_text()
    assert "imseg: stopped by an unexpected error\nTraceback (most recent call last):" in text
    assert text.rstrip().endswith("RuntimeError: a bug somewhere")


def test_progress_lines_only_for_a_long_pass(monkeypatch):
    from imseg import logs

    said: list[str] = []
    monkeypatch.setattr(logs.log, "info", said.append)
    quick = logs.ProgressLines("ldt r0: labeling", 10)  # a line a minute at most
    for done in range(10):
        quick.update(done)
    assert said == []
    slow = logs.ProgressLines("ldt r0: labeling", 10, every=0.0)
    for done in (0, 5, 10):  # a line as it goes, none at the end (its own line says that)
        slow.update(done)
    assert said == ["ldt r0: labeling: 0/10 images (0%)", "ldt r0: labeling: 5/10 images (50%)"]


def test_evalnet_line_reads_well():
    from imseg.logs import evalnet_line

    row = {"kind": "evalnet", "run": 1, "index": 2, "best_epoch": 7, "val_mae": 0.05123,
           "val_spearman": 0.8, "n_train": 40, "seconds": 3.21}
    assert evalnet_line(row, 30) == ("evalnet evalnet r1 e2: best epoch 7/30, val MAE 0.0512, "
                                     "Spearman 0.800, 40 pairs, 3.2 s")
