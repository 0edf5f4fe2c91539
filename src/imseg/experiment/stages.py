"""Train the candidates of one stage, resumably: a checkpoint and a results row per model,
and while a model trains, its snapshot (:mod:`imseg.training.snapshot`), so that a stop
inside it costs at most ``train.snapshot_minutes``.

A model whose row is unmatched (:mod:`imseg.results`: its checkpoint was deleted or
lost) is trained again. Its seed follows from its place, so on the same device it
comes out the same; when it does not and models trained later in the run may have
learned from the old one (:func:`imseg.results.learned_from`), the run stops and says
so rather than mix them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from imseg.csvrows import format_cell
from imseg.data.dataset import Split
from imseg.errors import DataError
from imseg.evalnet.table import RESULTS_FILE, EvalNetTable
from imseg.experiment.context import RunContext
from imseg.experiment.watch import watch_model
from imseg.logs import log, model_line, place_name, stage_name
from imseg.models.checkpoint import CheckpointMeta, ModelSpec, checkpoint_payload, read_checkpoint
from imseg.models.grouped import why_spec_not_groupable
from imseg.models.unet import count_parameters
from imseg.results import Place, checkpoint_name, learned_from
from imseg.runtime import derive_seed, seed_everything
from imseg.storage import save_checkpoint
from imseg.training import distributed
from imseg.training.fit import EpochFn, FitResult, fit
from imseg.training.fused import fit_fused, fusable, use_fused
from imseg.training.inference import evaluate_model
from imseg.training.snapshot import SUFFIX, Snapshots


def checkpoint_path(ctx: RunContext, place: Place) -> Path:
    return ctx.run_dir / checkpoint_name(place.key())


def model_spec(ctx: RunContext, alpha: float, encoder: str | None = None) -> ModelSpec:
    """The net a new model of the run gets: the config's ``model`` section, ``alpha`` as
    the tiny U-Net's width, ``encoder`` instead of the section's (a growing student's)."""
    cfg = ctx.config
    return ModelSpec.from_config(cfg.model, ctx.dataset.info.channels, ctx.task.out_channels,
                                 alpha, cfg.train.bn_momentum, encoder)


RECOVER = ("delete it and run the same imseg run/train command again: that model is trained "
           "again (and the run stops if it comes out different from the one later models "
           "learned from)")
"""The way out of a damaged checkpoint in a run folder."""


def read_run_checkpoint(path: Path, row: dict | None = None) -> tuple[nn.Module, CheckpointMeta]:
    """A run folder's checkpoint (of results ``row`` when given): a damaged file, or one
    that records another model than the row, is a DataError saying how to recover."""
    try:
        model, meta = read_checkpoint(path)
    except DataError as exc:
        raise DataError(f"{exc}; {RECOVER}") from None
    why = "" if row is None else _other_model(meta, row)
    if why:
        raise DataError(f"{path}: not the model of its results row {place_name(row)} ({why}); "
                        f"{RECOVER}")
    return model, meta


SAME_SCORE = 1e-4
"""Validation scores this close are the same model trained again (the CSV keeps 6 digits)."""


def _other_model(meta: CheckpointMeta, row: dict) -> str:
    """How a checkpoint's own record contradicts a results row, or ''."""
    if meta.place and any(format_cell(meta.place.get(k)) != format_cell(row.get(k))
                          for k in Place.__dataclass_fields__):
        return f"it records {place_name(meta.place)}"
    recorded = meta.val.get("iou")
    if recorded is not None and row.get("val_iou") is not None \
            and not math.isclose(recorded, row["val_iou"], abs_tol=SAME_SCORE):
        return f"it records val IoU {recorded:.4f}, the row {row['val_iou']:.4f}"
    return ""


def _same_scores(old: dict, new: dict) -> bool:
    """Whether a model trained again scores as the row of the one it replaces."""
    for column in ("val_iou", "val_dice"):
        a, b = old.get(column), new.get(column)
        if (a is None) != (b is None) or (a is not None and not math.isclose(a, b, abs_tol=SAME_SCORE)):
            return False
    return True


def _check_retrained(ctx: RunContext, row: dict) -> None:
    """A model trained again because its row was unmatched must equal the old one while
    models that may have learned from it are kept (they would mix two teachers)."""
    old = ctx.results.previous(**{k: row[k] for k in Place.__dataclass_fields__})
    if old is None:
        return
    later = [stage_name(r) for r in learned_from(ctx.results.rows, old.row)]
    if old.row["stage"] != "ssl":  # a start stage's models also train its run's EvalNets
        later += [f"evalnet {r['kind']} r{r['run']}" for r in
                  EvalNetTable(ctx.run_dir / RESULTS_FILE).rows if r["run"] == row["run"]]
    if later and not _same_scores(old.row, row):
        stages = ", ".join(sorted(set(later)))
        raise DataError(
            f"{ctx.results.path}: {place_name(row)} was trained again ({old.why}) but came out "
            f"different (val IoU {_score(old.row)} before, {_score(row)} now), and "
            f"{len(later)} later models may have learned from the old one ({stages}); restore "
            "its checkpoint, or delete their rows from results.csv to train them again too, "
            "or start a new run folder")
    log.info(f"{place_name(row)}: trained again ({old.why})")


def _score(row: dict) -> str:
    return "-" if row.get("val_iou") is None else f"{row['val_iou']:.4f}"


@dataclass
class _Candidate:
    """A model about to be trained: its place, seed, seed-drawn generator and first weights."""

    place: Place
    seed: int
    generator: torch.Generator
    model: nn.Module
    spec: ModelSpec


def _start(ctx: RunContext, place: Place, alpha: float, init: Path | None,
           encoder: str | None = None) -> _Candidate:
    """Seed from the place, then build (or load) the net: the build draws from the seeded
    global RNG, so seeding and building stay together per model."""
    seed = derive_seed(ctx.config.seed, *place.key().values())
    generator = seed_everything(seed)
    if init is not None:
        model, meta = read_run_checkpoint(init)
        return _Candidate(place, seed, generator, model, meta.spec)
    spec = model_spec(ctx, alpha, encoder)
    return _Candidate(place, seed, generator, spec.build(pretrained=True), spec)


def _desc(place: Place, candidate: bool = True) -> str:
    text = f"{place.approach} r{place.run} n{place.n_teachers or '-'} g{place.generation}"
    return f"{text} c{place.candidate}" if candidate else text


def _finish(ctx: RunContext, cand: _Candidate, result: FitResult, train: Split, alpha: float,
            extra: dict | None) -> dict:
    """Test the trained model, write its checkpoint, then its results row (in that order, so
    a row always has its checkpoint)."""
    cfg, info, place, model = ctx.config, ctx.dataset.info, cand.place, cand.model
    test = evaluate_model(model, ctx.dataset.test, ctx.task, ctx.device,
                          cfg.train.eval_batch, cfg.train.amp, test=True)
    path = checkpoint_path(ctx, place)
    row = {
        **place.key(),
        "seed": cand.seed,
        "model": cand.spec.name,
        "alpha": alpha,
        "params": count_parameters(model),
        "n_train_pairs": len(train),
        "val_iou": result.val.get("iou"),
        "val_dice": result.val.get("dice"),
        "test_iou": test.get("iou"),
        "test_dice": test.get("dice"),
        "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 2),
        "checkpoint": str(path.relative_to(ctx.run_dir)),
        "test_details": _details(test),
        "settings": ctx.settings_id or None,
        **(extra or {}),
    }
    _check_retrained(ctx, row)
    save_checkpoint(path, checkpoint_payload(
        cand.spec, result.state, info,
        place=place.key(), seed=cand.seed, config=cfg.model_dump(mode="json"),
        val=_plain(result.val), test=_plain(test),
    ))
    ctx.results.add(row)
    log.info(model_line(row, len(result.history)))
    return ctx.results.get(**place.key())  # type: ignore[return-value]


def train_candidate(
    ctx: RunContext,
    place: Place,
    train: Split,
    alpha: float,
    extra: dict | None = None,
    init: Path | None = None,
    epochs: int | None = None,
    epoch_fn_factory=None,
    encoder: str | None = None,
) -> dict:
    """Train the model at ``place`` unless its row exists; return its results row.

    ``init`` starts from a checkpoint (fine-tuning); ``epoch_fn_factory(model_seed_generator)``
    builds a custom epoch (consistency loss). ``extra`` adds columns such as
    pseudo-label quality to the row. ``encoder``: a growing student's (smp models).
    """
    done = ctx.results.get(**place.key())
    if done is not None:
        model_snapshots(ctx, place).remove()  # a run stopped between checkpoint and removal
        return done
    cand = _start(ctx, place, alpha, init, encoder)
    epoch_fn: EpochFn | None = epoch_fn_factory(cand.generator) if epoch_fn_factory else None
    snapshots = model_snapshots(ctx, place, [place], [cand.seed])
    watch = watch_model(ctx, place, _say_resuming(snapshots, place_name(place.key())))
    result = fit(cand.model, ctx.task, train, ctx.dataset.val, ctx.config.train, ctx.device,
                 cand.generator, epochs=epochs, epoch_fn=epoch_fn, desc=_desc(place),
                 progress=ctx.progress, on_epoch=watch.on_epoch, snapshots=snapshots)
    row = watch.finish(_finish(ctx, cand, result, train, alpha, extra))
    snapshots.remove()
    return row


FUSED = "fused"
"""The snapshot of a stage's models trained fused: ``models/<approach>/r0_g0/fused.unfinished``."""


def model_snapshots(ctx: RunContext, place: Place, places: list[Place] | None = None,
                    seeds: list[int] | None = None) -> Snapshots:
    """Where the model at ``place`` keeps its training state while unfinished (``c2.unfinished``
    beside ``c2.pt``; a fused group of several ``places``: ``fused.unfinished``), as
    ``train.snapshot_minutes`` asks; never under torchrun (each process would write it). It
    belongs to the models at ``places`` with ``seeds``, under the run's settings."""
    minutes = ctx.config.train.snapshot_minutes
    every = None if minutes is None or distributed.active() else 60.0 * minutes
    path = checkpoint_path(ctx, place).with_suffix(SUFFIX)
    if places is not None and len(places) > 1:
        path = path.with_name(FUSED + SUFFIX)
    identity = {"models": [p.key() for p in places or [place]], "seeds": seeds,
                "settings": ctx.settings_id}
    return Snapshots(path, identity, every)


def _say_resuming(snapshots: Snapshots, what: str) -> int:
    """The epoch training starts at, said in the log when it is not the first."""
    first = snapshots.first_epoch()
    if first > 1:
        log.info(f"{what}: resuming at epoch {first} ({snapshots.path.name})")
    return first


def train_stage(ctx: RunContext, place: Place, count: int, train: Split, alpha: float,
                extra: dict | None = None, init: Path | None = None, epochs: int | None = None,
                epoch_fn_factory=None, encoder: str | None = None) -> list[dict]:
    """Train candidates 0..count-1 at ``place``; only those without a row (resume).

    With ``train.fuse`` (``always``, or ``auto`` on CUDA) the unfinished candidates train
    together as one grouped network (:mod:`imseg.training.fused`); each still gets its own
    seed, batch order, best epoch, checkpoint and row, the same as when trained alone.
    """
    places = [replace(place, candidate=c) for c in range(count)]
    todo = [p for p in places if ctx.results.get(**p.key()) is None]
    cfg = ctx.config
    if len(todo) > 1 and epoch_fn_factory is None and use_fused(cfg.train.fuse, ctx.device):
        # Ask the spec first: encoder models never group, so none are built for nothing.
        why = None if init is not None else why_spec_not_groupable(model_spec(ctx, alpha, encoder))
        cands = [] if why else [_start(ctx, p, alpha, init, encoder) for p in todo]
        why = why or fusable([c.model for c in cands])
        if why is None:
            snapshots = model_snapshots(ctx, place, [c.place for c in cands],
                                        [c.seed for c in cands])
            first = _say_resuming(snapshots, ", ".join(place_name(c.place.key()) for c in cands))
            watches = [watch_model(ctx, c.place, first) for c in cands]
            results = fit_fused([c.model for c in cands], ctx.task, train, ctx.dataset.val,
                                cfg.train, ctx.device, [c.generator for c in cands],
                                epochs=epochs, desc=f"{_desc(place, False)} x{len(cands)}",
                                progress=ctx.progress, on_epoch=[w.on_epoch for w in watches],
                                snapshots=snapshots)
            for cand, result, watch in zip(cands, results, watches, strict=True):
                watch.finish(_finish(ctx, cand, result, train, alpha, extra))
            snapshots.remove()
        else:
            log.info(f"{_desc(place, False)}: trained one at a time ({why})")
    rows = [train_candidate(ctx, p, train, alpha, extra, init, epochs, epoch_fn_factory, encoder)
            for p in places]
    if count > 1:  # a fused group's snapshot that a stop or a changed group left behind
        model_snapshots(ctx, place, places).remove()
    return rows


def load_models(ctx: RunContext, rows: list[dict]) -> list[nn.Module]:
    """The models of some results rows, on the run's device, in eval mode."""
    models = []
    for row in rows:
        model = read_run_checkpoint(ctx.run_dir / row["checkpoint"], row)[0].to(ctx.device)
        if ctx.config.train.channels_last:
            model.to(memory_format=torch.channels_last)
        models.append(model.eval())
    return models


def _plain(scores: dict) -> dict:
    return {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in scores.items()}


def _details(scores: dict) -> str:
    """Per-class test IoU etc. as compact JSON text for the CSV."""
    import json

    keep = {k: v for k, v in scores.items() if k not in ("iou", "dice")}
    return json.dumps(keep, default=float, separators=(",", ":")) if keep else ""
