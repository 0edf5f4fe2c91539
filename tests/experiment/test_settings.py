"""A run folder's settings fingerprint: resume never mixes protocols silently."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from imseg.cli import main
from imseg.config import build_config
from imseg.data.dataset import load_dataset
from imseg.errors import ConfigError
from imseg.evaluation.summary import summary_table
from imseg.experiment.settings import (
    DATA_KEY,
    EVALNET_STAGE,
    SETTINGS_FILE,
    Stage,
    check_settings,
    config_values,
    data_hash,
    dependencies_of,
    differences,
    flatten,
    settings_groups,
    settings_of,
    study_stages,
)
from imseg.predict import run_models
from imseg.results import ResultsTable

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


def test_fine_tuning_settings_bind_pretrained_encoders_only():
    """Nets from scratch never read them: an older run folder of such nets resumes; an
    older one with a pretrained encoder was fine-tuned at one rate without warm-up."""
    pytest.importorskip("segmentation_models_pytorch")  # the config names an smp encoder
    fine_tuning = {f"train.{k}" for k in ("encoder_lr_factor", "encoder_bn", "warmup_epochs")}
    scratch = config_values(build_config())
    assert not fine_tuning & set(scratch)
    assert differences(scratch, config_values(build_config(
        overrides={"train": {"encoder_lr_factor": 0.5}}))) == []
    recorded = {**scratch, "train.encoder_lr_factor": 0.1, "train.warmup_epochs": 2}
    assert differences(recorded, scratch) == []  # a record from when they still bound
    pretrained = config_values(build_config(overrides={"model": {
        "arch": "Unet", "encoder": "resnet18", "weights": "imagenet"}}))
    assert fine_tuning <= set(pretrained)
    older = {k: v for k, v in pretrained.items() if k not in fine_tuning}
    assert differences(older, pretrained) == ["train.encoder_bn: train → frozen",
                                              "train.encoder_lr_factor: 1.0 → 0.1"]


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


def _values(**overrides) -> dict:
    """A config's recorded values (on made-up data) and the config."""
    config = build_config(overrides=overrides)
    return {**config_values(config), DATA_KEY: "d0"}


def _row(stage: str, approach: str, generation: int, settings: str) -> dict:
    return {"stage": stage, "approach": approach, "generation": generation, "settings": settings}


def _check(run: Path, rows: list[dict], stages=None, accept_new=False, **overrides) -> str:
    config = build_config(overrides=overrides)
    return check_settings(run, _values(**overrides), config, rows, stages,
                          accept_new=accept_new)


def test_check_settings_records_refuses_and_accepts(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    first = {"train": {"epochs": 2}, "benchmark": {"candidates": 2}}
    second = {"train": {"epochs": 7}, "benchmark": {"candidates": 3}}
    a = _check(run, [], **first)
    assert _check(run, [], **first) == a
    b = _check(run, [], **second)  # no model trained yet: nothing to compare with
    assert b != a
    assert set(yaml.safe_load((run / SETTINGS_FILE).read_text())["history"]) == {b}
    rows = [_row("ldt", "ldt", 0, b)]
    assert _check(run, rows, **second) == b
    with pytest.raises(ConfigError) as err:
        _check(run, rows, **first)
    text = str(err.value)
    assert "train.epochs: 7 → 2   (ldt g0)" in text
    assert "candidates" not in text  # more or fewer candidates change no model
    assert "--accept-new-settings" in text and "--out" in text
    assert "continue as before with --set train.epochs=7" in text
    c = _check(run, rows, accept_new=True, **first)
    record = yaml.safe_load((run / SETTINGS_FILE).read_text())
    assert record["current"] == c == a
    assert set(record["history"]) == {a, b}
    assert record["history"][a]["changed"] == ["train.epochs: 7 → 2"]


def test_a_stage_is_checked_on_what_it_depends_on(tmp_path):
    """A setting no trained model depended on goes on; the stages that depended on a
    changed one are named."""
    run = tmp_path / "run"
    run.mkdir()
    a = _check(run, [], ssl={"students": 3})
    ldt = [_row("ldt", "ldt", 0, a)]
    _check(run, ldt, stages=study_stages(build_config(overrides={"ssl": {"students": 2}})),
           ssl={"students": 2})  # no student trained yet
    g1 = [*ldt, _row("ssl", "im", 1, a)]
    _check(run, g1, ssl={"students": 2})  # generation 1's teachers are LDT's
    with pytest.raises(ConfigError, match=r"ssl.students: 3 → 2   \(im g2\)"):
        _check(run, [*g1, _row("ssl", "im", 2, a)], ssl={"students": 2})
    with pytest.raises(ConfigError, match=r"train.epochs: 50 → 3   \(ldt g0, im g1\)"):
        _check(run, g1, ssl={"students": 3}, train={"epochs": 3})


def test_a_per_recipe_setting_is_refused_for_that_recipe_only(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    a = _check(run, [])
    rows = [_row("ldt", "ldt", 0, a), _row("ssl", "im", 1, a), _row("ssl", "noisy_student", 1, a)]
    changed = {"recipes": {"im": {"labeler": {"dilate": 3}}}}

    def stages(approaches):
        return study_stages(build_config(overrides={**changed, "ssl": {"approaches": approaches}}))

    _check(run, rows, stages(["noisy_student"]), **changed)
    with pytest.raises(ConfigError) as err:
        _check(run, rows, stages(["im", "noisy_student"]), **changed)
    assert "recipes.im: null → " in str(err.value) and "(im g1)" in str(err.value)
    assert "noisy_student" not in str(err.value)
    # the global setting behind it: IM reads it, Noisy Student's threshold labeler does not,
    # FixMatch-IM's labeler sets it itself
    glob = {"ssl": {"inconsistency": {"block_input": False}}}
    fix = [_row("ssl", "fixmatch_im", 1, a)]
    _check(run, [*rows[2:], *fix], **glob)
    with pytest.raises(ConfigError, match=r"ssl.inconsistency.block_input: true → false   "
                                          r"\(im g1\)"):
        _check(run, rows, **glob)


def test_accepting_new_settings_locks_nothing_out(tmp_path):
    """Issue 27: accepted settings resume without the flag, and so do the original ones."""
    run = tmp_path / "run"
    run.mkdir()
    a = _check(run, [], train={"epochs": 2})
    rows = [_row("ldt", "ldt", 0, a)]
    _check(run, rows, train={"epochs": 1}, accept_new=True)  # trains nothing
    assert _check(run, rows, train={"epochs": 2}) == a
    b = _check(run, rows, train={"epochs": 1}, accept_new=True)
    both = [*rows, _row("ldt", "ldt", 0, b)]  # it trained a model under them
    assert _check(run, both, train={"epochs": 1}) == b
    assert _check(run, both, train={"epochs": 2}) == a
    with pytest.raises(ConfigError, match="train.epochs: 2 → 3"):
        _check(run, both, train={"epochs": 3})


def test_evalnets_are_checked_against_their_checkpoints(tmp_path):
    run = tmp_path / "run"
    (run / "evalnets").mkdir(parents=True)
    torch.save({"config": build_config(overrides={"evalnet": {"epochs": 4}}).model_dump(
        mode="json")}, run / "evalnets" / "e0.pt")
    (run / "evalnet_results.csv").write_text("kind,run,index,checkpoint\n"
                                             "im_plus_plus,0,0,evalnets/e0.pt\n")
    stages = [Stage(EVALNET_STAGE, "im_plus_plus")]
    _check(run, [], stages, evalnet={"epochs": 4})
    _check(run, [], [Stage("ldt", "ldt")], evalnet={"epochs": 5})
    with pytest.raises(ConfigError, match=r"evalnet.epochs: 4 → 5   \(EvalNets im_plus_plus\)"):
        _check(run, [], stages, evalnet={"epochs": 5})


def test_a_damaged_record_is_a_clear_error(tmp_path):
    (tmp_path / SETTINGS_FILE).write_text("current: x\n")
    with pytest.raises(ConfigError, match="not an imseg settings record"):
        check_settings(tmp_path, {DATA_KEY: "d"}, build_config(), [])


def test_resume_with_other_settings_stops_before_any_work(binary_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(binary_data, run, "--epochs", "1", "--candidates", "1") == 0
    first = _rows(run)
    assert len(first) == 1 and first[0]["settings"]
    checkpoints = sorted(p.name for p in (run / "models").rglob("*.pt"))
    capsys.readouterr()

    assert _train(binary_data, run, "--epochs", "2", "--candidates", "2") == 2
    err = capsys.readouterr().err
    assert "train.epochs: 1 → 2   (ldt g0)" in err and "candidates" not in err
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


def _run(data: Path, run: Path, *extra: str) -> int:
    return main(["run", "--data", str(data), "--out", str(run), *FLAGS, "--approaches", "im",
                 "--teachers", "2", "--generations", "1", "--runs", "1", *extra])


def test_the_readme_sequence_goes_through(binary_data, tmp_path, capsys):
    """Issue 31: LDT trained alone, then a study with another student count (and, as with
    the small preset, one more candidate): no student depended on the old values."""
    run = tmp_path / "run"
    assert _train(binary_data, run, "--epochs", "1", "--candidates", "2", "--keep", "2") == 0
    capsys.readouterr()
    assert _run(binary_data, run, "--epochs", "1", "--candidates", "3", "--students", "1") == 0
    out = capsys.readouterr().out
    rows = _rows(run)
    ldt = [r for r in rows if r["approach"] == "ldt"]
    assert [r["candidate"] for r in ldt] == ["0", "1", "2"]
    assert ldt[0]["settings"] == ldt[1]["settings"] != ldt[2]["settings"]
    assert [r["settings"] for r in rows if r["approach"] == "im"] == [ldt[2]["settings"]]
    assert "settings" not in out  # one stage, one group: LDT's rows are pooled (n = 3)
    assert [line.split()[-1] for line in out.splitlines() if line.startswith("ldt")] == ["3"]

    # the same epochs change is refused where LDT's models would be reused
    assert _run(binary_data, run, "--epochs", "2", "--candidates", "3", "--students", "1") == 2
    assert "train.epochs: 1 → 2   (ldt g0, im g1)" in capsys.readouterr().err
    # ... and not for a stage that holds no model yet
    assert _train(binary_data, run, "--epochs", "2", "--candidates", "1",
                  "--benchmark", "aldt", "--set", "benchmark.aldt_copies=1") == 0


def test_accept_new_settings_keeps_summaries_apart(binary_data, tmp_path, capsys):
    """Issue 27 item 4: accepting on a finished run locks the original command out of
    nothing; on a part-finished one, the summaries keep the two settings apart."""
    run = tmp_path / "run"
    assert _train(binary_data, run, "--epochs", "1", "--candidates", "1") == 0
    assert _train(binary_data, run, "--epochs", "2", "--candidates", "1",
                  "--accept-new-settings") == 0
    assert len(_rows(run)) == 1  # nothing trained
    assert _train(binary_data, run, "--epochs", "1", "--candidates", "1") == 0

    assert _train(binary_data, run, "--epochs", "2", "--candidates", "2",
                  "--accept-new-settings") == 0
    ids = [r["settings"] for r in _rows(run)]
    assert len(set(ids)) == 2
    assert _train(binary_data, run, "--epochs", "1", "--candidates", "2") == 0  # both resume
    rows = ResultsTable(run / "results.csv").rows
    table = summary_table(rows, groups=settings_groups(run, rows))
    lines = [line for line in table.splitlines() if line.startswith("ldt")]
    assert len(lines) == 2 and {line.split()[-1] for line in lines} == set(ids)
    assert "listed apart" in table
    capsys.readouterr()
    assert main(["report", str(run), "--out", str(tmp_path / "report"), "--no-samples"]) == 0
    scores = (tmp_path / "report" / "scores.md").read_text()
    assert all(f"LDT [settings {i}] | " in scores for i in ids), scores
    capsys.readouterr()
    run_models(run, "ldt", 0, 2)  # predict --run's choice: flagged
    assert "ldt g0: these models were trained under different settings" in capsys.readouterr().err


def test_what_each_stage_depends_on():
    config = build_config()
    ldt = dependencies_of(Stage("ldt", "ldt"), config)
    assert ldt.covers("train.epochs") and ldt.covers("model.arch") and ldt.covers(DATA_KEY)
    assert not ldt.covers("train.ignore_im")  # only pseudo labels read it
    assert not ldt.covers("benchmark.aldt_copies") and not ldt.covers("model.student_encoders")
    assert dependencies_of(Stage("aldt", "aldt"), config).covers("benchmark.aldt_copies")
    noisy = dependencies_of(Stage("ssl", "noisy_student", 2), config)
    assert noisy.covers("ssl.noise.max_blur") and noisy.covers("ssl.students")
    assert not noisy.covers("ssl.inconsistency.dilate") and not noisy.covers("evalnet.epochs")
    values = {**config_values(config), DATA_KEY: "d"}
    assert noisy.select(values)["ssl.noise.max_blur"] == [0, 1]  # entries of generations 1-2
    im1 = dependencies_of(Stage("ssl", "im", 1), config)
    assert im1.covers("ssl.inconsistency.dilate") and im1.covers("train.ignore_im")
    assert not im1.covers("ssl.students") and not im1.covers("ssl.noise.max_blur")
    assert dependencies_of(Stage("ssl", "im_plus_plus", 1), config).covers("evalnet.epochs")
    assert dependencies_of(Stage("ssl", "not_a_recipe", 1), config) is None
