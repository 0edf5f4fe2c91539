"""run_study: the teacher counts checked before any work, the two waves handed to an executor."""

from __future__ import annotations

import pytest
from conftest import TINY

from imseg.config import build_config
from imseg.errors import ConfigError
from imseg.experiment.context import RunContext
from imseg.experiment.recipes import resolve_recipes
from imseg.experiment.runner import check_teacher_counts, local_executor, run_study


def _check(approaches: list[str], **ssl) -> None:
    config = build_config(overrides={"benchmark": {"candidates": 3},
                                     "ssl": {"teachers": [2, 3], **ssl}})
    check_teacher_counts(config, resolve_recipes(config, approaches))


def test_teacher_counts_must_find_as_many_models_in_every_generation():
    _check(["im", "noisy_student"], students=3, generations=3)
    _check(["im"], students=1, generations=1)  # generation 1 draws from the candidates
    _check(["noisy_student"], students=1, generations=3)  # top-1: any student count
    with pytest.raises(ConfigError, match=r"im: teacher counts \[2, 3\] exceed the 1 students"):
        _check(["im"], students=1, generations=2)
    with pytest.raises(ConfigError, match="raise ssl.students to 3"):
        _check(["unimatch_im"], students=2, generations=2)
    with pytest.raises(ConfigError, match=r"\[5\] exceed the 3 benchmark candidates"):
        _check(["im"], teachers=[5])
    # the input ensemble's n counts views of its one teacher, not models
    _check(["input_ensemble"], teachers=[5], students=1, generations=3)


def test_the_stages_of_every_run_finish_before_any_chain(binary_data, tmp_path):
    ssl = {**TINY["ssl"], "approaches": ["im"], "runs": 2, "students": 1}
    ctx = RunContext.open(binary_data, tmp_path / "run",
                          build_config(overrides={**TINY, "ssl": ssl}), progress=False)
    waves: list[tuple[list[str], int]] = []

    def recording(ctx, jobs):
        waves.append(([job.name for job in jobs], len(ctx.results.rows)))
        local_executor(ctx, jobs)

    run_study(ctx, recording)
    assert waves == [(["stage_ldt_r0", "stage_ldt_r1"], 0), (["im_r0_n2", "im_r1_n2"], 4)]
    assert sorted((r["approach"], r["run"]) for r in ctx.results.rows) == [
        ("im", 0), ("im", 1), ("ldt", 0), ("ldt", 0), ("ldt", 1), ("ldt", 1)]
