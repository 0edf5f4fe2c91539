"""IM on top of online SSL trainers, end to end on tiny data: every new recipe for one
generation, every task kind, the trainer as a benchmark, resume after a kill, the report."""

from __future__ import annotations

import pytest
import yaml
from conftest import TINY, kill_and_resume, read_rows, same_rows

from imseg.cli import main
from imseg.config import build_config
from imseg.data.dataset import load_dataset
from imseg.experiment.context import RunContext
from imseg.experiment.runner import run_study

RECIPES = ["fixmatch_im", "unimatch_im", "mean_teacher_im"]
TRAINER_OF = {"fixmatch_im": "fixmatch", "unimatch_im": "unimatch",
              "mean_teacher_im": "mean_teacher"}


def _study(data, out, approaches, **ssl):
    cfg = build_config(overrides={**TINY, "ssl": {**TINY["ssl"], "approaches": approaches,
                                                  **ssl}})
    ctx = RunContext.open(data, out, cfg, progress=False)
    run_study(ctx)
    ctx.close()
    return ctx.results.rows


def test_every_trainer_recipe_runs_one_generation(binary_data, tmp_path):
    rows = _study(binary_data, tmp_path / "run", RECIPES, inconsistency={"binary_filter": False})
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        by.setdefault((r["stage"], r["approach"], r["generation"]), []).append(r)
    n_labeled = len(load_dataset(binary_data).labeled)
    for recipe, trainer in TRAINER_OF.items():
        start = by[("ldt", trainer, 0)]  # generation 0: the trainer's own LDT stage
        assert len(start) == 2 and all(r["n_train_pairs"] == n_labeled for r in start)
        students = by[("ssl", recipe, 1)]
        assert len(students) == 2 and students[0]["n_teachers"] == 2
        assert students[0]["n_train_pairs"] > n_labeled  # labeled pairs + IM pairs
        assert 0.0 <= students[0]["im_fraction"] <= 1.0
    assert len(by[("ldt", "ldt", 0)]) == 2  # the supervised yardstick is still trained
    assert (tmp_path / "run" / "models" / "unimatch" / "r0_g0" / "c1.pt").is_file()


@pytest.mark.parametrize("kind", ["multilabel", "multiclass"])
def test_trainer_recipes_on_other_task_kinds(kind, multilabel_data, multiclass_data, tmp_path):
    data = {"multilabel": multilabel_data, "multiclass": multiclass_data}[kind]
    rows = _study(data, tmp_path / "run", ["unimatch_im", "mean_teacher_im"])
    for recipe in ("unimatch_im", "mean_teacher_im"):
        students = [r for r in rows if r["approach"] == recipe]
        assert len(students) == 2 and all(r["val_iou"] is not None for r in students)
        assert students[0]["pseudo_iou"] is not None


def test_trainer_benchmark_from_the_cli_feeds_the_recipe(binary_data, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "ssl": {**TINY["ssl"], "inconsistency": {
        "binary_filter": False}}}))
    run = tmp_path / "run"
    args = ["--data", str(binary_data), "--out", str(run), "--config", str(config)]
    assert main(["train", *args, "--trainer", "fixmatch"]) == 0
    rows = read_rows(run / "results.csv")
    assert [(r["stage"], r["approach"]) for r in rows] == [("ldt", "fixmatch")] * 2
    assert (run / "models" / "fixmatch" / "r0_g0" / "c0.pt").is_file()
    # settings as YAML: another stage name, so its rows never mix with the default's
    assert main(["train", *args, "--trainer", "{name: fixmatch, threshold: 0.5}"]) == 0
    named = {r["approach"] for r in read_rows(run / "results.csv")}
    assert "fixmatch" in named and any(a.startswith("fixmatch_") for a in named)
    assert main(["run", *args, "--approaches", "fixmatch_im"]) == 0
    after = read_rows(run / "results.csv")
    assert [r for r in after if r["approach"] == "fixmatch"] == rows  # reused, not retrained
    assert len([r for r in after if r["approach"] == "fixmatch_im"]) == 2
    capsys.readouterr()
    assert main(["train", *args, "--trainer", "{name: fixmatch, threshold: 2}"]) == 2
    assert "--trainer: trainer fixmatch: threshold" in capsys.readouterr().err
    assert main(["train", *args, "--trainer", "consistency"]) == 2
    assert "cannot train the LDT stage" in capsys.readouterr().err
    # the report draws the trainer's stage beside IM on top of it
    from imseg.evaluation.report import write_report

    write_report([run], tmp_path / "report", samples=False)
    md = (tmp_path / "report" / "scores.md").read_text()
    bench, approaches = md.split("| approach |")
    assert "| FixMatch | " in bench and "| FixMatch+IM | " in approaches


def test_killed_trainer_recipe_resumes_to_the_same_rows(binary_data, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({**TINY, "ssl": {**TINY["ssl"], "approaches": [
        "unimatch_im"], "inconsistency": {"binary_filter": False}}}))
    expected, resumed = kill_and_resume(binary_data, config, tmp_path)
    assert len(expected) == 6  # LDT 2, UniMatch 2, students 2
    assert same_rows(resumed, expected)
