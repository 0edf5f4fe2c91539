"""Run a study's jobs as Ray tasks, in parallel, on a Ray cluster or a local one.

``run_study`` hands over two waves (:mod:`imseg.experiment.jobs`): first each run's
start stages (one task per stage and run: LDT r0, LDT r1, UniMatch r0, ...), then
the chains (one task per approach × run × teacher count; its generations run in
order inside the task), which find the stages' rows and checkpoints.

Rows: only the driver writes ``results.csv``. A task records the rows of its
job, as each model finishes, in its own journal ``RUN/journal/<job>.csv``
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
from imseg.experiment.jobs import Job, wave_kind
from imseg.experiment.runner import Executor
from imseg.logs import bar_disable, log_to_run_folder, note_in_run_log
from imseg.results import JOURNAL_DIR, ResultsTable, merge_journals
from imseg.runtime import resolve_device


class JobsFailed(ImsegError):
    """Some jobs failed after their retries; the others' rows are in results.csv."""


def journal_path(run_dir: Path, job: Job) -> Path:
    return Path(run_dir) / JOURNAL_DIR / f"{job.name}.csv"


@dataclass(frozen=True)
class JobSpec:
    """What a task needs besides the data set and the driver's rows (all picklable)."""

    run_dir: str
    data_dir: str
    config: Config
    job: Job
    threads: int
    settings_id: str = ""


def run_job_task(spec: JobSpec, dataset: Dataset, known_rows: list[dict]) -> list[dict]:
    """The body of one Ray task: run the job, return the rows it produced."""
    run_dir = Path(spec.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise DataError(
            f"{run_dir}: run folder not found on worker {socket.gethostname()}; the Ray "
            "executor needs the run folder on a filesystem every node shares, at the same path"
        )
    torch.set_num_threads(spec.threads)
    log_to_run_folder(run_dir)  # its finished models' lines, as the driver's are
    journal = journal_path(run_dir, spec.job)
    results = ResultsTable(journal, known=known_rows, run_dir=run_dir)
    ctx = RunContext(run_dir, Path(spec.data_dir), spec.config, dataset,
                     resolve_device(spec.config.device), results, progress=False,
                     settings_id=spec.settings_id)
    spec.job.execute(ctx)
    return ResultsTable(journal).rows  # only this job's rows are written there


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
    """An executor running every job as a Ray task.

    ``address``: an existing cluster (``auto``, ``HOST:6379``, ``ray://HOST:10001``);
    None starts a local one (``num_cpus`` caps it; None = every core). Each task
    reserves ``gpus_per_model`` GPUs (fractions share a GPU) and ``cpus_per_model``
    CPUs. A failed task is tried again up to ``max_retries`` times; jobs that
    still fail are reported together, after the others of their wave finished, as
    JobsFailed (a failed stage stops the study before its chains).
    """
    ray = import_ray()
    if gpus_per_model < 0 or cpus_per_model <= 0:
        raise ConfigError("--gpus-per-model must be >= 0 and --cpus-per-model > 0")
    if max_retries < 0:
        raise ConfigError("max_retries must be >= 0")

    def execute(ctx: RunContext, jobs: list[Job]) -> None:
        started = False
        if not ray.is_initialized():
            ray.init(**({"address": address} if address else
                        {"num_cpus": num_cpus, "include_dashboard": False}))
            started = True
        try:
            failures = _run_all(ray, ctx, jobs, gpus_per_model, cpus_per_model, max_retries)
        finally:
            merge_journals(ctx.results, ctx.run_dir)
            if started:
                ray.shutdown()
        if failures:
            lines = [f"  {job.name}: {message}" for job, message in failures]
            raise JobsFailed(f"{len(failures)} of {len(jobs)} {wave_kind(jobs)} failed after "
                             f"{max_retries} retries:\n" + "\n".join(lines))

    return execute


def _run_all(ray, ctx: RunContext, jobs: list[Job], gpus: float, cpus: float,
             max_retries: int) -> list[tuple[Job, str]]:
    """Submit every job, merge rows as jobs finish; return the failed ones."""
    merge_journals(ctx.results, ctx.run_dir)  # an earlier, interrupted execution's rows
    dataset_ref = ray.put(ctx.dataset)
    known_ref = ray.put(ctx.results.every_row())  # unmatched rows too: a retrained model is compared
    # A fresh worker process per job: CUDA binds the GPU Ray assigns at its first use.
    task = ray.remote(max_calls=1)(run_job_task).options(
        num_cpus=cpus, num_gpus=gpus, max_retries=max_retries, retry_exceptions=True)
    threads = max(1, int(cpus))
    pending = {}
    for job in jobs:
        spec = JobSpec(str(ctx.run_dir.resolve()), str(ctx.data_dir.resolve()), ctx.config,
                       job, threads, ctx.settings_id)
        pending[task.remote(spec, dataset_ref, known_ref)] = job
    failures: list[tuple[Job, str]] = []
    bar = tqdm(total=len(pending), desc=wave_kind(jobs), disable=bar_disable(ctx.progress))
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                rows = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                failures.append((job, _describe(exc)))
                print(f"imseg: {job.name} failed: {_describe(exc)}", file=sys.stderr)
                note_in_run_log(f"imseg: {job.name} failed: {_describe(exc)}")
            else:
                ctx.results.merge(rows)
                journal_path(ctx.run_dir, job).unlink(missing_ok=True)
            bar.update()
    except BaseException:
        for ref in pending:  # interrupted: stop the jobs still running
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
