"""Run a study: the stages chains start from, then every chain, each wave through an executor."""

from __future__ import annotations

from collections.abc import Callable

from tqdm.auto import tqdm

from imseg.config import Config
from imseg.errors import ConfigError, DataError
from imseg.experiment.context import RunContext
from imseg.experiment.jobs import ChainJob, Job, StageJob, wave_kind
from imseg.experiment.loop import Chain, chains_of, start_stages
from imseg.experiment.recipes import Recipe, resolve_recipes
from imseg.logs import bar_disable

Executor = Callable[[RunContext, list[Job]], None]
"""Runs one wave of independent jobs (:mod:`imseg.experiment.jobs`) and returns when all
are done, their rows in ``ctx.results``."""


def local_executor(ctx: RunContext, jobs: list[Job]) -> None:
    """Run the jobs one after another in this process (the default)."""
    for job in tqdm(jobs, desc=wave_kind(jobs), disable=bar_disable(ctx.progress)):
        job.execute(ctx)


def stage_jobs(recipes: dict[str, Recipe], runs: int) -> list[StageJob]:
    """Every run's stages the recipes' chains start from (LDT always)."""
    return [StageJob(stage, run, trainer)
            for run in range(runs) for stage, trainer in start_stages(recipes)]


def prepare_shared(ctx: RunContext, recipes: dict[str, Recipe]) -> None:
    """What the chains' parts share, made in this process (under Ray only the driver
    writes shared files): the EvalNets (and thresholds) of every kind needed, the state
    folders."""
    runs = ctx.config.ssl.runs
    if any(r.uses_evalnet for r in recipes.values()):
        from imseg.experiment.evalnet_stage import prepare_evalnets

        for run in range(runs):
            prepare_evalnets(ctx, run, recipes)
    for folder in {r.needs.state for r in recipes.values()} - {None}:
        (ctx.run_dir / "state" / str(folder)).mkdir(parents=True, exist_ok=True)


def check_teacher_counts(config: Config, recipes: dict[str, Recipe]) -> None:
    """Every recipe's teachers must find the models they draw: generation 1 draws from the
    benchmark candidates, later ones from the students of the generation before. (With
    fewer, the top n would silently be fewer than n, and IM over one teacher is no IM.)"""
    for name, recipe in recipes.items():
        pools = [(config.benchmark.candidates, "benchmark candidates of generation 1",
                  "benchmark.candidates")]
        if recipe.generation_count(config) > 1:
            pools.append((config.ssl.students, "students per generation that generation "
                          "2 on draws its teachers from", "ssl.students"))
        for available, what, key in pools:
            too_many = [n for n in config.ssl.teachers if recipe.teachers.draws(n) > available]
            if too_many:
                raise ConfigError(
                    f"{name}: teacher counts {too_many} exceed the {available} {what}; raise "
                    f"{key} to {max(too_many)} or lower --teachers")


def run_study(ctx: RunContext, executor: Executor | None = None) -> list[Chain]:
    """Train the shared start stages (LDT, ALDT, a trainer's LDT) once per run, then every
    chain; the executor runs each wave, so under Ray the runs' stages train at once too.

    Resumable: every model whose row is already in results.csv is skipped.
    """
    ssl = ctx.config.ssl
    recipes = resolve_recipes(ctx.config, ssl.approaches)
    if len(ctx.dataset.unlabeled) == 0:
        raise DataError(f"{ctx.data_dir / 'train_unlabeled'}: no unlabeled images; "
                        "semi-supervised approaches need some")
    check_teacher_counts(ctx.config, recipes)
    execute = executor or local_executor
    execute(ctx, stage_jobs(recipes, ssl.runs))
    prepare_shared(ctx, recipes)
    chains = chains_of(recipes, ssl.teachers, ssl.runs)
    execute(ctx, [ChainJob(recipes[c.approach], c) for c in chains])
    return chains
