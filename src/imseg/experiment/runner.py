"""Run a study: shared benchmark stages first, then every chain through an executor."""

from __future__ import annotations

from collections.abc import Callable

from tqdm.auto import tqdm

from imseg.errors import DataError
from imseg.experiment.benchmarks import run_benchmark
from imseg.experiment.context import RunContext
from imseg.experiment.loop import Chain, chains_of, run_chain, start_stages
from imseg.experiment.recipes import Recipe, resolve_recipes
from imseg.logs import bar_disable

Executor = Callable[[RunContext, dict[str, Recipe], list[Chain]], None]


def local_executor(ctx: RunContext, recipes: dict[str, Recipe], chains: list[Chain]) -> None:
    """Run the chains one after another in this process (the default)."""
    for chain in tqdm(chains, desc="chains", disable=bar_disable(ctx.progress)):
        run_chain(ctx, recipes[chain.approach], chain)


def prepare(ctx: RunContext, recipes: dict[str, Recipe]) -> None:
    """Everything the recipes' parts need before any chain runs, in this process (under
    Ray only the driver writes these shared files): the stages the chains start from,
    the EvalNets (and their thresholds) of every kind needed, the state folders."""
    runs = ctx.config.ssl.runs
    for run in range(runs):
        for stage, trainer in start_stages(recipes):
            run_benchmark(ctx, stage, run, trainer)
    if any(r.uses_evalnet for r in recipes.values()):
        from imseg.experiment.evalnet_stage import prepare_evalnets

        for run in range(runs):
            prepare_evalnets(ctx, run, recipes)
    for folder in {r.needs.state for r in recipes.values()} - {None}:
        (ctx.run_dir / "state" / str(folder)).mkdir(parents=True, exist_ok=True)


def run_study(ctx: RunContext, executor: Executor | None = None) -> list[Chain]:
    """Train the shared LDT (and ALDT) stages once per run, then every chain.

    Resumable: every model whose row is already in results.csv is skipped.
    """
    ssl = ctx.config.ssl
    recipes = resolve_recipes(ctx.config, ssl.approaches)
    if len(ctx.dataset.unlabeled) == 0:
        raise DataError(f"{ctx.data_dir / 'train_unlabeled'}: no unlabeled images; "
                        "semi-supervised approaches need some")
    too_many = [n for n in ssl.teachers if n > ctx.config.benchmark.candidates]
    if too_many:
        raise DataError(f"teacher counts {too_many} exceed the {ctx.config.benchmark.candidates} "
                        "benchmark candidates they are drawn from")
    prepare(ctx, recipes)
    chains = chains_of(recipes, ssl.teachers, ssl.runs)
    (executor or local_executor)(ctx, recipes, chains)
    return chains
