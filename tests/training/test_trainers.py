"""Trainers on hand-made batches: confidence thresholds, CutMix, the EMA teacher, feature
dropout, the per-kind pseudo-label rule, the standard Mean Teacher's consistency, and the
scale-crop weak view."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imseg.config import Config, TrainConfig, build_config
from imseg.data.augment import AugmentParams
from imseg.data.dataset import Split
from imseg.errors import ConfigError
from imseg.models.unet import TinyUNet
from imseg.tasks import VOID, Task
from imseg.training.trainers import TRAINERS, TrainingSetup
from imseg.training.trainers.online import (
    MeanTeacherEpochs,
    OnlineEpochs,
    confident_loss,
    ema_decay_at,
    ema_update,
    forward_perturbed,
    probability_mse,
    sigmoid_rampup,
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
    valid = torch.ones((3, 1, 16, 16), dtype=torch.bool)
    valid[1, :, 8:] = False  # image 1's lower half padded by a scale-crop weak view
    views, targets, masks, valids = epochs.strong_views(u, target, confident, valid)
    assert len(views) == 2  # UniMatch: two strong views, each with its own box
    for view, tgt, mask, kept in zip(views, targets, masks, valids, strict=True):
        source = view[:, :1] // 10 - 1  # which image each pixel came from
        assert torch.equal(source.to(torch.uint8), tgt)  # label from the same image as pixel
        assert torch.equal(mask, tgt == 1)
        rows = torch.arange(16).view(1, 1, 16, 1).expand(3, 1, 16, 16)
        assert torch.equal(kept, ~((source == 1) & (rows >= 8)))  # padding moves with the box
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


@pytest.mark.parametrize("name", ["mean_teacher", "mean_teacher_cutmix"])
def test_the_mean_teachers_teacher_is_the_ema_of_the_model(name):
    st = setup(BINARY)
    model = TinyUNet(3, 1, alpha=0.25)
    epochs = trainer(name, ema_decay=0.5).epochs(st, torch.Generator().manual_seed(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    start = [p.detach().clone() for p in model.parameters()]
    seen = []
    original = optimizer.step

    def step(*args, **kwargs):  # record the student after each update
        out = original(*args, **kwargs)
        seen.append([p.detach().clone() for p in model.parameters()])
        return out

    optimizer.step = step
    epochs(model, optimizer, 1)
    assert epochs.steps == 2  # 4 unlabeled / batch 2
    # step 0 copies the student (decay 0), step 1 averages it with the next one (decay 0.5)
    expected = [0.5 * a + 0.5 * b for a, b in zip(seen[0], seen[1], strict=True)]
    for got, want, s0 in zip(epochs.teacher.parameters(), expected, start, strict=True):
        assert torch.allclose(got, want, atol=1e-6)
        assert not torch.equal(got, s0)


def mean_teacher_epochs(st: TrainingSetup, **settings) -> MeanTeacherEpochs:
    epochs = trainer("mean_teacher", **settings).epochs(st, torch.Generator().manual_seed(6))
    assert isinstance(epochs, MeanTeacherEpochs)
    return epochs


@pytest.mark.parametrize("task", [BINARY, MULTICLASS])
def test_mean_teacher_consistency_is_the_mse_of_probabilities(task):
    student = torch.tensor([[[[0.0, 2.0]], [[1.0, -1.0]]]])[:, :task.out_channels]
    teacher = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])[:, :task.out_channels]
    if task.kind == "multiclass":  # three channels: the IM class and two classes
        student = torch.cat([student, torch.zeros_like(student[:, :1])], dim=1)
        teacher = torch.cat([teacher, teacher[:, :1]], dim=1)
        act = lambda z: z.softmax(dim=1)  # noqa: E731
    else:
        act = torch.sigmoid
    by_hand = ((act(student) - act(teacher)) ** 2).mean()
    valid = torch.ones((1, 1, 1, 2), dtype=torch.bool)
    assert torch.allclose(probability_mse(task, student, teacher, valid), by_hand)
    valid[..., 1] = False  # a padded pixel counts nowhere
    first = ((act(student) - act(teacher)) ** 2)[..., 0].mean()
    assert torch.allclose(probability_mse(task, student, teacher, valid), first)


def test_mean_teacher_step_loss_is_labeled_plus_ramped_consistency():
    st = setup(BINARY)
    x, y, u = st.train.images[:2], st.train.labels[:2], st.unlabeled[:2]
    model = PixelLogits(1)
    epochs = mean_teacher_epochs(st, noise_std=0.0, weak_labeled=False, consistency_weight=4.0)
    epochs.teacher = PixelLogits(1)
    with torch.no_grad():
        epochs.teacher.scale.fill_(0.5)
    loss = epochs.loss(model, x, y, u)
    labeled = BINARY.loss(model(x.float()), y)
    mse = ((model(u.float()).sigmoid() - epochs.teacher(u.float()).sigmoid()) ** 2).mean()
    assert torch.allclose(loss, labeled + 4.0 * sigmoid_rampup(0.0) * mse)


def test_mean_teacher_ramp_up_from_its_start_to_its_end():
    assert sigmoid_rampup(0.0) == pytest.approx(torch.exp(torch.tensor(-5.0)).item())
    assert sigmoid_rampup(0.5) == pytest.approx(torch.exp(torch.tensor(-1.25)).item())
    assert sigmoid_rampup(1.0) == 1.0 and sigmoid_rampup(3.0) == 1.0
    st = setup(BINARY)  # 2 steps per epoch
    st.cfg = st.cfg.model_copy(update={"epochs": 5})
    epochs = mean_teacher_epochs(st)
    assert epochs.consistency_weight() == pytest.approx(0.1 * sigmoid_rampup(0.0))  # step 0
    epochs.steps = 10  # 5 epochs × 2 steps: all of train.epochs by default
    assert epochs.consistency_weight() == pytest.approx(0.1)
    epochs.steps = 5
    assert epochs.consistency_weight() == pytest.approx(0.1 * sigmoid_rampup(0.5))
    short = mean_teacher_epochs(st, rampup_epochs=1)
    short.steps = 2
    assert short.consistency_weight() == pytest.approx(0.1)


class Recorder(PixelLogits):
    """PixelLogits that keeps every input it is given."""

    def __init__(self) -> None:
        super().__init__(1)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return super().forward(x)


def test_mean_teachers_teacher_sees_clipped_noise_and_the_student_does_not():
    st = setup(BINARY)
    x, y, u = st.train.images[:2], st.train.labels[:2], st.unlabeled[:2]
    student, teacher = Recorder(), Recorder()
    epochs = mean_teacher_epochs(st)
    epochs.teacher = teacher
    epochs.loss(student, x, y, u)
    (seen,) = teacher.inputs
    noise = seen - u.float()
    assert noise.abs().max() <= 0.2 * 255 + 1e-3  # clipped at ± 0.2 of the range
    assert noise.abs().max() > 0.15 * 255  # and some reach the clip
    assert 0.07 * 255 < noise.std() < 0.11 * 255  # std 0.1 of the range, a bit less clipped
    assert torch.equal(student.inputs[0][2:], u.float())  # the student's copy is clean


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
        for name in ("fixmatch", "unimatch", "mean_teacher", "mean_teacher_cutmix"):
            epoch = trainer(name).epoch_factory(st)(torch.Generator().manual_seed(5))
            loss = epoch(model, optimizer, 1)
            assert loss == loss and loss > 0, (task.kind, name)  # finite and positive


def test_trainer_stage_names_tell_settings_apart():
    assert trainer("fixmatch").stage_name() == "fixmatch"
    assert trainer("fixmatch").stage_name("aldt") == "aldt_fixmatch"
    changed = trainer("fixmatch", threshold=0.9).stage_name()
    assert changed.startswith("fixmatch_") and changed != trainer("fixmatch",
                                                                 threshold=0.8).stage_name()


# ------------------------------------------------------------------------ weak views
def test_the_weak_view_is_a_global_setting_a_trainer_may_override():
    config = build_config(sets=["ssl.online.weak_view=scale_crop",
                                "ssl.online.scale_range=[0.8, 1.5]"])
    fixmatch = TRAINERS.parse("fixmatch", config, "test")
    assert fixmatch.weak_view == "scale_crop" and fixmatch.scale_range == (0.8, 1.5)
    assert fixmatch.stage_name() == "fixmatch"  # config-wide: the settings check guards it
    own = TRAINERS.parse({"name": "unimatch", "weak_view": "flips_rotations"}, config, "test")
    assert own.weak_view == "flips_rotations"
    with pytest.raises(ConfigError, match="scale_range"):
        build_config(sets=["ssl.online.scale_range=[2, 1]"])
    with pytest.raises(ConfigError, match="weak_view"):
        trainer("fixmatch", weak_view="crop")


def test_scale_crop_weak_view_pads_labels_with_void_and_unlabeled_pixels_as_invalid():
    st = setup(MULTILABEL, size=32)
    epochs = trainer("fixmatch", weak_view="scale_crop", scale_range=(0.5, 0.5)).epochs(
        st, torch.Generator().manual_seed(7))
    x, y, u = st.train.images[:2], st.train.labels[:2], st.unlabeled[:2]
    wx, wy, wu, valid = epochs.weak_views(x, y, u)
    assert (wy[..., 16:, :] == VOID).all() and (wy[..., :16, :16] != VOID).all()
    assert (wx[..., 16:, :] == 0).all() and (wu[..., :, 16:] == 0).all()
    assert valid.shape == (2, 1, 32, 32) and valid.dtype == torch.bool
    assert valid[..., :16, :16].all() and not valid[..., 16:, :].any()
    assert not valid[..., :, 16:].any()


def test_padded_pixels_add_nothing_to_the_unsupervised_losses():
    logits = torch.zeros(1, 1, 1, 2, requires_grad=True)
    target = torch.ones(1, 1, 1, 2, dtype=torch.uint8)
    valid = torch.tensor([[[[True, False]]]])
    confident = torch.ones(1, 1, 1, 2, dtype=torch.bool)
    loss = confident_loss(BINARY, logits, target, confident, valid)
    assert loss.item() == 0.25  # one valid pixel's (0.5 - 1)², divided by the valid pixels
    loss.backward()
    assert logits.grad[0, 0, 0, 1] == 0


@pytest.mark.parametrize("name", ["fixmatch", "unimatch", "mean_teacher",
                                  "mean_teacher_cutmix"])
def test_every_trainer_trains_an_epoch_with_the_scale_crop_view(name):
    st = setup(MULTICLASS, size=32)
    model = TinyUNet(3, MULTICLASS.out_channels, alpha=0.25)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.003)
    epoch = trainer(name, weak_view="scale_crop").epoch_factory(st)(
        torch.Generator().manual_seed(8))
    loss = epoch(model, optimizer, 1)
    assert loss == loss and loss > 0


def test_a_config_wide_weak_view_keeps_the_stage_name_a_recipes_own_renames_it():
    """A preset's ``ssl.online.weak_view`` leaves a trainer stage named ``fixmatch`` (the
    settings check guards config-wide values); the same view set in the recipe only, or
    another threshold, makes a stage of its own name."""
    from imseg.config import build_config
    from imseg.training.trainers import TRAINERS

    wide = build_config(sets=["ssl.online.weak_view=scale_crop"])
    plain = build_config()
    assert TRAINERS.parse("fixmatch", wide, "t").stage_name() == "fixmatch"
    assert TRAINERS.parse("fixmatch", plain, "t").stage_name() == "fixmatch"
    own = TRAINERS.parse({"name": "fixmatch", "weak_view": "scale_crop"}, plain, "t")
    assert own.stage_name().startswith("fixmatch_")
    other = TRAINERS.parse({"name": "fixmatch", "threshold": 0.9}, wide, "t")
    assert other.stage_name().startswith("fixmatch_")
    assert TRAINERS.parse("fixmatch", wide, "t") == TRAINERS.parse(
        {"name": "fixmatch", "weak_view": "scale_crop"}, plain, "t")
