"""The Ray executor: same rows as the in-process executor, failures reported, resume.

The Ray tests start a local cluster of 2 CPUs once for the module (about 10 s)
and take 30-60 s on a 2-core machine; they skip when ray is not installed.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Literal

import pytest
import torch
from conftest import TINY

from imseg.config import build_config
from imseg.errors import ConfigError
from imseg.experiment.context import RunContext
from imseg.experiment.jobs import ChainJob, StageJob
from imseg.experiment.loop import Chain
from imseg.experiment.ray_executor import (
    JobsFailed,
    journal_path,
    merge_journals,
    ray_executor,
)
from imseg.experiment.recipes import resolve_recipes
from imseg.experiment.runner import run_study
from imseg.pseudo.labelers import LABELERS, LabelerPart
from imseg.results import COLUMNS, JOURNAL_DIR, ResultsTable


def _row(**changes) -> dict:
    row = {"stage": "ssl", "approach": "im", "run": 0, "n_teachers": 2, "generation": 1,
           "candidate": 0, "seed": 1, "val_iou": 0.5, "checkpoint": "models/x.pt"}
    return {**row, **changes}


# ------------------------------------------------------------------ rows without Ray
def test_known_rows_are_found_but_never_written(tmp_path):
    known = [_row(candidate=0), _row(candidate=1)]
    table = ResultsTable(tmp_path / "journal.csv", known=known)
    assert table.get(**{k: known[1][k] for k in ("stage", "approach", "run", "n_teachers",
                                                   "generation", "candidate")})
    table.add(_row(candidate=2, val_iou=0.25))
    again = ResultsTable(tmp_path / "journal.csv")
    assert [r["candidate"] for r in again.rows] == [2]
    assert again.rows[0]["val_iou"] == 0.25
    with pytest.raises(ValueError, match="already has a row"):
        table.add(_row(candidate=1))


def test_merge_adds_only_new_rows_in_one_write(tmp_path):
    table = ResultsTable(tmp_path / "results.csv")
    table.add(_row(candidate=0))
    assert table.merge([_row(candidate=0, val_iou=0.9), _row(candidate=1)]) == 1
    rows = ResultsTable(tmp_path / "results.csv").rows
    assert [(r["candidate"], r["val_iou"]) for r in rows] == [(0, 0.5), (1, 0.5)]
    with pytest.raises(KeyError, match="unknown results columns"):
        table.merge([{**_row(candidate=5), "bogus": 1}])


def test_merge_journals_takes_rows_and_removes_the_journals(tmp_path):
    results = ResultsTable(tmp_path / "results.csv")
    results.add(_row(candidate=0))
    recipes = resolve_recipes(build_config(), ["im"])
    chain = ChainJob(recipes["im"], Chain("im", 0, 2))
    journal = ResultsTable(journal_path(tmp_path, chain), known=results.rows)
    journal.add(_row(candidate=1))
    other = ResultsTable(journal_path(tmp_path, StageJob("ldt", 1)))
    other.add(_row(stage="ldt", approach="ldt", run=1, n_teachers=None, generation=0))
    assert journal_path(tmp_path, chain).name == "im_r0_n2.csv"
    assert merge_journals(results, tmp_path) == 2
    assert not (tmp_path / "journal").exists()
    on_disk = ResultsTable(tmp_path / "results.csv").rows
    assert sorted((r["approach"], r["candidate"]) for r in on_disk) == [
        ("im", 0), ("im", 1), ("ldt", 0)]
    assert merge_journals(results, tmp_path) == 0


def test_missing_ray_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(ConfigError, match=r"imseg\[ray\]"):
        ray_executor()


def test_bad_resources_are_config_errors():
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match="cpus-per-model"):
        ray_executor(cpus_per_model=0)


# ------------------------------------------------------------------------- with Ray
class OnlyInTheDriver(LabelerPart):
    """A labeler registered in the test process only."""

    name: Literal["test_driver_only"] = "test_driver_only"

    def label(self, inp):
        raise AssertionError("never called: Ray workers do not know this labeler")


def _config(approaches: list[str]):
    ssl = {**TINY["ssl"], "approaches": approaches, "generations": 2,
           "inconsistency": {"binary_filter": False},
           "noise": {"student_alphas": [0.25, 0.5]}}
    # "boom" names a labeler registered in the test process only: its chain fails
    # in every Ray worker (which cannot load its class), how a failing chain is simulated.
    return build_config(overrides={**TINY, "ssl": ssl,
                                   "recipes": {"boom": {"labeler": "test_driver_only"}}})


def _csv(path: Path) -> dict[tuple, dict]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    key = ("stage", "approach", "run", "n_teachers", "generation", "candidate")
    return {tuple(r[k] for k in key): r for r in rows}


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def one_thread(monkeypatch):
    """Ray workers train with 1 thread (cpus_per_model=1); so does the in-process run,
    since CPU float sums, and so the trained models, depend on the thread count."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # RunContext.open then leaves threads alone
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_ray_gives_the_rows_of_the_local_executor(ray_cluster, binary_data, tmp_path,
                                                  monkeypatch, one_thread):
    monkeypatch.setitem(LABELERS.classes, "test_driver_only", OnlyInTheDriver)
    local = RunContext.open(binary_data, tmp_path / "local", _config(["im", "noisy_student"]),
                            progress=False)
    run_study(local)

    ctx = RunContext.open(binary_data, tmp_path / "ray",
                          _config(["im", "noisy_student", "boom"]), progress=False)
    with pytest.raises(JobsFailed) as failed:
        run_study(ctx, ray_executor(max_retries=1))
    assert "1 of 3 chains failed" in str(failed.value)
    assert "boom_r0_n2: " in str(failed.value)

    expected, got = _csv(local.results.path), _csv(ctx.results.path)
    assert len(expected) == 2 + 2 * 2 * 2  # LDT + (2 chains × 2 generations × 2 students)
    assert got.keys() == expected.keys()  # and nothing of the failed chain
    for key, row in expected.items():
        for column in COLUMNS:
            if column != "seconds":
                assert got[key][column] == row[column], (key, column)
    assert not (tmp_path / "ray" / "journal").exists()
    for row in got.values():
        assert (tmp_path / "ray" / row["checkpoint"]).is_file()
    # the workers' finished models are in the run folder's log, as the driver's would be
    logged = (tmp_path / "ray" / "log.txt").read_text()
    assert logged.count(": best epoch ") == len(got)
    assert "boom_r0_n2 failed: " in logged and "test_ray_executor" in logged  # its cause


def test_ray_resumes_from_results_and_leftover_journals(ray_cluster, binary_data, tmp_path,
                                                        one_thread):
    ctx = RunContext.open(binary_data, tmp_path / "run", _config(["im"]), progress=False)
    run_study(ctx, ray_executor())
    before = _csv(ctx.results.path)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "models").rglob("*.pt")}

    # as after a driver killed mid-chain: the last two rows only in the chain's journal
    rows = list(ctx.results.rows)
    chain = ChainJob(resolve_recipes(ctx.config, ["im"])["im"], Chain("im", 0, 2))
    journal = ResultsTable(journal_path(ctx.run_dir, chain), known=rows[:-2])
    for row in rows[-2:]:
        journal.add(row)
    ResultsTable(tmp_path / "cut.csv").merge(rows[:-2])
    (tmp_path / "cut.csv").replace(ctx.results.path)
    ctx.close()  # as the killed driver's lock went with it

    again = RunContext.open(binary_data, tmp_path / "run", _config(["im"]), progress=False)
    # the journal's rows are taken in at the start, before the settings check sees the rows
    assert len(again.results.rows) == len(rows)
    assert not (tmp_path / "run" / JOURNAL_DIR).exists()
    run_study(again, ray_executor())
    assert _csv(again.results.path) == before  # same rows, same seconds: nothing retrained
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_ray_trains_an_smp_model_chain(ray_cluster, binary_data, tmp_path, one_thread):
    pytest.importorskip("timm")
    pytest.importorskip("segmentation_models_pytorch")
    ssl = {**TINY["ssl"], "approaches": ["im"], "students": 1,
           "inconsistency": {"binary_filter": False}}
    model = {"arch": "Unet", "encoder": "resnet18", "weights": "none",
             "options": {"decoder_channels": [64, 32, 16, 16, 8]}}
    cfg = build_config(overrides={**TINY, "ssl": ssl, "model": model})
    ctx = RunContext.open(binary_data, tmp_path / "run", cfg, progress=False)
    run_study(ctx, ray_executor())
    rows = _csv(ctx.results.path)
    assert sorted((r["approach"], r["generation"]) for r in rows.values()) == [
        ("im", "1"), ("ldt", "0"), ("ldt", "0")]
    assert {r["model"] for r in rows.values()} == {"Unet/resnet18"}
    for row in rows.values():
        assert (tmp_path / "run" / row["checkpoint"]).is_file()
