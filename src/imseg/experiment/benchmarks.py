"""The yardsticks FDT, LDT and ALDT (docs/method.md §4): C candidates each, top K kept.

LDT and ALDT can also be trained by an online SSL trainer (FixMatch, UniMatch, Mean
Teacher) on their pairs plus the unlabeled images; those stages' rows name the
trainer as their approach (``fixmatch``, ``aldt_fixmatch``).
"""

from __future__ import annotations

from imseg.config import AugmentConfig
from imseg.data.augment import AugmentParams, augmented_copies
from imseg.data.dataset import Split
from imseg.errors import ConfigError, DataError
from imseg.experiment.context import RunContext
from imseg.experiment.stages import train_stage
from imseg.experiment.watch import announce_stage, record_stage
from imseg.results import BENCHMARKS, Place, top_k
from imseg.runtime import derive_seed, seed_everything
from imseg.training.trainers import TrainerPart, TrainingSetup


def augment_params(cfg: AugmentConfig, rotate_default: bool, **changes) -> AugmentParams:
    """AugmentParams from the config section; ``rotate`` falls back to dataset.yaml."""
    values = cfg.model_dump()
    values["rotate"] = rotate_default if values["rotate"] is None else values["rotate"]
    values.update(changes)
    return AugmentParams(**values)


def augmented_labeled_set(ctx: RunContext, run: int) -> Split:
    """The labeled pairs plus ``aldt_copies`` augmented copies of each (seeded by the run)."""
    labeled, _ = ctx.splits_for_run(run)
    copies = ctx.config.benchmark.aldt_copies
    if copies == 0:
        return labeled
    gen = seed_everything(derive_seed(ctx.config.seed, "aldt-data", run))
    params = augment_params(ctx.config.augment, ctx.dataset.info.rotate)
    images, labels = augmented_copies(labeled.images, labeled.labels, params, copies, gen)
    stems = [f"{s}_aug{k}" for k in range(copies) for s in labeled.stems]
    return Split.concat([labeled, Split(images, labels, stems)])


def benchmark_train_set(ctx: RunContext, name: str, run: int = 0) -> Split:
    labeled, unlabeled = ctx.splits_for_run(run)
    if name == "ldt":
        return labeled
    if name == "aldt":
        return augmented_labeled_set(ctx, run)
    if name == "fdt":
        if len(unlabeled) and unlabeled.labels is None:
            raise DataError(
                f"FDT needs the true masks of the unlabeled split "
                f"({ctx.data_dir / 'train_unlabeled' / 'masks'})"
            )
        return Split.concat([labeled, unlabeled])
    raise ValueError(f"unknown benchmark {name!r}; choose one of {BENCHMARKS}")


def run_benchmark(ctx: RunContext, name: str, run: int = 0,
                  trainer: TrainerPart | None = None) -> list[dict]:
    """Train the benchmark's candidates (skipping finished ones); return all its rows.

    ``trainer``: how they train (None or supervised: the benchmark itself; an online
    SSL trainer adds the run's unlabeled images and names the stage after itself).
    """
    train = benchmark_train_set(ctx, name, run)
    cfg = ctx.config
    if trainer is None or trainer.supervised:
        return train_watched(ctx, Place(stage=name, approach=name, run=run),
                             cfg.benchmark.candidates, train, cfg.train.alpha)
    if name == "fdt" or trainer.FINE_TUNES:
        raise ConfigError(f"trainer {trainer.name} cannot train the {name.upper()} stage: "
                          "online SSL trainers (fixmatch, unimatch, mean_teacher) train LDT or "
                          "ALDT on the labeled pairs plus the unlabeled images")
    place = Place(stage=name, approach=trainer.stage_name(name), run=run)
    return train_watched(ctx, place, cfg.benchmark.candidates, train, cfg.train.alpha,
                         epochs=trainer.epoch_count(),
                         epoch_fn_factory=trainer.epoch_factory(training_setup(ctx, train, run)))


def train_watched(ctx: RunContext, place: Place, count: int, train: Split, alpha: float,
                  **options) -> list[dict]:
    """:func:`train_stage` (``options`` are its own) with a line in the log when it starts
    and, when it trained models, their test IoU on its chain's TensorBoard board."""
    left = announce_stage(ctx, place, count, len(train))
    rows = train_stage(ctx, place, count, train, alpha, **options)
    if left:
        record_stage(ctx, place, rows)
    return rows


def training_setup(ctx: RunContext, train: Split, run: int) -> TrainingSetup:
    """What a trainer's models of ``run`` train on: ``train`` plus the run's unlabeled images."""
    _, unlabeled = ctx.splits_for_run(run)
    if len(unlabeled) == 0:
        raise DataError(f"{ctx.data_dir / 'train_unlabeled'}: no unlabeled images for the "
                        "online SSL trainer to learn from")
    rotate = ctx.dataset.info.rotate
    return TrainingSetup(ctx.task, train, unlabeled.images, ctx.config.train, ctx.device,
                         augment_params(ctx.config.augment, rotate), rotate)


def benchmark_top(ctx: RunContext, name: str, run: int, k: int | None = None) -> list[dict]:
    """The kept (top-K) rows of a benchmark stage, training it first when needed."""
    rows = run_benchmark(ctx, name, run)
    return top_k(rows, k or ctx.config.benchmark.keep)
