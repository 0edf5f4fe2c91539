"""The EvalNet stage and the three EvalNet approaches end to end through the loop."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch
import yaml

from imseg.config import build_config
from imseg.errors import DataError
from imseg.evalnet.select import load_selection, selection_path
from imseg.experiment.benchmarks import augmented_labeled_set
from imseg.experiment.context import RunContext
from imseg.experiment.evalnet_stage import (
    EVALNET,
    IM_PLUS_PLUS,
    auto_thresholds,
    check_retrained,
    ensemble_scorer,
    prepare_evalnets,
    scoring_services,
)
from imseg.experiment.loop import Chain, choose_teachers, make_pseudo, sample_indices
from imseg.experiment.recipes import recipes_of, resolve_recipes
from imseg.experiment.runner import run_study
from imseg.pseudo.copies import copies_by_score
from imseg.pseudo.labelers import PartServices

APPROACHES = ["evalnet", "im_plus_plus", "aim_plus_plus"]
CONFIG = {
    "device": "cpu",
    "train": {"alpha": 0.25, "epochs": 1, "batch_size": 8, "bn_momentum": 0.1,
              "eval_batch_size": 32},
    "benchmark": {"candidates": 2, "keep": 2, "aldt_copies": 1},
    "ssl": {"approaches": APPROACHES, "generations": 2, "teachers": [2], "runs": 1,
            "students": 2, "samples_per_generation": 1,
            "inconsistency": {"binary_filter": False}},
    # select everything (one-epoch teachers score low); the copy range is chosen on val
    "evalnet": {"alpha": 0.25, "count": 2, "keep": 1, "epochs": 1, "batch_size": 8,
                "train_loops": 2, "val_loops": 1, "threshold": 0.0},
}


@pytest.fixture(scope="module")
def data64(tmp_path_factory):
    from imseg.data.sources.sample import prepare_sample

    out = tmp_path_factory.mktemp("sample64") / "data"
    prepare_sample("binary", out, n=20, size=64, seed=2)
    return out


def test_recipes_name_their_evalnet_kinds():
    recipes = recipes_of(build_config())
    assert recipes["evalnet"].needs.evalnet_kinds == (EVALNET,)
    assert recipes["im_plus_plus"].needs.evalnet_kinds == (IM_PLUS_PLUS,)
    assert recipes["aim_plus_plus"].needs.evalnet_kinds == (IM_PLUS_PLUS,)
    assert recipes["im_plus"].needs.evalnet_kinds == ()
    # the kind that scores the pairs comes first (the copies' thresholds are its)
    assert recipes["evalnet"].needs.evalnet_kinds[0] == EVALNET
    assert recipes["aim_plus_plus"].needs.evalnet_kinds[0] == IM_PLUS_PLUS


def test_auto_thresholds_follow_the_stage_models():
    pred = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    true = torch.tensor([0.9, 0.7, 0.8, 0.2, 0.4])
    # at least 2 masks pass; top-k means 0.9 0.8 0.8 0.65 0.6; pairs of neighbours
    # (ranks k-1, k) average 0.8 0.75 0.5 0.3 from k = 2 on
    ldt = [{"stage": "ldt", "val_iou": 0.4}, {"stage": "ldt", "val_iou": 0.6}]
    aldt = [{"stage": "aldt", "val_iou": 0.8}]
    out = auto_thresholds(pred, true, ldt, ldt + aldt, min_fraction=0.4)
    assert out["targets"] == {"threshold": 0.8, "min_threshold": 0.5, "max_threshold": 0.6}
    assert out["threshold"] == pytest.approx(0.7)  # the top 3 average 0.8
    assert out["min_threshold"] == pytest.approx(0.6)  # ranks 3-4 average 0.5
    assert out["max_threshold"] == pytest.approx(0.7)  # ranks 2-3 average 0.75
    assert out["n_val"] == 5


def test_config_thresholds_win_over_automatic_ones():
    cfg = build_config(overrides={"evalnet": {"threshold": 0.75, "min_threshold": 0.72,
                                              "max_threshold": 0.75}})
    recipes = recipes_of(cfg)
    ctx = SimpleNamespace(config=cfg)  # nothing is trained or read when the config decides
    services = scoring_services(ctx, 0, IM_PLUS_PLUS, IM_PLUS_PLUS)
    assert recipes["evalnet"].labeler.threshold_in(services) == 0.75
    assert recipes["im_plus_plus"].copies.score_range(services) == (0.72, 0.75)
    assert recipes["im_plus_plus"].copies.score_range(PartServices()) == (0.72, 0.75)


def test_evalnet_stage_trains_and_scores_at_32_px(binary_data, tmp_path):
    cfg = build_config(overrides={**CONFIG, "ssl": {**CONFIG["ssl"], "approaches": ["evalnet"]}})
    ctx = RunContext.open(binary_data, tmp_path / "run", cfg, progress=False)
    assert tuple(ctx.dataset.info.image_size) == (32, 32)
    prepare_evalnets(ctx, 0, resolve_recipes(cfg, cfg.ssl.approaches))
    ev = _csv(ctx.run_dir / "evalnet_results.csv")
    assert [(r["kind"], int(r["index"])) for r in ev] == [(EVALNET, 0), (EVALNET, 1)]
    assert all(0.0 <= float(r["val_mae"]) <= 1.0 for r in ev)
    val = ctx.dataset.val
    scores = ensemble_scorer(ctx, 0, EVALNET)(val.images, val.labels)
    assert scores.shape == (len(val),)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    _release(ctx)


def test_a_damaged_evalnet_names_the_way_out_and_deleting_it_retrains_it(binary_data, tmp_path):
    cfg = build_config(overrides={**CONFIG, "ssl": {**CONFIG["ssl"], "approaches": ["evalnet"]}})
    ctx = RunContext.open(binary_data, tmp_path / "run", cfg, progress=False)
    recipes = resolve_recipes(cfg, cfg.ssl.approaches)
    prepare_evalnets(ctx, 0, recipes)
    before = _csv(ctx.run_dir / "evalnet_results.csv")
    kept = next(r for r in before if r["kept"] == "true")
    path = ctx.run_dir / kept["checkpoint"]
    path.write_bytes(path.read_bytes()[:100])  # a copy cut short
    with pytest.raises(DataError, match="delete it and run the same imseg run command again"):
        ensemble_scorer(ctx, 0, EVALNET)(ctx.dataset.val.images, ctx.dataset.val.labels)
    path.unlink()  # the documented way out: exactly that EvalNet is trained again
    prepare_evalnets(ctx, 0, recipes)
    after = _csv(ctx.run_dir / "evalnet_results.csv")
    assert path.is_file() and len(after) == len(before)
    again = next(r for r in after if r["index"] == kept["index"])
    assert float(again["val_mae"]) == pytest.approx(float(kept["val_mae"]), abs=1e-6)
    _release(ctx)


def test_an_evalnet_trained_again_differently_stops_a_run_that_used_it(tmp_path):
    ssl_row = {"stage": "ssl", "run": 0}
    ctx = SimpleNamespace(results=SimpleNamespace(rows=[ssl_row]), run_dir=tmp_path)
    old = {"kind": EVALNET, "run": 0, "index": 1, "val_mae": 0.2,
           "checkpoint": "evalnets/evalnet/r0/e1.pt"}
    check_retrained(ctx, old, {**old, "val_mae": 0.2 + 1e-6})  # the same net: goes on
    check_retrained(ctx, None, {**old, "val_mae": 0.5})  # nothing was lost: goes on
    with pytest.raises(DataError, match="came out different.*1 SSL models of run 0"):
        check_retrained(ctx, old, {**old, "val_mae": 0.5})
    ctx.results.rows = []  # nothing learned from it yet: the new one takes its place
    check_retrained(ctx, old, {**old, "val_mae": 0.5})


def _release(ctx: RunContext) -> None:
    """Let go of the run folder's lock, as a finished process would."""
    ctx.close()


def _csv(path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_evalnet_approaches_run_end_to_end_and_resume(data64, tmp_path):
    cfg = build_config(overrides=CONFIG)
    ctx = RunContext.open(data64, tmp_path / "run", cfg, progress=False)
    run_study(ctx)
    rows = ctx.results.rows
    labeled, unlabeled = ctx.splits_for_run(0)
    n_lab, n_val = len(labeled), len(ctx.dataset.val)
    by = {(r["approach"], r["generation"]): r for r in rows if r["stage"] == "ssl"}
    for name in APPROACHES:
        for g in (1, 2):
            assert (name, g) in by, (name, g)
        assert by[(name, 1)]["pseudo_iou"] is not None

    # EvalNet approach: labeled pairs plus the accumulated selection (no copies)
    chain = Chain("evalnet", 0, None)
    sel = [load_selection(selection_path(ctx.run_dir, chain.place(g).folder())) for g in (1, 2)]
    assert len(sel[0].source) == len(unlabeled)  # threshold 0: every image selected
    assert set(sel[0].source.tolist()) <= set(sel[1].source.tolist())
    for g in (1, 2):
        assert by[("evalnet", g)]["n_train_pairs"] == n_lab + len(sel[g - 1].source)

    # IM++ / AIM++ generation 1: 1-5 copies per IM pair by the ensemble's score
    recipes = recipes_of(cfg)
    low, high = recipes["im_plus_plus"].copies.score_range(
        scoring_services(ctx, 0, IM_PLUS_PLUS, IM_PLUS_PLUS))
    assert 0.0 <= low <= high <= 1.0
    ldt_rows = [r for r in rows if r["stage"] == "ldt"]
    for name, base in (("im_plus_plus", n_lab), ("aim_plus_plus", None)):
        chain = Chain(name, 0, 2)
        teachers = choose_teachers(recipes[name], ldt_rows if name == "im_plus_plus" else
                                   [r for r in rows if r["stage"] == "aldt"], 2)
        pseudo = make_pseudo(ctx, recipes[name], chain, 1, teachers, unlabeled,
                             sample_indices(ctx, unlabeled, 0))
        scores = ensemble_scorer(ctx, 0, IM_PLUS_PLUS)(pseudo.images, pseudo.labels)
        copies = int(copies_by_score(scores, low, high).sum())
        assert len(pseudo) <= copies <= 5 * len(pseudo)
        if base is None:  # augmented labeled set, and the IM pairs kept beside the copies
            base = len(augmented_labeled_set(ctx, 0)) + len(pseudo)
        assert by[(name, 1)]["n_train_pairs"] == base + copies

    # EvalNet quality rows: count per kind, the best `keep` marked, sizes of the data
    ev = _csv(ctx.run_dir / "evalnet_results.csv")
    for kind, n_train, n_val_rows in ((EVALNET, (2 + 2) * n_lab + n_lab, 4 * n_val),
                                      (IM_PLUS_PLUS, 2 * n_lab, n_val)):
        mine = [r for r in ev if r["kind"] == kind]
        assert [int(r["index"]) for r in mine] == [0, 1]
        assert sum(r["kept"] == "true" for r in mine) == 1
        kept = next(r for r in mine if r["kept"] == "true")
        assert float(kept["val_mae"]) == min(float(r["val_mae"]) for r in mine)
        assert all(int(r["n_train"]) == n_train and int(r["n_val"]) == n_val_rows for r in mine)
        assert (ctx.run_dir / kept["checkpoint"]).is_file()
    thresholds = yaml.safe_load((ctx.run_dir / "evalnet_thresholds.yaml").read_text())
    assert set(thresholds) == {EVALNET, IM_PLUS_PLUS}
    assert thresholds[IM_PLUS_PLUS][0]["min_threshold"] == pytest.approx(low)

    # a second start trains nothing: same rows, same EvalNet files
    stamps = {p: p.stat().st_mtime_ns for p in (ctx.run_dir / "evalnets").rglob("*.pt")}
    _release(ctx)
    again = RunContext.open(data64, tmp_path / "run", cfg, progress=False)
    run_study(again)
    assert len(again.results.rows) == len(rows)
    assert _csv(ctx.run_dir / "evalnet_results.csv") == ev
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
