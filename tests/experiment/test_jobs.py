"""Jobs: unique names (a Ray task's journal), and the two waves run_study hands an executor."""

from __future__ import annotations

from conftest import TINY

from imseg.config import build_config
from imseg.experiment.context import RunContext
from imseg.experiment.jobs import ChainJob, StageJob
from imseg.experiment.loop import Chain
from imseg.experiment.recipes import resolve_recipes
from imseg.experiment.runner import local_executor, run_study, stage_jobs


def test_job_names_are_unique_per_stage_run_and_chain():
    recipes = resolve_recipes(build_config(), ["im", "noisy_student", "unimatch_im", "aim_plus"])
    assert ChainJob(recipes["im"], Chain("im", 1, 3)).name == "im_r1_n3"
    assert ChainJob(recipes["noisy_student"], Chain("noisy_student", 0, None)).name == \
        "noisy_student_r0"
    names = sorted(job.name for job in stage_jobs(recipes, 2))
    assert names == ["stage_aldt_r0", "stage_aldt_r1", "stage_ldt_r0", "stage_ldt_r1",
                     "stage_unimatch_r0", "stage_unimatch_r1"]
    # a trainer with other settings is another stage, so another job
    tuned = resolve_recipes(build_config(overrides={"recipes": {
        "mine": {"trainer": {"name": "unimatch", "threshold": 0.8}}}}), ["mine"])["mine"]
    job = StageJob("ldt", 0, tuned.start_trainer)
    assert job.name.startswith("stage_unimatch_") and job.name != "stage_unimatch_r0"
    assert StageJob("aldt", 0, recipes["unimatch_im"].start_trainer).name == \
        "stage_aldt_unimatch_r0"


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
