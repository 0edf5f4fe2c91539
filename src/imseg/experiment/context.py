"""Everything a run shares: its folder, config, data in memory, device and results table."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import torch
import yaml

from imseg import __version__
from imseg.config import Config
from imseg.data.dataset import Dataset, Split, load_dataset
from imseg.data.layout import write_info
from imseg.data.splitting import seeded_permutation
from imseg.data.tiles import tile_source
from imseg.errors import DataError
from imseg.experiment.settings import Stage, check_settings, recorded_config, settings_of
from imseg.logs import log, log_to_run_folder, note_failure_in_run_log, stop_run_log
from imseg.results import ResultsTable, merge_journals
from imseg.runtime import configure_threads, resolve_device
from imseg.storage import atomic_write_text, storage_error
from imseg.tasks import Task

RUN_INFO = "run.yaml"


@dataclass
class RunContext:
    run_dir: Path
    data_dir: Path
    config: Config
    dataset: Dataset
    device: torch.device
    results: ResultsTable
    progress: bool = True
    settings_id: str = ""
    """Fingerprint of the settings this process trains under (results.csv ``settings``)."""
    _run_splits: dict[int, tuple[Split, Split]] = field(default_factory=dict, repr=False)
    _lock: IO | None = field(default=None, repr=False)

    @property
    def task(self) -> Task:
        return self.dataset.task

    @classmethod
    def open(cls, data_dir: Path, run_dir: Path, config: Config, progress: bool = True,
             command: str = "", accept_new_settings: bool = False,
             stages: list[Stage] | None = None) -> RunContext:
        """Load the data once, create the run folder, check the settings of the ``stages``
        the command may train, reuse or extend (None: every stage with models) against
        those their models were trained under (:mod:`imseg.experiment.settings`), and
        record the resolved config."""
        configure_threads()
        run_dir = Path(run_dir)
        dataset = load_dataset(Path(data_dir))
        make_run_dir(run_dir)
        lock = lock_run_dir(run_dir)
        log_to_run_folder(run_dir)  # only the lock's holder writes there
        results = ResultsTable(run_dir / "results.csv")
        merge_journals(results, run_dir)  # what an interrupted parallel run left
        log.info("%s %s: %s", f"resuming ({len(results.rows)} models done)" if results.rows
                 else "starting", run_dir, command or "(no command line)")
        try:
            settings_id = check_settings(run_dir, settings_of(config, dataset), config,
                                         results.every_row(), stages, command,
                                         accept_new_settings,
                                         previous=recorded_config(run_dir))
        except BaseException as exc:
            note_failure_in_run_log(exc)  # the folder's history says why it stopped
            stop_run_log()
            lock.close()
            raise
        atomic_write_text(run_dir / "config.yaml", config.to_yaml())
        write_info(run_dir, dataset.info)  # the run keeps working if the data folder moves
        atomic_write_text(
            run_dir / RUN_INFO,
            yaml.safe_dump({"data": str(Path(data_dir).resolve()), "command": command,
                            "imseg": __version__}),
        )
        return cls(run_dir, Path(data_dir), config, dataset, resolve_device(config.device),
                   results, progress, settings_id, _lock=lock)

    def close(self) -> None:
        """Release the run folder's lock and log (both also go when the process ends)."""
        if self._lock is not None:
            stop_run_log()
            self._lock.close()
            self._lock = None

    def splits_for_run(self, run: int) -> tuple[Split, Split]:
        """``(labeled, unlabeled)`` of run ``run``.

        Run 0 uses the prepared split. Later runs draw a new labeled part of the
        same size, seeded by the run, from labeled ∪ unlabeled when the unlabeled
        truth is known (the paper's "different labeled splits"); otherwise only
        the seeds differ. Tiles (HeLa's crops, ``prepare --tile``) are drawn by the
        image they were cut from, as the prepared split is, so no image has tiles on
        both sides.
        """
        if run not in self._run_splits:
            ds = self.dataset
            if run == 0 or ds.unlabeled.labels is None or len(ds.unlabeled) == 0:
                self._run_splits[run] = (ds.labeled, ds.unlabeled)
            else:
                pool = Split.concat([ds.labeled, ds.unlabeled])
                source_of = [tile_source(s) for s in pool.stems]
                order = seeded_permutation(list(dict.fromkeys(source_of)), ds.info.seed + run)
                n = len(set(source_of[: len(ds.labeled)]))  # the pool starts with them
                chosen = set(order[:n])
                picked = [source in chosen for source in source_of]
                labeled = pool.subset([i for i, p in enumerate(picked) if p])
                unlabeled = pool.subset([i for i, p in enumerate(picked) if not p])
                self._run_splits[run] = (labeled, unlabeled)
        return self._run_splits[run]


def make_run_dir(run_dir: Path) -> None:
    """Create the run folder, or say plainly why it cannot be."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(run_dir, exc) from None


def lock_run_dir(run_dir: Path) -> IO:
    """Hold an exclusive lock on ``RUN/.lock`` for this process's lifetime.

    Two processes appending to one results.csv would lose each other's rows;
    the second one stops here with a message instead. The lock goes with the
    process (any exit, kill -9 included), so a stopped run never blocks its resume.
    """
    handle = open(run_dir / ".lock", "a+")  # noqa: SIM115 - held for the process's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise DataError(f"{run_dir} is in use by {owner}; wait for it to finish or use "
                        "another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"imseg process {os.getpid()}")
    handle.flush()
    return handle
