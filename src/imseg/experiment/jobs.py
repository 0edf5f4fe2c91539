"""The units of work an executor runs: one run's start stage, or one chain.

A study runs in two waves (``runner.run_study``): first the stages the chains start
from (LDT of every run, and ALDT or an online trainer's LDT where a recipe starts
there), then the chains, which read those stages' rows and checkpoints. Jobs of one
wave are independent of each other, so an executor may run them in any order or at
once. Each job is picklable and has a unique name (a Ray task's journal file).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from imseg.experiment.benchmarks import run_benchmark
from imseg.experiment.context import RunContext
from imseg.experiment.loop import Chain, run_chain
from imseg.experiment.recipes import Recipe
from imseg.training.trainers import TrainerPart


class Job(Protocol):
    KIND: ClassVar[str]
    """What a wave of such jobs is called in progress bars and errors (``chains``)."""

    @property
    def name(self) -> str: ...

    def execute(self, ctx: RunContext) -> None: ...


def wave_kind(jobs: list[Job]) -> str:
    """What a wave is called in progress bars and errors: its jobs' ``KIND``."""
    return jobs[0].KIND if jobs else "jobs"


@dataclass(frozen=True)
class StageJob:
    """One run's benchmark stage, trained by ``trainer`` (None: the benchmark itself)."""

    KIND: ClassVar[str] = "stages"
    benchmark: str
    run: int
    trainer: TrainerPart | None = None

    @property
    def name(self) -> str:
        """``stage_ldt_r0``, ``stage_unimatch_r1``: never a chain's name."""
        supervised = self.trainer is None or self.trainer.supervised
        approach = self.benchmark if supervised else self.trainer.stage_name(self.benchmark)
        return f"stage_{approach}_r{self.run}"

    def execute(self, ctx: RunContext) -> None:
        run_benchmark(ctx, self.benchmark, self.run, self.trainer)


@dataclass(frozen=True)
class ChainJob:
    """All generations of one chain, in order."""

    KIND: ClassVar[str] = "chains"
    recipe: Recipe
    chain: Chain

    @property
    def name(self) -> str:
        """``im_r0_n2``; ``noisy_student_r0`` for recipes that ignore the teacher count."""
        c = self.chain
        return f"{c.approach}_r{c.run}" + ("" if c.n_teachers is None else f"_n{c.n_teachers}")

    def execute(self, ctx: RunContext) -> None:
        run_chain(ctx, self.recipe, self.chain)
