"""Ranks, Spearman, MAE and the automatic threshold rule, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from imseg.evalnet.stats import mae, rankdata, spearman, threshold_for_target


def test_rankdata_averages_ties():
    assert rankdata(torch.tensor([10.0, 20.0, 10.0, 30.0])).tolist() == [1.5, 3.0, 1.5, 4.0]


def test_spearman_hand_cases():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(x, x * 10) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(x, torch.tensor([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.8)  # 1-6*2/60
    assert math.isnan(spearman(x, torch.ones(4)))


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (50,), generator=g).float()
    b = a + torch.randint(0, 4, (50,), generator=g).float()
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a.numpy(), b.numpy())[0], abs=1e-9)


def test_mae():
    assert mae(torch.tensor([0.5, 1.0]), torch.tensor([0.0, 1.0])) == pytest.approx(0.25)


PRED = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
TRUE = torch.tensor([0.9, 0.7, 0.8, 0.2, 0.4])
# running mean of the top k: 0.9, 0.8, 0.8, 0.65, 0.6


def test_threshold_is_the_lowest_score_whose_masks_reach_the_target():
    assert threshold_for_target(PRED, TRUE, 0.8) == pytest.approx(0.7)
    assert threshold_for_target(PRED, TRUE, 0.6) == pytest.approx(0.5)  # everything
    assert threshold_for_target(PRED, TRUE, 0.65) == pytest.approx(0.6)


def test_threshold_keeps_a_minimum_share_and_falls_back_to_it():
    # target 0.85 is reached only by the top mask, but at least 40 % (2 masks) must pass
    assert threshold_for_target(PRED, TRUE, 0.85, min_fraction=0.4) == pytest.approx(0.8)
    assert threshold_for_target(PRED, TRUE, 0.85, min_fraction=0.2) == pytest.approx(0.9)


def test_threshold_cuts_only_between_different_scores():
    pred = torch.tensor([0.9, 0.7, 0.7, 0.5])
    true = torch.tensor([1.0, 0.9, 0.1, 0.5])
    # the top two average 0.95, but a threshold of 0.7 keeps both 0.7s (mean 0.67)
    assert threshold_for_target(pred, true, 0.9, min_fraction=0.25) == pytest.approx(0.9)
    assert threshold_for_target(pred, true, 0.65, min_fraction=0.25) == pytest.approx(0.7)
    assert threshold_for_target(pred, true, 0.9, min_fraction=0.5) == pytest.approx(0.7)  # fallback


def test_local_threshold_looks_at_the_masks_near_the_cut():
    # windows of 2 (40 %): ranks 1-2 0.8, 2-3 0.75, 3-4 0.5, 4-5 0.3
    assert threshold_for_target(PRED, TRUE, 0.5, 0.4, local=True) == pytest.approx(0.6)
    assert threshold_for_target(PRED, TRUE, 0.5, 0.4) == pytest.approx(0.5)  # set mean 0.6
    assert threshold_for_target(PRED, TRUE, 0.76, 0.4, local=True) == pytest.approx(0.8)
    assert threshold_for_target(PRED, TRUE, 0.95, 0.4, local=True) == pytest.approx(0.8)  # fallback
