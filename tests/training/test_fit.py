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
