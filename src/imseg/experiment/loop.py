"""The one generation loop (docs/method.md §5); every approach is a recipe plugged into it.

A *chain* is one approach × run × teacher count: its generations run in
order, each generation's teachers being the previous stage's best students.
Chains are independent of each other, which is what executors exploit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from imseg.data.augment import AugmentParams
from imseg.data.dataset import Split
from imseg.errors import DataError
from imseg.evaluation.metrics import evaluate
from imseg.experiment.benchmarks import (
    augment_params,
    augmented_labeled_set,
    run_benchmark,
    train_watched,
    training_setup,
)
from imseg.experiment.context import RunContext
from imseg.experiment.evalnet_stage import scoring_services
from imseg.experiment.recipes import Recipe
from imseg.experiment.stages import load_models
from imseg.experiment.watch import PseudoSample, show_pseudo_labels
from imseg.logs import log, stage_name
from imseg.pseudo.labelers import LabelerPart, LabelingInput, PartServices, PseudoSet
from imseg.pseudo.state import FileStateStore
from imseg.results import Place
from imseg.runtime import derive_seed, seed_everything
from imseg.storage import save_png
from imseg.tasks import VOID
from imseg.training.inference import for_inference, release_freed_memory
from imseg.training.trainers import TrainerPart


@dataclass(frozen=True)
class Chain:
    """One independent line of generations."""

    approach: str
    run: int
    n_teachers: int | None

    def place(self, generation: int) -> Place:
        return Place("ssl", self.approach, self.run, self.n_teachers, generation)


def chains_of(recipes: dict[str, Recipe], teacher_counts: list[int], runs: int) -> list[Chain]:
    """Every chain of a study; approaches that do not depend on n run once per run."""
    out = []
    for run in range(runs):
        for name, recipe in recipes.items():
            counts = teacher_counts if recipe.per_teacher_count else [None]
            out.extend(Chain(name, run, n) for n in counts)
    return out


def start_stages(recipes: dict[str, Recipe]) -> list[tuple[str, TrainerPart | None]]:
    """``(benchmark, trainer)`` of every stage the chains start from, each once (LDT always:
    it is the yardstick); the runner trains them before any chain runs."""
    stages: dict[str, tuple[str, TrainerPart | None]] = {"ldt": ("ldt", None)}
    for recipe in recipes.values():
        stages.setdefault(recipe.start_stage, (recipe.start.name, recipe.start_trainer))
    return list(stages.values())


def chain_context(ctx: RunContext, recipe: Recipe) -> RunContext:
    """The run's context with the config the chain's checkpoints record (the recipe's part
    settings in their global sections; the same ``ctx`` when the recipe overrides nothing).
    The chain's code reads the settings from the parts, not from this config."""
    config = recipe.recorded_config(ctx.config)
    return ctx if config is ctx.config else replace(ctx, config=config)


# ------------------------------------------------------------------------ one generation
def student_alpha(ctx: RunContext, recipe: Recipe, generation: int) -> float:
    """The tiny U-Net's width of this generation's students."""
    return recipe.students.alpha(ctx.config.model, ctx.config.train.alpha, generation)


def copy_params(ctx: RunContext, recipe: Recipe, generation: int) -> AugmentParams:
    """Augmentation of the copies: the data set's, changed by the recipe's noise."""
    return augment_params(ctx.config.augment, ctx.dataset.info.rotate,
                          **recipe.noise.augment_changes(generation))


def choose_teachers(recipe: Recipe, rows: list[dict], n: int | None) -> list[dict]:
    return recipe.teachers.choose(rows, n)


def pseudo_quality(ctx: RunContext, pseudo: PseudoSet, unlabeled: Split) -> dict:
    """Pseudo labels against the hidden truth, IM pixels left out (their share is
    reported separately as ``im_fraction``)."""
    out: dict = {"im_fraction": pseudo.im_fraction}
    if unlabeled.labels is None or len(pseudo) == 0:
        return out
    truth = unlabeled.labels[pseudo.source].clone()
    if pseudo.mask is not None:
        truth.masked_fill_(pseudo.mask.expand_as(truth), VOID)
    groups = None if unlabeled.groups is None else unlabeled.groups[pseudo.source]
    scores = evaluate(ctx.task, pseudo.labels, truth, groups)
    out.update(pseudo_iou=scores["iou"], pseudo_dice=scores["dice"])
    return out


def sample_indices(ctx: RunContext, unlabeled: Split, run: int) -> list[int]:
    """The same few unlabeled images every generation, so their labels can be compared."""
    k = min(ctx.config.ssl.samples_per_generation, len(unlabeled))
    gen = torch.Generator().manual_seed(derive_seed(ctx.config.seed, "samples", run))
    return sorted(torch.randperm(len(unlabeled), generator=gen)[:k].tolist())


def write_samples(ctx: RunContext, chain: Chain, generation: int, pseudo: PseudoSet,
                  unlabeled: Split, index: list[int]) -> None:
    """image / teachers' masks / pseudo image / pseudo label / IM as PNGs for inspection,
    and the IM-creation view of each on TensorBoard."""
    folder = ctx.run_dir / "samples" / chain.place(generation).folder()
    folder.mkdir(parents=True, exist_ok=True)
    task = ctx.task
    position = {int(s): j for j, s in enumerate(pseudo.source.tolist())}
    shown = []
    for i in index:
        stem = unlabeled.stems[i]
        image = _pixels(unlabeled.images[i])
        teachers = [task.decode_mask(label.numpy()) for label in pseudo.teacher_labels.get(i, [])]
        _png_array(folder / f"{stem}_image.png", image)
        for t, mask in enumerate(teachers):
            _png_array(folder / f"{stem}_teacher{t}.png", mask)
        if i in position:
            j = position[i]
            label = task.decode_mask(pseudo.labels[j].numpy())
            _png_array(folder / f"{stem}_input.png", _pixels(pseudo.images[j]))
            _png_array(folder / f"{stem}_label.png", label)
            im = (torch.zeros(label.shape[:2], dtype=torch.bool) if pseudo.mask is None
                  else pseudo.mask[j, 0]).numpy()
            if pseudo.mask is not None:
                _png_array(folder / f"{stem}_im.png", im.astype("uint8") * 255)
            shown.append(PseudoSample(stem, image, teachers, im, label))
    show_pseudo_labels(ctx, chain.place(generation), shown)


def _pixels(image: torch.Tensor):
    """A uint8 ``(C, H, W)`` image as the ``H×W`` or ``H×W×C`` array a PNG holds."""
    return image.permute(1, 2, 0).squeeze(-1).numpy()


def _png_array(path, array) -> None:
    save_png(path, array)


def make_pseudo(ctx: RunContext, recipe: Recipe, chain: Chain, generation: int,
                teachers: list[dict], unlabeled: Split, samples: list[int]) -> PseudoSet:
    """Pseudo-label the unlabeled split with the recipe's labeler."""
    cfg = ctx.config
    where = stage_name(chain.place(generation).key())
    generator = seed_everything(derive_seed(cfg.seed, "pseudo", *chain.place(generation).key().values()))
    inp = LabelingInput(
        task=ctx.task,
        teachers=for_inference(load_models(ctx, teachers), len(unlabeled),
                               tuple(unlabeled.images.shape[1:]), ctx.device,
                               cfg.train.compile_inference, chain.n_teachers),
        images=unlabeled.images,
        device=ctx.device,
        generator=generator,
        batch_size=cfg.ssl.pseudo_batch_size,
        n=chain.n_teachers or 1,
        rotate=ctx.dataset.info.rotate,
        amp=cfg.train.amp,
        sample_index=samples,
        generation=generation,
        services=labeler_services(ctx, recipe, chain),
        name=f"{where}: pseudo-labeling",
    )
    return run_labeler(recipe.labeler, inp, where, len(teachers))


def run_labeler(labeler: LabelerPart, inp: LabelingInput, where: str,
                n_teachers: int) -> PseudoSet:
    """The labeler over ``inp``, with a log line when it starts and one with what it kept
    (a pass over many images takes minutes)."""
    total = len(inp.images)
    log.info(f"{inp.name} {total} images with {n_teachers} teachers ({labeler.name})")
    start = time.perf_counter()
    pseudo = labeler.label(inp)
    im = "" if pseudo.im_fraction is None else f", IM {pseudo.im_fraction:.1%} of the pixels"
    log.info(f"{where}: kept {len(pseudo)} of {total} images as pseudo pairs{im}, "
             f"{time.perf_counter() - start:.1f} s")
    return pseudo


def labeler_services(ctx: RunContext, recipe: Recipe, chain: Chain) -> PartServices:
    """What the recipe's labeler declared it needs: an EvalNet scorer and the thresholds
    chosen on val, a state store for the chain (prepared by the runner before the chains
    started)."""
    needs = recipe.labeler.needs()
    services = PartServices()
    if needs.evalnet_kinds:
        kind = needs.evalnet_kinds[0]
        services = scoring_services(ctx, chain.run, kind, kind)
    if needs.state:
        services.state = FileStateStore(ctx.run_dir / "state" / needs.state,
                                        lambda generation: chain.place(generation).folder())
    return services


def copies_services(ctx: RunContext, recipe: Recipe, chain: Chain) -> PartServices:
    """What the recipe's copies need: the scorer of their own EvalNet kind (for pairs the
    labeler did not score) and the thresholds of the kind that scored the pairs."""
    own = recipe.copies.needs().evalnet_kinds
    if not own:
        return PartServices()
    return scoring_services(ctx, chain.run, own[0], recipe.needs.evalnet_kinds[0])


def run_generation(ctx: RunContext, recipe: Recipe, chain: Chain, generation: int,
                   teachers: list[dict], labeled_train: Split, unlabeled: Split) -> list[dict]:
    """Pseudo-label, build the training set, train S students; skipped when all are done."""
    place = chain.place(generation)
    students = ctx.config.ssl.students
    done = [ctx.results.get(**replace(place, candidate=c).key()) for c in range(students)]
    if all(done):
        return done  # type: ignore[return-value]
    extra = None
    train = labeled_train
    if recipe.labeler.MAKES_PAIRS:
        train, extra = students_training_set(ctx, recipe, chain, generation, teachers,
                                             labeled_train, unlabeled)
        release_freed_memory()  # the pseudo set is gone; the students' activations come next
    trainer = recipe.trainer
    factory = trainer.epoch_factory(training_setup(ctx, train, chain.run))
    if trainer.FINE_TUNES:  # each student starts from the top teacher
        top = teachers[0]
        return train_watched(ctx, place, students, train, float(top["alpha"]), extra=extra,
                             init=ctx.run_dir / top["checkpoint"], epochs=trainer.epoch_count(),
                             epoch_fn_factory=factory)
    return train_watched(ctx, place, students, train, student_alpha(ctx, recipe, generation),
                         extra=extra, epochs=trainer.epoch_count(), epoch_fn_factory=factory,
                         encoder=recipe.students.encoder(ctx.config.model, generation))


def students_training_set(ctx: RunContext, recipe: Recipe, chain: Chain, generation: int,
                          teachers: list[dict], labeled_train: Split,
                          unlabeled: Split) -> tuple[Split, dict]:
    """The labeled pairs plus the recipe's pseudo pairs, and the pseudo labels' quality.

    A function of its own so the pseudo set is freed before the students train.
    """
    cfg = ctx.config
    place = chain.place(generation)
    samples = sample_indices(ctx, unlabeled, chain.run)
    pseudo = make_pseudo(ctx, recipe, chain, generation, teachers, unlabeled, samples)
    services = copies_services(ctx, recipe, chain)
    recipe.copies.score(pseudo, services)
    write_samples(ctx, chain, generation, pseudo, unlabeled, samples)
    generator = seed_everything(derive_seed(cfg.seed, "copies", *place.key().values()))
    pseudo_pairs = recipe.copies.pairs(pseudo, unlabeled.stems,
                                       copy_params(ctx, recipe, generation), generator, services)
    extra = pseudo_quality(ctx, pseudo, unlabeled)
    online = recipe.trainer.name if recipe.trainer.USES_UNLABELED else None
    note = low_yield_note(len(pseudo), len(unlabeled), pseudo.im_fraction, online)
    if note:
        log.warning(f"{chain.approach} r{chain.run} n{chain.n_teachers or '-'} g{generation}: "
                    f"{note}")
        extra["note"] = note
    return Split.concat([labeled_train, pseudo_pairs]), extra


LOW_YIELD = 0.05
"""Below this share of the unlabeled images kept, a generation is flagged."""


def low_yield_note(kept: int, total: int, im_fraction: float | None,
                   trainer: str | None = None) -> str:
    """A plain sentence when a labeler kept no pseudo pair or under 5 % of the images
    (the students then learn from little more than the labeled set); else ''. ``trainer``:
    the students' trainer when it also learns from the unlabeled images itself."""
    if total == 0 or kept >= LOW_YIELD * total:
        return ""
    head = (f"the labeler kept no pseudo pair of {total} unlabeled images" if kept == 0 else
            f"the labeler kept only {kept} of {total} unlabeled images ({kept / total:.1%})")
    if im_fraction is not None:
        why = (f"the teachers disagree on most images (inconsistency mask {im_fraction:.1%} of "
               "the pixels on average); stronger or more similar teachers (more labeled images, "
               "more epochs) or fewer of them keep more")
    else:
        why = "its rule dropped the rest (empty predictions or scores under the threshold)"
    rest = (f", plus the unlabeled images through the {trainer} trainer's own loss" if trainer
            else " only")
    return f"{head}: {why}; the students train on the labeled set and these pairs{rest}"


# ------------------------------------------------------------------------------ a chain
def run_chain(ctx: RunContext, recipe: Recipe, chain: Chain) -> list[dict]:
    """All generations of one chain; returns every student row it produced.

    Generation 0 is the recipe's start stage (LDT or ALDT, trained with the recipe's
    trainer); each generation's teachers come from the stage before.
    """
    labeled, unlabeled = ctx.splits_for_run(chain.run)
    if len(unlabeled) == 0:
        raise DataError(f"{ctx.data_dir / 'train_unlabeled'}: no unlabeled images to pseudo-label")
    stage_rows = run_benchmark(ctx, recipe.start.name, chain.run, recipe.start_trainer)
    ctx = chain_context(ctx, recipe)
    labeled_train = augmented_labeled_set(ctx, chain.run) if recipe.start.AUGMENTED_LABELED \
        else labeled
    produced: list[dict] = []
    for generation in range(1, recipe.generation_count(ctx.config) + 1):
        teachers = choose_teachers(recipe, stage_rows, chain.n_teachers)
        stage_rows = run_generation(ctx, recipe, chain, generation, teachers, labeled_train,
                                    unlabeled)
        produced.extend(stage_rows)
    return produced
