"""Run a study's chains as Ray tasks, in parallel, on a Ray cluster or a local one.

Each chain (approach × run × teacher count) is one task; its generations run in
order inside the task. The benchmark stages were trained by the driver before
(``run_study``), so every task finds their rows and checkpoints.

Rows: only the driver writes ``results.csv``. A task records the rows of its
chain, as each model finishes, in its own journal ``RUN/journal/<chain>.csv``
(one writer per file) and returns them; the driver merges the returned rows
and then deletes the journal. Journals left by an interrupted or failed task
are merged too, at the start and end of every execution, so no finished model
is trained twice; a retried task resumes from its journal.

Files: every worker must see the run folder at the same path as the driver (a
shared filesystem such as NFS): chains load the benchmark checkpoints from it
and write their own there. The data set travels through Ray's object store.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from imseg.config import Config
from imseg.data.dataset import Dataset
from imseg.errors import ConfigError, DataError, ImsegError
from imseg.experiment.context import RunContext
from imseg.experiment.loop import Chain, run_chain
from imseg.experiment.recipes import Recipe
from imseg.experiment.results import ResultsTable
from imseg.experiment.runner import Executor
from imseg.logs import bar_disable
from imseg.runtime import resolve_device

JOURNAL_DIR = "journal"
"""Folder of the per-chain journals inside the run folder."""


class ChainsFailed(ImsegError):
    """Some chains failed after their retries; the others' rows are in results.csv."""


def chain_name(chain: Chain) -> str:
    """``im_r0_n2``: the chain's journal name and how failures are reported."""
    n = "" if chain.n_teachers is None else f"_n{chain.n_teachers}"
    return f"{chain.approach}_r{chain.run}{n}"


def journal_path(run_dir: Path, chain: Chain) -> Path:
    return Path(run_dir) / JOURNAL_DIR / f"{chain_name(chain)}.csv"


def merge_journals(results: ResultsTable, run_dir: Path) -> int:
    """Take the rows of every journal in ``run_dir`` into ``results``, then delete the
    journals; returns how many rows were new."""
    folder = Path(run_dir) / JOURNAL_DIR
    if not folder.is_dir():
        return 0
    added = 0
    for path in sorted(folder.glob("*.csv")):
        added += results.merge(ResultsTable(path).rows)
        path.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()
    return added


@dataclass(frozen=True)
class ChainSpec:
    """What a task needs besides the data set and the driver's rows (all picklable)."""

    run_dir: str
    data_dir: str
    config: Config
    recipe: Recipe
    chain: Chain
    threads: int
    settings_id: str = ""


def run_chain_task(spec: ChainSpec, dataset: Dataset, known_rows: list[dict]) -> list[dict]:
    """The body of one Ray task: run the chain, return the rows it produced."""
    run_dir = Path(spec.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise DataError(
            f"{run_dir}: run folder not found on worker {socket.gethostname()}; the Ray "
            "executor needs the run folder on a filesystem every node shares, at the same path"
        )
    torch.set_num_threads(spec.threads)
    journal = journal_path(run_dir, spec.chain)
    results = ResultsTable(journal, known=known_rows)
    ctx = RunContext(run_dir, Path(spec.data_dir), spec.config, dataset,
                     resolve_device(spec.config.device), results, progress=False,
                     settings_id=spec.settings_id)
    run_chain(ctx, spec.recipe, spec.chain)
    return ResultsTable(journal).rows  # only this chain's rows are written there


def import_ray():
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            '--executor ray needs Ray: pip install "imseg[ray]" (or pip install ray)'
        ) from None
    return ray


def ray_executor(
    address: str | None = None,
    gpus_per_model: float = 0.0,
    cpus_per_model: float = 1.0,
    *,
    max_retries: int = 2,
    num_cpus: int | None = None,
) -> Executor:
    """An executor running every chain as a Ray task.

    ``address``: an existing cluster (``auto``, ``HOST:6379``, ``ray://HOST:10001``);
    None starts a local one (``num_cpus`` caps it; None = every core). Each task
    reserves ``gpus_per_model`` GPUs (fractions share a GPU) and ``cpus_per_model``
    CPUs. A failed task is tried again up to ``max_retries`` times; chains that
    still fail are reported together, after the others finished, as ChainsFailed.
    """
    ray = import_ray()
    if gpus_per_model < 0 or cpus_per_model <= 0:
        raise ConfigError("--gpus-per-model must be >= 0 and --cpus-per-model > 0")
    if max_retries < 0:
        raise ConfigError("max_retries must be >= 0")

    def execute(ctx: RunContext, recipes: dict[str, Recipe], chains: list[Chain]) -> None:
        started = False
        if not ray.is_initialized():
            ray.init(**({"address": address} if address else
                        {"num_cpus": num_cpus, "include_dashboard": False}))
            started = True
        try:
            failures = _run_all(ray, ctx, recipes, chains, gpus_per_model, cpus_per_model,
                                max_retries)
        finally:
            merge_journals(ctx.results, ctx.run_dir)
            if started:
                ray.shutdown()
        if failures:
            lines = [f"  {chain_name(c)}: {message}" for c, message in failures]
            raise ChainsFailed(f"{len(failures)} of {len(chains)} chains failed after "
                               f"{max_retries} retries:\n" + "\n".join(lines))

    return execute


def _run_all(ray, ctx: RunContext, recipes: dict[str, Recipe], chains: list[Chain],
             gpus: float, cpus: float, max_retries: int) -> list[tuple[Chain, str]]:
    """Submit every chain, merge rows as chains finish; return the failed ones."""
    merge_journals(ctx.results, ctx.run_dir)  # an earlier, interrupted execution's rows
    dataset_ref = ray.put(ctx.dataset)
    known_ref = ray.put(ctx.results.rows)
    # A fresh worker process per chain: CUDA binds the GPU Ray assigns at its first use.
    task = ray.remote(max_calls=1)(run_chain_task).options(
        num_cpus=cpus, num_gpus=gpus, max_retries=max_retries, retry_exceptions=True)
    threads = max(1, int(cpus))
    pending = {}
    for chain in chains:
        spec = ChainSpec(str(ctx.run_dir.resolve()), str(ctx.data_dir.resolve()), ctx.config,
                         recipes[chain.approach], chain, threads, ctx.settings_id)
        pending[task.remote(spec, dataset_ref, known_ref)] = chain
    failures: list[tuple[Chain, str]] = []
    bar = tqdm(total=len(pending), desc="chains", disable=bar_disable(ctx.progress))
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            chain = pending.pop(done[0])
            try:
                rows = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                failures.append((chain, _describe(exc)))
                print(f"imseg: chain {chain_name(chain)} failed: {_describe(exc)}",
                      file=sys.stderr)
            else:
                ctx.results.merge(rows)
                journal_path(ctx.run_dir, chain).unlink(missing_ok=True)
            bar.update()
    except BaseException:
        for ref in pending:  # interrupted: stop the chains still running
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
    return failures


def _describe(exc: Exception) -> str:
    """The original error of a failed task in one line (type and message)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"
