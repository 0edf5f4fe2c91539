"""Trainers on hand-made batches: confidence thresholds, CutMix, the EMA teacher, feature
dropout, and the per-kind pseudo-label rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imseg.config import Config, TrainConfig
from imseg.data.augment import AugmentParams
from imseg.data.dataset import Split
from imseg.errors import ConfigError
from imseg.models.unet import TinyUNet
from imseg.tasks import VOID, Task
from imseg.training.trainers import TRAINERS, TrainingSetup
from imseg.training.trainers.online import (
    OnlineEpochs,
    confident_loss,
    ema_decay_at,
    ema_update,
    forward_perturbed,
)

BINARY = Task("binary", 1)
MULTILABEL = Task("multilabel", 2)
MULTICLASS = Task("multiclass", 3)
CPU = torch.device("cpu")
NO_STRONG = {"jitter_prob": 0.0, "grey_prob": 0.0, "blur_prob": 0.0}


def trainer(name: str, **settings):
    return TRAINERS.parse({"name": name, **settings}, Config(), "test")


def setup(task: Task, n: int = 4, size: int = 16) -> TrainingSetup:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 2, (n, task.label_channels, size, size), dtype=torch.uint8,
                           generator=g)
    if task.kind == "multiclass":
        labels = labels + 1
    cfg = TrainConfig(batch_size=2, amp="never", channels_last=False)
    return TrainingSetup(task, Split(images, labels, [str(i) for i in range(n)]), images.clone(),
                         cfg, CPU, AugmentParams(flip_h=False, flip_v=False, rotate=False))


class PixelLogits(nn.Module):
    """Logits that depend on each pixel's first channel: ``(x - 128) / 8`` per output channel."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out = out_channels
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = (x[:, :1] - 128.0) / 8.0 * self.scale
        return torch.cat([base * (c + 1) / self.out for c in range(self.out)], dim=1)


# ------------------------------------------------------------------- pseudo labels
def test_pseudo_label_confidence_per_task_kind():
    p = torch.tensor([[[[0.9, 0.3]]]])  # binary (1, 1, 1, 2)
    label, conf = BINARY.pseudo_label(p)
    assert label.tolist() == [[[[1, 0]]]]
    assert torch.allclose(conf, torch.tensor([[[[0.9, 0.7]]]]))
    p = torch.tensor([[[[0.9]], [[0.4]]]])  # multilabel: each channel on its own
    label, conf = MULTILABEL.pseudo_label(p)
    assert label.flatten().tolist() == [1, 0] and torch.allclose(conf.flatten(),
                                                                  torch.tensor([0.9, 0.6]))
    # multiclass: softmax probability of the chosen class (channel 0, the IM class, never chosen)
    p = torch.tensor([0.5, 0.1, 0.3, 0.1]).view(1, 4, 1, 1)
    label, conf = MULTICLASS.pseudo_label(p)
    assert label.item() == 2 and conf.item() == torch.tensor(0.3).item()


def test_confident_loss_counts_only_confident_pixels_over_all_pixels():
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    target = torch.tensor([[[[1, 0], [1, 0]]]], dtype=torch.uint8)
    confident = torch.tensor([[[[True, False], [False, False]]]])
    loss = confident_loss(BINARY, logits, target, confident)
    assert loss.item() == 0.25 * (0.5 - 1) ** 2  # one pixel's squared error over 4 pixels
    loss.backward()
    assert logits.grad[0, 0, 0, 0] != 0 and (logits.grad.flatten()[1:] == 0).all()


def test_pixels_under_the_threshold_add_nothing_to_the_step_loss():
    st = setup(BINARY)
    x, y = st.train.images[:2], st.train.labels[:2]
    u = st.unlabeled[:2]
    model = PixelLogits(1)
    losses = {}
    for threshold in (1.0, 0.0):
        epochs = OnlineEpochs(trainer("fixmatch", threshold=threshold, cutmix_prob=0.0,
                                      strong=NO_STRONG, weak_labeled=False), st,
                              torch.Generator().manual_seed(1))
        losses[threshold] = epochs.loss(model, x, y, u).item()
    labeled_only = BINARY.loss(model(x.float()), y).item()
    # nothing reaches a confidence of 1: only the labeled loss is left
    assert losses[1.0] == labeled_only
    assert losses[0.0] > labeled_only


def test_cutmix_mixes_image_and_pseudo_label_with_the_same_box():
    st = setup(BINARY, n=3)
    epochs = OnlineEpochs(trainer("unimatch", cutmix_prob=1.0, strong=NO_STRONG), st,
                          torch.Generator().manual_seed(2))
    u = torch.stack([torch.full((3, 16, 16), 10 * (i + 1), dtype=torch.uint8) for i in range(3)])
    target = torch.stack([torch.full((1, 16, 16), i, dtype=torch.uint8) for i in range(3)])
    confident = target == 1
    views, targets, masks = epochs.strong_views(u, target, confident)
    assert len(views) == 2  # UniMatch: two strong views, each with its own box
    for view, tgt, mask in zip(views, targets, masks, strict=True):
        source = view[:, :1] // 10 - 1  # which image each pixel came from
        assert torch.equal(source.to(torch.uint8), tgt)  # label from the same image as pixel
        assert torch.equal(mask, tgt == 1)
        for i in range(3):
            pasted = source[i] != i
            assert pasted.any() and (source[i][pasted] == (i - 1) % 3).all()
    assert not torch.equal(views[0], views[1])


def test_ema_update_and_its_warm_up():
    teacher, student = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(3.0)
    ema_update(teacher, student, 0.75)
    assert torch.allclose(teacher.weight, torch.full_like(teacher.weight, 0.75 * 1 + 0.25 * 3))
    assert ema_decay_at(0.99, 0) == 0.0  # the first step copies the student
    assert ema_decay_at(0.99, 3) == 0.75
    assert ema_decay_at(0.99, 1000) == 0.99


def test_mean_teacher_labels_with_its_ema_teacher():
    st = setup(BINARY)
    model = TinyUNet(3, 1, alpha=0.25)
    epochs = OnlineEpochs(trainer("mean_teacher", ema_decay=0.5), st,
                          torch.Generator().manual_seed(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    epochs(model, optimizer, 1)
    assert epochs.teacher is not None and epochs.steps == 2  # 4 unlabeled / batch 2
    # step 0 copies the student (decay 0), step 1 averages it with the next student: the
    # teacher moved from the initial weights but lags behind the student's latest ones
    pairs = list(zip(epochs.teacher.parameters(), model.parameters(), before, strict=True))
    assert all(not torch.equal(t, b) for t, _, b in pairs)
    assert any(not torch.allclose(t, s) for t, s, _ in pairs)


class Spy(TinyUNet):
    """A tiny U-Net recording how it is called."""

    def __init__(self) -> None:
        super().__init__(3, 1, alpha=0.25)
        self.calls: list[tuple[str, int]] = []

    def forward(self, x, feature_dropout=None):
        self.calls.append(("plain" if feature_dropout is None else "perturbed", x.shape[0]))
        return super().forward(x, feature_dropout)


def test_feature_dropout_only_in_its_stream():
    model = TinyUNet(3, 2, alpha=0.25).eval()
    x = torch.randint(0, 256, (3, 3, 16, 16)).float()
    torch.manual_seed(0)
    clean, perturbed = forward_perturbed(model, x, 0.5)
    assert torch.allclose(clean, model(x), atol=1e-5)  # the clean half is the plain forward
    assert not torch.allclose(perturbed, clean, atol=1e-3)
    same, also = forward_perturbed(model, x, 0.0)
    assert torch.allclose(same, also)
    # in UniMatch's step: one perturbed pass over labeled + weak, plain passes for strong views
    st = setup(BINARY)
    spy = Spy()
    OnlineEpochs(trainer("unimatch"), st, torch.Generator().manual_seed(4)).loss(
        spy, st.train.images[:2], st.train.labels[:2], st.unlabeled[:2])
    assert spy.calls == [("perturbed", 4), ("plain", 4)]
    spy.calls.clear()
    OnlineEpochs(trainer("fixmatch"), st, torch.Generator().manual_seed(4)).loss(
        spy, st.train.images[:2], st.train.labels[:2], st.unlabeled[:2])
    assert spy.calls == [("plain", 4), ("plain", 2)]


def test_a_model_without_the_perturbed_stream_is_one_clear_error():
    with pytest.raises(ConfigError, match="feature_dropout"):
        forward_perturbed(nn.Conv2d(3, 1, 1), torch.zeros(1, 3, 8, 8), 0.5)


def test_a_compiled_model_gives_each_stream_its_own_graph():
    """The perturbed stream is an argument of forward, not a hook added around a step, so a
    compiled model never reuses the plain graph for it (or the other way round)."""
    model = TinyUNet(3, 1, alpha=0.25).eval()
    compiled = torch.compile(model, backend="eager")
    x = torch.randint(0, 256, (2, 3, 16, 16)).float()
    torch.manual_seed(1)
    eager = forward_perturbed(model, x, 0.5)
    torch.manual_seed(1)
    for _ in range(2):  # plain, perturbed, plain, perturbed: each call its own stream
        assert compiled(x).shape[0] == 2
        torch.manual_seed(1)
        got = forward_perturbed(compiled, x, 0.5)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, eager, strict=True))


def test_online_epoch_trains_every_task_kind_and_ignores_void():
    for task in (BINARY, MULTILABEL, MULTICLASS):
        st = setup(task)
        st.train.labels[0, :, :4] = VOID  # IM pixels left out of the supervised loss
        model = TinyUNet(3, task.out_channels, alpha=0.25)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.003)
        for name in ("fixmatch", "unimatch", "mean_teacher"):
            epoch = trainer(name).epoch_factory(st)(torch.Generator().manual_seed(5))
            loss = epoch(model, optimizer, 1)
            assert loss == loss and loss > 0, (task.kind, name)  # finite and positive


def test_trainer_stage_names_tell_settings_apart():
    assert trainer("fixmatch").stage_name() == "fixmatch"
    assert trainer("fixmatch").stage_name("aldt") == "aldt_fixmatch"
    changed = trainer("fixmatch", threshold=0.9).stage_name()
    assert changed.startswith("fixmatch_") and changed != trainer("fixmatch",
                                                                 threshold=0.8).stage_name()
