"""A run folder's settings fingerprint: resume never mixes protocols silently."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from imseg.cli import main
from imseg.config import build_config
from imseg.data.dataset import load_dataset
from imseg.errors import ConfigError
from imseg.experiment.settings import (
    DATA_KEY,
    SETTINGS_FILE,
    check_settings,
    data_hash,
    differences,
    flatten,
    settings_of,
)

FLAGS = ["--alpha", "0.25", "--batch-size", "4", "--device", "cpu", "--no-progress",
         "--set", "train.bn_momentum=0.1"]


def _rows(run: Path) -> list[dict]:
    with (run / "results.csv").open() as fh:
        return list(csv.DictReader(fh))


def _train(data: Path, run: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(run), *FLAGS, *extra])


def test_flatten_keeps_lists_and_recipes_whole():
    flat = flatten({"train": {"epochs": 3, "alpha": 0.5}, "ssl": {"teachers": [2, 3]},
                    "recipes": {"mine": {"labeler": "threshold"}}})
    assert flat == {"train.epochs": 3, "train.alpha": 0.5, "ssl.teachers": [2, 3],
                    "recipes": {"mine": {"labeler": "threshold"}}}


def test_free_keys_and_data_are_in_the_right_place(binary_data):
    dataset = load_dataset(binary_data)
    a = settings_of(build_config(overrides={"device": "cpu", "ssl": {"runs": 1}}), dataset)
    b = settings_of(build_config(overrides={"device": "cuda", "ssl": {"runs": 3},
                                            "train": {"compile_inference": "never"}}), dataset)
    assert a == b  # device, compiled inference and the study's extent are free
    c = settings_of(build_config(overrides={"train": {"lr": 0.001}}), dataset)
    assert differences(a, c) == ["train.lr: 0.003 → 0.001"]
    assert len(a[DATA_KEY]) == 16



def test_headline_classes_change_the_data_hash_only_when_set(binary_data):
    dataset = load_dataset(binary_data)
    plain = data_hash(dataset)
    assert data_hash(replace(dataset, info=replace(dataset.info, headline_classes=[]))) == plain
    named = replace(dataset.info, headline_classes=list(dataset.info.classes))
    assert data_hash(replace(dataset, info=named)) != plain


def test_a_setting_added_by_a_newer_version_counts_as_unchanged_at_its_default(binary_data):
    values = settings_of(build_config(), load_dataset(binary_data))
    older = {k: v for k, v in values.items() if k != "train.lr"}
    assert differences(older, values) == []
    assert differences(older, {**values, "train.lr": 0.1}) == ["train.lr: 0.003 → 0.1"]


def test_a_setting_whose_default_changed_counts_as_what_older_runs_did(binary_data, tmp_path,
                                                                      capsys):
    values = settings_of(build_config(), load_dataset(binary_data))
    assert values["train.bn_stats"] == "precise"  # today's default
    older = {k: v for k, v in values.items() if k != "train.bn_stats"}  # before it existed
    assert differences(older, values) == ["train.bn_stats: running → precise"]
    # a folder from before fingerprints, whose config.yaml predates bn_stats
    run = tmp_path / "run"
    assert _train(binary_data, run, "--epochs", "1", "--candidates", "1",
                  "--set", "train.bn_stats=running") == 0
    (run / SETTINGS_FILE).unlink()
    config = yaml.safe_load((run / "config.yaml").read_text())
    del config["train"]["bn_stats"]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert _train(binary_data, run, "--epochs", "1", "--candidates", "1") == 2
    err = capsys.readouterr().err
    assert "train.bn_stats: running → precise" in err
    assert "continue as before with --set train.bn_stats=running" in err
    assert _train(binary_data, run, "--epochs", "1", "--candidates", "1",
                  "--set", "train.bn_stats=running") == 0


def test_check_settings_records_refuses_and_accepts(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    first = {"train.epochs": 2, "benchmark.candidates": 2, DATA_KEY: "d0"}
    second = {"train.epochs": 7, "benchmark.candidates": 3, DATA_KEY: "d0"}
    a = check_settings(run, first, "cmd 1")
    assert check_settings(run, first) == a
    # no model trained yet: a new fingerprint simply replaces the old one
    b = check_settings(run, second)
    assert b != a
    (run / "results.csv").write_text("stage\n")
    assert check_settings(run, second) == b
    with pytest.raises(ConfigError) as err:
        check_settings(run, first)
    text = str(err.value)
    assert "train.epochs: 7 → 2" in text and "benchmark.candidates: 3 → 2" in text
    assert "--accept-new-settings" in text and "--out" in text
    assert "continue as before with --set benchmark.candidates=3 --set train.epochs=7" in text
    c = check_settings(run, first, "cmd 3", accept_new=True)
    record = yaml.safe_load((run / SETTINGS_FILE).read_text())
    assert record["current"] == c == a
    assert set(record["history"]) == {a, b}
    assert record["history"][a]["changed"] == ["benchmark.candidates: 3 → 2", "train.epochs: 7 → 2"]


def test_a_damaged_record_is_a_clear_error(tmp_path):
    (tmp_path / SETTINGS_FILE).write_text("current: x\n")
    with pytest.raises(ConfigError, match="not an imseg settings record"):
        check_settings(tmp_path, {DATA_KEY: "d"})


def test_resume_with_other_settings_stops_before_any_work(binary_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(binary_data, run, "--epochs", "1", "--candidates", "1") == 0
    first = _rows(run)
    assert len(first) == 1 and first[0]["settings"]
    checkpoints = sorted(p.name for p in (run / "models").rglob("*.pt"))
    capsys.readouterr()

    assert _train(binary_data, run, "--epochs", "2", "--candidates", "2") == 2
    err = capsys.readouterr().err
    assert "train.epochs: 1 → 2" in err and "benchmark.candidates: 1 → 2" in err
    assert "Traceback" not in err
    assert _rows(run) == first  # nothing trained, nothing rewritten
    assert sorted(p.name for p in (run / "models").rglob("*.pt")) == checkpoints

    # free settings (device, the number of top models shown) do not stop a resume
    assert _train(binary_data, run, "--epochs", "1", "--candidates", "1", "--keep", "1") == 0

    assert _train(binary_data, run, "--epochs", "2", "--candidates", "2",
                  "--accept-new-settings") == 0
    rows = _rows(run)
    assert [r["candidate"] for r in rows] == ["0", "1"]
    assert rows[0]["settings"] == first[0]["settings"] != rows[1]["settings"]
    record = yaml.safe_load((run / SETTINGS_FILE).read_text())
    assert record["history"][rows[1]["settings"]]["values"]["train.epochs"] == 2
    assert record["history"][rows[0]["settings"]]["values"]["train.epochs"] == 1


def test_changed_data_is_a_changed_setting(binary_data, multiclass_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(binary_data, run, "--epochs", "1", "--candidates", "1") == 0
    capsys.readouterr()
    assert _train(multiclass_data, run, "--epochs", "1", "--candidates", "1") == 2
    assert f"{DATA_KEY}: " in capsys.readouterr().err


def test_a_folder_from_before_fingerprints_is_checked_against_its_config(binary_data, tmp_path,
                                                                         capsys):
    run = tmp_path / "run"
    assert _train(binary_data, run, "--epochs", "1", "--candidates", "1") == 0
    (run / SETTINGS_FILE).unlink()
    capsys.readouterr()
    assert _train(binary_data, run, "--epochs", "3", "--candidates", "1") == 2
    assert "train.epochs: 1 → 3" in capsys.readouterr().err
    assert _train(binary_data, run, "--epochs", "1", "--candidates", "1") == 0
