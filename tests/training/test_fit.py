import pytest
import torch
from pydantic import ValidationError

from imseg.config import TrainConfig, build_config
from imseg.data.dataset import Split, load_dataset
from imseg.models.unet import build_unet
from imseg.runtime import seed_everything
from imseg.training.fit import Batches, compile_mode, compiled, fit, run_epoch
from imseg.training.inference import evaluate_model


def _train(data, cfg, seed):
    ds = load_dataset(data)
    gen = seed_everything(seed)
    model = build_unet(3, ds.task.out_channels, cfg.train.alpha, bn_momentum=0.1)
    return model, fit(model, ds.task, ds.labeled, ds.val, cfg.train, torch.device("cpu"), gen,
                      progress=False), ds


def test_same_seed_same_numbers_and_best_epoch_is_restored(binary_data):
    cfg = build_config(overrides={"train": {"alpha": 0.25, "epochs": 3, "batch_size": 4}})
    model_a, res_a, ds = _train(binary_data, cfg, 7)
    _, res_b, _ = _train(binary_data, cfg, 7)
    _, res_c, _ = _train(binary_data, cfg, 8)
    assert res_a.history == res_b.history
    assert res_a.history != res_c.history
    assert len(res_a.history) == 3
    assert res_a.best_epoch == 1 + max(range(3), key=lambda i: (res_a.history[i], -i))
    # the model holds the best epoch's weights: its val score is the best in the history
    again = evaluate_model(model_a, ds.val, ds.task, torch.device("cpu"))
    assert abs(again["iou"] - max(res_a.history)) < 1e-6


def test_training_lowers_the_loss_on_the_sample(binary_data):
    cfg = build_config(overrides={"train": {"alpha": 0.5, "epochs": 1, "batch_size": 8,
                                            "steps_per_epoch": 40, "lr": 0.003}})
    ds = load_dataset(binary_data)
    gen = seed_everything(0)
    model = build_unet(3, 1, 0.5, bn_momentum=0.1)
    x = ds.labeled.images.float()
    before = float(ds.task.loss(model(x), ds.labeled.labels).detach())
    fit(model, ds.task, ds.labeled, ds.val, cfg.train, torch.device("cpu"), gen, progress=False)
    model.train()  # compare like with like: batch statistics
    after = float(ds.task.loss(model(x), ds.labeled.labels).detach())
    assert after < 0.7 * before


def test_batches_cover_every_pair_each_epoch(binary_data):
    ds = load_dataset(binary_data)
    batches = Batches(ds.unlabeled, 4, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert batches.steps == len(ds.unlabeled) // 4
    seen = torch.cat([img for img, _ in batches.epoch()])
    assert seen.shape[0] == batches.steps * 4
    # no pair twice within an epoch
    flat = seen.flatten(1)
    assert torch.unique(flat, dim=0).shape[0] == flat.shape[0]


def test_an_epoch_reads_its_loss_back_once(monkeypatch):
    """No host sync per step: the losses are summed on the device, read once per epoch."""
    images = torch.zeros(12, 1, 4, 4, dtype=torch.uint8)
    split = Split(images, images.clone(), [str(i) for i in range(12)])
    batches = Batches(split, 4, torch.device("cpu"), torch.Generator().manual_seed(0))
    model = torch.nn.Conv2d(1, 1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    losses = iter([1.0, 2.0, 6.0])
    reads = []
    real_float = torch.Tensor.__float__
    monkeypatch.setattr(torch.Tensor, "__float__",
                        lambda t: reads.append(1) or real_float(t))

    def loss_of(x, y):
        return model(x.float()).sum() * 0 + next(losses)

    assert run_epoch(model, optimizer, batches, loss_of) == 3.0
    assert len(reads) == 1


def test_compile_modes(monkeypatch):
    assert [compile_mode(TrainConfig(compile=c)) for c in (False, True, "reduce-overhead")] == [
        None, "default", "reduce-overhead"]
    with pytest.raises(ValidationError):
        TrainConfig(compile="fast")
    seen = []
    monkeypatch.setattr(torch, "compile", lambda model, mode: seen.append(mode) or model)
    net = torch.nn.Conv2d(1, 1, 1)
    cfg = TrainConfig(compile="reduce-overhead")
    assert compiled(net, cfg, torch.device("cpu")) is net and seen == []  # CUDA only
    compiled(net, cfg, torch.device("cuda"))
    assert seen == ["reduce-overhead"]


# ------------------------------------------------------------------------ fine-tuning
class PretrainedLike(torch.nn.Module):
    """An encoder-decoder net as an encoder model presents itself to fit: its
    ``pretrained_encoder`` is the encoder when that started from pretrained weights."""

    def __init__(self, pretrained: bool) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1),
                                           torch.nn.BatchNorm2d(4))
        self.decoder = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1),
                                           torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 1, 1))
        self.pretrained = pretrained

    @property
    def pretrained_encoder(self):
        return self.encoder if self.pretrained else None

    def forward(self, x):
        return self.decoder(self.encoder(x / 255.0))


def _fit_recording_rates(model, cfg_fields, epochs=4):
    """fit with a custom epoch that records each group's rate; returns them per epoch."""
    images = torch.randint(0, 256, (8, 3, 16, 16), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    split = Split(images, (images[:, :1] > 128).to(torch.uint8), [str(i) for i in range(8)])
    cfg = TrainConfig(epochs=epochs, batch_size=4, amp="never", channels_last=False,
                      **cfg_fields)
    batches = Batches(split, 4, torch.device("cpu"), torch.Generator().manual_seed(1))
    rates = []

    def epoch_fn(net, optimizer, _epoch):
        rates.append([group["lr"] for group in optimizer.param_groups])
        return run_epoch(net, optimizer, batches,
                         lambda x, y: torch.nn.functional.mse_loss(net(x.float()), y.float()))

    from imseg.tasks import Task

    fit(model, Task("binary", 1), split, split, cfg, torch.device("cpu"),
        torch.Generator().manual_seed(2), epoch_fn=epoch_fn, progress=False)
    return rates


def test_a_pretrained_encoder_learns_slower_after_a_warm_up():
    rates = _fit_recording_rates(PretrainedLike(True), {"lr": 0.01, "encoder_lr_factor": 0.1,
                                                     "warmup_epochs": 2})
    full = [0.001, 0.01]  # the encoder's group, then the decoder's
    expected = [[r / 3 for r in full], [2 * r / 3 for r in full], full, full]
    assert [pytest.approx(r) for r in expected] == rates


def test_a_net_from_scratch_trains_on_one_rate_as_before():
    assert _fit_recording_rates(PretrainedLike(False), {"lr": 0.01}) == [[0.01]] * 4
    assert _fit_recording_rates(build_unet(3, 1, 0.25), {"lr": 0.01}) == [[0.01]] * 4


@pytest.mark.parametrize("encoder_bn", ["train", "frozen"])
def test_frozen_encoder_batchnorm_keeps_its_pretrained_statistics(encoder_bn):
    model = PretrainedLike(True)
    encoder_bn_layer, decoder_bn_layer = model.encoder[1], model.decoder[1]
    encoder_bn_layer.running_mean.fill_(0.25)
    before = model.decoder[1].running_mean.clone()
    _fit_recording_rates(model, {"encoder_bn": encoder_bn, "bn_stats": "precise"}, epochs=2)
    kept = bool((encoder_bn_layer.running_mean == 0.25).all())
    assert kept == (encoder_bn == "frozen")
    assert not torch.equal(decoder_bn_layer.running_mean, before)  # the decoder's: recomputed
    assert not torch.equal(encoder_bn_layer.weight, torch.ones(4))  # its scale still learns
