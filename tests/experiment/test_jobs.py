"""Jobs: unique names (a Ray task's journal file)."""

from __future__ import annotations

from imseg.config import build_config
from imseg.experiment.jobs import ChainJob, StageJob
from imseg.experiment.loop import Chain
from imseg.experiment.recipes import resolve_recipes
from imseg.experiment.runner import stage_jobs


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
