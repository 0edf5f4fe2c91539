"""Scores from hand-made ensemble probabilities: IM share (overall and per class) and the
ensemble's entropy."""

from __future__ import annotations

import pytest
import torch

from imseg.active.scores import mean_entropy, score_image
from imseg.tasks import Task


def test_binary_im_share_and_entropy():
    task = Task("binary", 1)
    p = torch.full((3, 1, 4, 4), 0.9)
    p[1, 0, 0, :2] = 0.1  # one teacher says background on 2 of 16 pixels
    scores, prediction = score_image(task, ["fg"], p)
    assert scores.im == pytest.approx(2 / 16) and scores.class_im == {"fg": pytest.approx(2 / 16)}
    assert prediction.im.sum() == 2
    assert mean_entropy(task, torch.full((1, 2, 2), 0.5)) == pytest.approx(1.0)
    assert mean_entropy(task, torch.full((1, 2, 2), 0.999)) < 0.02


def test_multiclass_per_class_im_names_the_classes_teachers_confuse():
    task = Task("multiclass", 3)  # background, a, b: channels IM, bg, a, b
    p = torch.zeros(2, 4, 2, 4)
    p[:, 2] = 1.0  # both say a everywhere ...
    p[1, 2, 0, 0], p[1, 3, 0, 0] = 0.0, 1.0  # ... but one says b on one pixel
    scores, _ = score_image(task, ["background", "a", "b"], p)
    assert scores.im == pytest.approx(1 / 8)
    assert scores.class_im == {"background": 0.0, "a": pytest.approx(1 / 8),
                               "b": pytest.approx(1 / 8)}
    assert scores.value("im", "background") == 0.0
    uniform = torch.full((4, 1, 1), 0.25)
    assert mean_entropy(task, uniform) == pytest.approx(1.0)  # over the 3 real classes
