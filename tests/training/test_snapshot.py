"""A model stopped between epochs and started again from its snapshot ends as the one
trained without a stop, under every kind of trainer; snapshots of other models, damaged
ones, and switched-off snapshots are set aside or never written."""

from __future__ import annotations

import logging

import pytest
import torch
from test_fit import PretrainedLike

from imseg.config import Config, build_config
from imseg.data.augment import AugmentParams
from imseg.data.dataset import load_dataset
from imseg.models.unet import build_unet
from imseg.runtime import seed_everything
from imseg.training.fit import Batches, fit, run_epoch
from imseg.training.snapshot import Snapshots
from imseg.training.trainers import TRAINERS, TrainingSetup

CPU = torch.device("cpu")
EPOCHS = 4


class Stop(Exception):
    """Stands in for a kill: raised after an epoch, before its snapshot."""


def _config(**train):
    return build_config(overrides={"train": {"alpha": 0.25, "epochs": EPOCHS, "batch_size": 2,
                                             "steps_per_epoch": 2, "amp": "never", **train}})


def _train(data, config, trainer: str | None, snapshots: Snapshots | None = None,
           stop_after: int | None = None, net=None):
    """Train a seeded tiny U-Net (or ``net()``) under ``trainer`` (None: supervised),
    raising Stop after epoch ``stop_after``; returns (model, result)."""
    ds = load_dataset(data)
    train, val = ds.val, ds.labeled  # 8 pairs to train on: batch orders differ by seed
    gen = seed_everything(3)
    model = net() if net else build_unet(3, ds.task.out_channels, 0.25, bn_momentum=0.1)
    epoch_fn = None
    if trainer is not None:
        part = TRAINERS.parse(trainer, Config(), "test")
        setup = TrainingSetup(ds.task, train, ds.unlabeled.images, config.train, CPU,
                              AugmentParams())
        epoch_fn = part.epoch_factory(setup)(gen)

    def hook(log):
        if log.epoch == stop_after:
            raise Stop

    result = fit(model, ds.task, train, val, config.train, CPU, gen, epoch_fn=epoch_fn,
                 progress=False, on_epoch=hook, snapshots=snapshots)
    return model, result


@pytest.mark.parametrize("trainer", [None, "consistency", "fixmatch", "unimatch",
                                     "mean_teacher", "mean_teacher_cutmix"])
def test_a_resumed_model_ends_as_the_one_trained_without_a_stop(binary_data, tmp_path, trainer):
    config = _config()
    model, whole = _train(binary_data, config, trainer)

    snaps = Snapshots(tmp_path / "c0.unfinished", {"model": "c0"}, every_s=0.0)
    with pytest.raises(Stop):
        _train(binary_data, config, trainer, snaps, stop_after=3)
    assert snaps.path.is_file()  # written after epochs 1 and 2: epoch 3 stopped before its own
    # global streams drawn in between (another model trained in the same process) must not matter
    torch.rand(100), torch.manual_seed(123)

    again = Snapshots(snaps.path, {"model": "c0"}, every_s=0.0)
    assert again.first_epoch() == 3
    resumed_model, resumed = _train(binary_data, config, trainer, again)
    assert resumed.history == whole.history
    assert resumed.best_epoch == whole.best_epoch
    assert resumed.val == whole.val
    for key, value in model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key


def test_a_pretrained_encoder_resumes_inside_its_warm_up(binary_data, tmp_path):
    """The encoder's lower rate, the warm-up's rates and frozen encoder statistics carry
    over a stop in the middle of the warm-up."""
    config = _config(warmup_epochs=3, encoder_bn="frozen", encoder_lr_factor=0.1)
    model, whole = _train(binary_data, config, None, net=lambda: PretrainedLike(True))
    snaps = Snapshots(tmp_path / "c0.unfinished", {}, every_s=0.0)
    with pytest.raises(Stop):
        _train(binary_data, config, None, snaps, stop_after=3, net=lambda: PretrainedLike(True))
    resumed_model, resumed = _train(binary_data, config, None,
                                    Snapshots(snaps.path, {}, every_s=0.0),
                                    net=lambda: PretrainedLike(True))
    assert resumed.history == whole.history
    for key, value in model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key


def test_resuming_after_the_best_epoch_keeps_the_best_weights(binary_data, tmp_path):
    """The best epoch's weights travel in the snapshot, not only the current ones: epochs
    after the second spoil the net (all background), so the best stays behind the stop."""
    ds = load_dataset(binary_data)
    config = _config(epochs=5)

    def train(snapshots=None, stop_after=None):
        gen = seed_everything(3)
        model = build_unet(3, 1, 0.25, bn_momentum=0.1)
        batches = Batches(ds.val, 2, CPU, gen, 2)

        def epoch_fn(net, optimizer, epoch):
            if epoch <= 2:
                return run_epoch(net, optimizer, batches,
                                 lambda x, y: ds.task.loss(net(x.float()), y))
            head = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
            with torch.no_grad():
                head.weight.zero_()
                head.bias.fill_(-20.0)
            return 0.0

        def hook(log):
            if log.epoch == stop_after:
                raise Stop

        return fit(model, ds.task, ds.val, ds.labeled, config.train, CPU, gen,
                   epoch_fn=epoch_fn, progress=False, on_epoch=hook, snapshots=snapshots)

    whole = train()
    assert whole.best_epoch <= 2 and whole.history[2:] == [whole.history[2]] * 3
    snaps = Snapshots(tmp_path / "s.unfinished", {}, every_s=0.0)
    with pytest.raises(Stop):
        train(snaps, stop_after=5)
    assert torch.load(snaps.path, weights_only=True)["epoch"] == 4
    resumed = train(Snapshots(snaps.path, {}, every_s=0.0))
    assert resumed.best_epoch == whole.best_epoch
    assert resumed.state.keys() == whole.state.keys()
    assert all(torch.equal(resumed.state[k], whole.state[k]) for k in whole.state)


def test_a_snapshot_of_another_model_or_a_damaged_one_is_set_aside(binary_data, tmp_path,
                                                                   caplog):
    config = _config()
    snaps = Snapshots(tmp_path / "c0.unfinished", {"seed": 1}, every_s=0.0)
    with pytest.raises(Stop):
        _train(binary_data, config, None, snaps, stop_after=2)
    other = Snapshots(snaps.path, {"seed": 2}, every_s=0.0)
    with caplog.at_level(logging.INFO, logger="imseg"):
        assert other.first_epoch() == 1
    assert "not used (it belongs to {'seed': 1}" in caplog.text

    snaps.path.write_bytes(b"not a snapshot")
    damaged = Snapshots(snaps.path, {"seed": 1}, every_s=0.0)
    with caplog.at_level(logging.INFO, logger="imseg"):
        assert damaged.first_epoch() == 1
    assert "cannot be read" in caplog.text
    _, result = _train(binary_data, config, None, damaged)
    assert len(result.history) == EPOCHS


def test_no_snapshot_is_written_when_off_or_not_yet_due(binary_data, tmp_path):
    config = _config()
    off = Snapshots(tmp_path / "off.unfinished", {}, every_s=None)
    later = Snapshots(tmp_path / "later.unfinished", {}, every_s=3600.0)
    for snaps in (off, later):
        with pytest.raises(Stop):
            _train(binary_data, config, None, snaps, stop_after=3)
        assert not snaps.path.exists()
    # a finished model writes none after its last epoch
    every = Snapshots(tmp_path / "every.unfinished", {}, every_s=0.0)
    _train(binary_data, config, None, every)
    assert torch.load(every.path, weights_only=True)["epoch"] == EPOCHS - 1


def test_a_fused_stage_resumes_as_one(binary_data, tmp_path):
    """The models of a fused stage share one snapshot and resume together."""
    from imseg.training.fused import fit_fused

    ds = load_dataset(binary_data)
    config = _config(bn_stats="precise")

    def both(snapshots=None, stop_after=None):
        nets, gens = [], []
        for seed in (3, 4):
            gens.append(seed_everything(seed))
            nets.append(build_unet(3, 1, 0.25, bn_momentum=0.1))

        def hook(log):
            if log.epoch == stop_after:
                raise Stop

        return fit_fused(nets, ds.task, ds.val, ds.labeled, config.train, CPU, gens,
                         progress=False, on_epoch=[hook, None], snapshots=snapshots)

    whole = both()
    snaps = Snapshots(tmp_path / "fused.unfinished", {}, every_s=0.0)
    with pytest.raises(Stop):
        both(snaps, stop_after=3)
    resumed = both(Snapshots(snaps.path, {}, every_s=0.0))
    for a, b in zip(whole, resumed, strict=True):
        assert (a.history, a.best_epoch) == (b.history, b.best_epoch)
        assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
