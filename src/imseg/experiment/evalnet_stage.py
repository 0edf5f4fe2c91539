"""The EvalNet stage of a run: train the EvalNets a study needs, then serve their scores.

Two kinds of EvalNet, one per kind of training data (docs/method.md §6):

* ``evalnet`` (the EvalNet approach): learns from every LDT and ALDT model's
  masks of the labeled images and the true masks;
* ``im_plus_plus`` (IM++, AIM++): learns from inconsistency-masked pairs built
  from random subsets of LDT models.

Per kind and run, ``evalnet.count`` nets are trained (resumable: a net with a
row in ``RUN/evalnet_results.csv`` is done), the ``evalnet.keep`` best by val
MAE are kept and averaged. Thresholds are chosen from the kept ensemble's val
predictions (rule: :mod:`imseg.evalnet.stats`) and written, with the targets
they were chosen for, to ``RUN/evalnet_thresholds.yaml``; the parts that use
them (``evalnet_select``, copies by score) take them where their own settings
are empty, through :func:`scoring_services`.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import yaml

from imseg.data.dataset import Split
from imseg.errors import DataError
from imseg.evalnet.data import (
    Blocking,
    EvalNetData,
    im_data,
    prediction_data,
    stage_labels,
)
from imseg.evalnet.ensemble import (
    EvalNetEnsemble,
    build_evalnet,
    checkpoint_spec,
    load_evalnet,
)
from imseg.evalnet.stats import threshold_for_target
from imseg.evalnet.table import NETS, RESULTS_FILE, EvalNetTable
from imseg.evalnet.train import train_evalnet
from imseg.experiment.benchmarks import augment_params, run_benchmark
from imseg.experiment.context import RunContext
from imseg.experiment.recipes import Recipe
from imseg.experiment.stages import SAME_SCORE, load_models
from imseg.experiment.watch import watch_evalnet
from imseg.logs import evalnet_line, log
from imseg.pseudo.labelers import PartServices, Scorer
from imseg.runtime import derive_seed, seed_everything
from imseg.storage import atomic_write_text, save_checkpoint

EVALNET = "evalnet"
IM_PLUS_PLUS = "im_plus_plus"
KINDS = (EVALNET, IM_PLUS_PLUS)
THRESHOLDS_FILE = "evalnet_thresholds.yaml"


# ------------------------------------------------------------------------- which kinds
def prepare_evalnets(ctx: RunContext, run: int, recipes: dict[str, Recipe]) -> None:
    """Train (or resume) for ``run`` every EvalNet kind the recipes' parts need
    (:attr:`Recipe.needs`: selection needs ``evalnet``, copies by score ``im_plus_plus``)."""
    needed = {k for r in recipes.values() for k in r.needs.evalnet_kinds}
    for kind in KINDS:
        if kind in needed:
            prepare_kind(ctx, run, kind)


# ------------------------------------------------------------------------------ data
def source_rows(ctx: RunContext, run: int, kind: str) -> list[dict]:
    """The stage models whose masks make a kind's data (all candidates; trained if needed)."""
    rows = list(run_benchmark(ctx, "ldt", run))
    if kind == EVALNET:
        rows += run_benchmark(ctx, "aldt", run)
    return rows


def kind_data(ctx: RunContext, run: int, kind: str, part: str,
              models: list[torch.nn.Module]) -> EvalNetData:
    """The ``train`` (labeled images) or ``val`` data of a kind, built in batches."""
    cfg = ctx.config
    split: Split = ctx.splits_for_run(run)[0] if part == "train" else ctx.dataset.val
    bs = cfg.train.eval_batch
    labels = stage_labels(ctx.task, models, split.images, ctx.device, bs, cfg.train.amp)
    if kind == EVALNET:
        return prediction_data(ctx.task, labels, split, part == "train", ctx.device)
    im = cfg.ssl.inconsistency
    blocking = Blocking(im.block_input, im.block_output, cfg.train.ignore_im)
    loops = cfg.evalnet.train_loops if part == "train" else cfg.evalnet.val_loops
    generator = seed_everything(derive_seed(cfg.seed, "evalnet-data", kind, run, part))
    params = augment_params(cfg.augment, ctx.dataset.info.rotate)
    return im_data(ctx.task, labels, split, loops, blocking, params, generator, ctx.device,
                   cfg.ssl.pseudo_batch_size)


# -------------------------------------------------------------------------- training
def checkpoint_path(ctx: RunContext, kind: str, run: int, index: int) -> Path:
    return ctx.run_dir / NETS / kind / f"r{run}" / f"e{index}.pt"


def table_of(ctx: RunContext) -> EvalNetTable:
    return EvalNetTable(ctx.run_dir / RESULTS_FILE)


def train_one(ctx: RunContext, kind: str, run: int, index: int, train: EvalNetData,
              val: EvalNetData) -> dict:
    """Train EvalNet ``index`` of a kind and run, save it; return its results row."""
    cfg = ctx.config
    seed = derive_seed(cfg.seed, "evalnet", kind, run, index)
    generator = seed_everything(seed)
    net = build_evalnet(ctx.task, ctx.dataset.info.channels, cfg.evalnet.alpha,
                        cfg.train.bn_momentum, generator)
    watch = watch_evalnet(ctx, kind, run, index)
    fit = train_evalnet(net, ctx.task, train, val, cfg.evalnet, ctx.device, generator,
                        cfg.train.eval_batch, cfg.train.amp,
                        desc=f"evalnet {kind} r{run} e{index}", progress=ctx.progress,
                        bn_stats=cfg.train.bn_stats, bn_stats_batches=cfg.train.bn_stats_batches,
                        on_epoch=watch.on_epoch)
    path = checkpoint_path(ctx, kind, run, index)
    save_checkpoint(path, {
        "model": checkpoint_spec(net, cfg.train.bn_momentum),
        "state_dict": fit.state,
        "task": {"kind": ctx.task.kind, "n_classes": ctx.task.n_classes},
        "place": {"kind": kind, "run": run, "index": index},
        "seed": seed,
        "config": cfg.model_dump(mode="json"),
        "val": {"mae": fit.val_mae, "spearman": fit.val_spearman},
    })
    row = {"kind": kind, "run": run, "index": index, "seed": seed, "val_mae": fit.val_mae,
           "val_spearman": fit.val_spearman, "n_train": len(train), "n_val": len(val),
           "kept": None, "best_epoch": fit.best_epoch, "seconds": round(fit.seconds, 2),
           "checkpoint": str(path.relative_to(ctx.run_dir))}
    log.info(evalnet_line(row, cfg.evalnet.epochs))
    return watch.finish(row)


def prepare_kind(ctx: RunContext, run: int, kind: str) -> list[dict]:
    """Train the missing EvalNets of a kind and run, mark the kept ones, choose the
    automatic thresholds; a no-op when all of that is done. Returns the kept rows."""
    cfg = ctx.config.evalnet
    table = table_of(ctx)
    rows = [table.get(kind, run, k) for k in range(cfg.count)]
    if all(r is not None and r["kept"] is not None for r in rows) and \
            run in read_thresholds(ctx).get(kind, {}):
        return [r for r in rows if r and r["kept"]]
    sources = source_rows(ctx, run, kind)
    models = load_models(ctx, sources)
    val = kind_data(ctx, run, kind, "val", models)
    train: EvalNetData | None = None
    left = sum(r is None for r in rows)
    if left:
        log.info(f"evalnet {kind} r{run}: training {left} of {cfg.count} EvalNets "
                 f"({len(sources)} source models, {len(val)} val pairs)")
    for k, row in enumerate(rows):
        if row is None:
            train = train if train is not None else kind_data(ctx, run, kind, "train", models)
            new = train_one(ctx, kind, run, k, train, val)
            try:
                check_retrained(ctx, table.lost_row(kind, run, k), new)
            except DataError:  # the old one's row stays; a rerun must not take this file
                (ctx.run_dir / new["checkpoint"]).unlink(missing_ok=True)
                raise
            table.add(new)
    kept = table.mark_kept(kind, run, cfg.keep)
    ensemble = ensemble_of(ctx, kept)
    predicted = ensemble.predict(val.images, val.masks, val.index).score
    ldt = [r for r in sources if r["stage"] == "ldt"]
    write_thresholds(ctx, kind, run, auto_thresholds(predicted, val.targets.score, ldt, sources,
                                                     cfg.auto_min_fraction))
    return kept


RECOVER_EVALNET = ("delete it and run the same imseg run command again: that EvalNet is "
                   "trained again (and the run stops if it comes out different from the one "
                   "its run's pseudo labels were chosen with)")
"""The way out of a damaged EvalNet checkpoint."""


def check_retrained(ctx: RunContext, old: dict | None, new: dict) -> None:
    """An EvalNet trained again because its checkpoint was gone must equal the old one
    while SSL models of its run exist (their pseudo pairs were chosen or scored with it)."""
    if old is None:
        return
    later = [r for r in ctx.results.rows if r["stage"] == "ssl" and r["run"] == new["run"]]
    before, now = old.get("val_mae"), new.get("val_mae")
    same = before is not None and now is not None and math.isclose(before, now, abs_tol=SAME_SCORE)
    if later and not same:
        raise DataError(
            f"{ctx.run_dir / old['checkpoint']}: the EvalNet {new['kind']} r{new['run']} "
            f"e{new['index']} was trained again but came out different (val MAE {before} "
            f"before, {now} now), and {len(later)} SSL models of run {new['run']} may have "
            "learned from pseudo labels it chose; restore its checkpoint, or delete their rows "
            "from results.csv to train them again too, or start a new run folder")


# ------------------------------------------------------------------------ thresholds
def auto_thresholds(predicted: torch.Tensor, true: torch.Tensor, ldt_rows: list[dict],
                    source_rows: list[dict], min_fraction: float) -> dict:
    """Thresholds chosen on val (rule in :mod:`imseg.evalnet.stats`), with their targets.

    ``threshold`` (selection): the selected masks as good, on average, as the best
    source model's; ``min_threshold`` / ``max_threshold`` (copies): masks at that
    score as good as the average / the best LDT model's.
    """
    ldt = [float(r["val_iou"]) for r in ldt_rows if r.get("val_iou") is not None]
    every = [float(r["val_iou"]) for r in source_rows if r.get("val_iou") is not None]
    targets = {"threshold": max(every), "min_threshold": sum(ldt) / len(ldt),
               "max_threshold": max(ldt)}
    out = {k: threshold_for_target(predicted, true, v, min_fraction, local=k != "threshold")
           for k, v in targets.items()}
    out["max_threshold"] = max(out["max_threshold"], out["min_threshold"])
    return {**{k: round(v, 6) for k, v in out.items()},
            "targets": {k: round(v, 6) for k, v in targets.items()},
            "n_val": int(predicted.numel())}


def thresholds_path(ctx: RunContext) -> Path:
    return ctx.run_dir / THRESHOLDS_FILE


def read_thresholds(ctx: RunContext) -> dict:
    """``{kind: {run: {...}}}`` from RUN/evalnet_thresholds.yaml (empty when absent)."""
    path = thresholds_path(ctx)
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def write_thresholds(ctx: RunContext, kind: str, run: int, values: dict) -> None:
    data = read_thresholds(ctx)
    data.setdefault(kind, {})[run] = values
    atomic_write_text(thresholds_path(ctx), yaml.safe_dump(data, sort_keys=True))


def auto_values(ctx: RunContext, run: int, kind: str) -> dict:
    """The automatic thresholds of a kind and run (training its EvalNets when needed)."""
    values = read_thresholds(ctx).get(kind, {}).get(run)
    if values is None:
        prepare_kind(ctx, run, kind)
        values = read_thresholds(ctx)[kind][run]
    return values


# -------------------------------------------------------------------------- ensembles
def ensemble_of(ctx: RunContext, rows: list[dict]) -> EvalNetEnsemble:
    nets = [_load(ctx.run_dir / r["checkpoint"]).to(ctx.device).eval() for r in rows]
    return EvalNetEnsemble(nets, ctx.task, ctx.device, ctx.config.train.eval_batch,
                           ctx.config.train.amp)


def _load(path: Path) -> torch.nn.Module:
    """An EvalNet of the run folder; a damaged file is a DataError saying how to recover."""
    try:
        return load_evalnet(path)
    except DataError as exc:
        raise DataError(f"{exc}; {RECOVER_EVALNET}") from None


def load_ensemble(ctx: RunContext, run: int, kind: str) -> EvalNetEnsemble:
    """The kept EvalNets of a kind and run (trained first when missing)."""
    kept = [r for r in table_of(ctx).select(kind, run) if r["kept"]]
    if not kept:
        kept = prepare_kind(ctx, run, kind)
    return ensemble_of(ctx, kept)


def ensemble_scorer(ctx: RunContext, run: int, kind: str) -> Scorer:
    """The run's EvalNet ensemble of ``kind`` as a scorer, loaded on its first use."""
    loaded: list[EvalNetEnsemble] = []

    def score(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        if not loaded:
            loaded.append(load_ensemble(ctx, run, kind))
        return loaded[0].score(images, masks)

    return score


def scoring_services(ctx: RunContext, run: int, scorer_kind: str,
                     thresholds_kind: str) -> PartServices:
    """What a part that needs EvalNets gets: the ensemble of ``scorer_kind`` and the
    thresholds chosen on val for ``thresholds_kind`` (both read on first use)."""
    return PartServices(scorer=ensemble_scorer(ctx, run, scorer_kind),
                        auto_thresholds=lambda: auto_values(ctx, run, thresholds_kind))
