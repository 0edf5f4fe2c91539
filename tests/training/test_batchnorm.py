"""Precise BatchNorm statistics (``train.bn_stats: precise``): what they hold, that they
make a briefly trained model's eval mode match its train mode, and what they leave alone."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from imseg.config import EvalNetConfig, TrainConfig, build_config
from imseg.data.dataset import Split
from imseg.errors import ConfigError
from imseg.models.unet import build_unet
from imseg.runtime import seed_everything
from imseg.tasks import Task
from imseg.training import distributed
from imseg.training.batchnorm import (
    bn_layers,
    derived_generator,
    freeze_statistics,
    recompute_bn_stats,
    stats_batches,
)
from imseg.training.fit import fit, refresh_bn_stats

TASK = Task("binary", 1)
CPU = torch.device("cpu")


def _split(n: int, seed: int, size: int = 32) -> Split:
    """Images whose mask is "red brighter than green": learnable in a few steps."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    images = torch.nn.functional.avg_pool2d(images.float(), 5, 1, 2).to(torch.uint8)
    labels = (images[:, :1] > images[:, 1:2]).to(torch.uint8)
    return Split(images, labels, [f"s{i}" for i in range(n)])


def _config(**fields) -> TrainConfig:
    base = {"epochs": 1, "batch_size": 8, "alpha": 0.25, "amp": "never",
            "channels_last": False, "bn_stats": "running"}
    return TrainConfig(**{**base, **fields})


def _model(momentum: float = 0.1) -> torch.nn.Module:
    seed_everything(7)
    return build_unet(3, 1, 0.25, bn_momentum=momentum)


# ------------------------------------------------------------------------ the statistics
def test_running_stats_become_the_pooled_mean_and_unbiased_variance_of_each_layers_inputs():
    model = _model()
    with torch.no_grad():  # move the buffers off their initial values first
        model.train()(_split(8, 9).images.float())
    seen: dict[torch.nn.Module, list[torch.Tensor]] = {layer: [] for layer in bn_layers(model)}
    for layer in seen:
        layer.register_forward_pre_hook(lambda m, args: seen[m].append(args[0].detach()))
    images = _split(20, 1).images
    batches = stats_batches(20, 8, 200, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [7, 7, 6]  # one pass, near-equal batches
    assert sorted(torch.cat(batches).tolist()) == list(range(20))

    model.train()
    updated = recompute_bn_stats(model, batches, lambda rows: model(images[rows].float()))

    assert updated == len(seen) == 14
    assert model.training and all(m.training for m in model.modules())  # modes restored
    for layer, inputs in seen.items():
        x = torch.cat(inputs).double().transpose(0, 1).flatten(1)  # channel, every value
        assert x.shape[1] == 20 * inputs[0].shape[2] * inputs[0].shape[3]
        var, mean = torch.var_mean(x, dim=1, unbiased=True)  # torch keeps unbiased running_var
        assert torch.allclose(layer.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        assert torch.allclose(layer.running_var.double(), var, rtol=1e-5, atol=1e-6)
        assert int(layer.num_batches_tracked) == 1  # the statistics pass is no training step


def test_a_layer_no_forward_reaches_keeps_its_statistics_and_the_others_are_recomputed():
    """A BatchNorm layer outside the forward (smp keeps EfficientNet's classifier-side bn2)
    does not stop the statistics pass: it affects no output (issue 24)."""
    model = _model()
    model.unused = torch.nn.BatchNorm2d(5)
    before = model.unused.running_var.clone()
    images = _split(8, 1).images
    batches = stats_batches(8, 4, 200, torch.Generator().manual_seed(0))
    updated = recompute_bn_stats(model.train(), batches, lambda rows: model(images[rows].float()))
    assert updated == 14  # the U-Net's layers, not the unused one
    assert torch.equal(model.unused.running_var, before)
    assert all(not torch.equal(layer.running_var, torch.ones_like(layer.running_var))
               for layer in bn_layers(model) if layer is not model.unused)


def test_frozen_layers_normalise_with_and_keep_their_statistics():
    """``train.encoder_bn: frozen``: eval-mode normalisation in training, untouched by
    training steps and by the precise statistics pass."""
    model = _model()
    frozen = bn_layers(model)[:3]
    for layer in frozen:
        layer.running_mean.fill_(0.5)
    freeze_statistics(frozen)
    assert bn_layers(model) == [m for m in bn_layers(model, frozen=True) if m not in frozen]
    images = _split(8, 1).images
    with torch.no_grad():
        model.train()(images.float())  # a training-mode forward
    batches = stats_batches(8, 4, 200, torch.Generator().manual_seed(0))
    updated = recompute_bn_stats(model.train(), batches, lambda rows: model(images[rows].float()))
    assert updated == 11
    assert all((layer.running_mean == 0.5).all() for layer in frozen)
    assert all(layer.training for layer in frozen)  # the mode is the model's; the forward's is eval
    seen = []
    frozen[0].register_forward_hook(lambda m, args, out: seen.append(m.training))
    model(images[:2].float())
    assert seen == [False]


def test_statistics_batches_are_capped_and_sharded():
    gen = torch.Generator().manual_seed(3)
    capped = stats_batches(100, 8, 5, gen)
    assert [len(b) for b in capped] == [8] * 5
    assert len(set(torch.cat(capped).tolist())) == 40
    whole = stats_batches(100, 8, 5, torch.Generator().manual_seed(4))
    halves = [stats_batches(100, 8, 5, torch.Generator().manual_seed(4), shard=(r, 2))
              for r in range(2)]
    for full, even, odd in zip(whole, *halves, strict=True):
        assert torch.equal(even, full[0::2]) and torch.equal(odd, full[1::2])
    # a row per process in every batch: 3 rows in batches of 2 for 2 processes are one batch
    assert [[len(b) for b in stats_batches(3, 2, 200, gen, shard=(r, 2))]
            for r in range(2)] == [[1], [1]]


# ------------------------------------------------------------------------ in training
def _train_vs_eval_gap(bn_stats: str) -> float:
    """Mean |eval-mode − train-mode| probability on the 16 training images of a U-Net with
    Keras' momentum 0.01 after 2 optimizer steps on batches of all 16 (train mode: the
    statistics of that batch; with batches of 8 the train-mode outputs themselves move
    by ~0.08 with the batch's composition)."""
    train = _split(16, 1)
    model = _model(momentum=0.01)
    fit(model, TASK, train, _split(8, 2), _config(bn_stats=bn_stats, batch_size=16, epochs=2),
        CPU, torch.Generator().manual_seed(3), progress=False)
    x = train.images.float()
    with torch.no_grad():
        evaluated = torch.sigmoid(model.eval()(x))
        batch_stats = torch.sigmoid(copy.deepcopy(model).train()(x))
    return float((evaluated - batch_stats).abs().mean())


def test_briefly_trained_model_evaluates_like_its_train_mode_only_with_precise_stats():
    precise, running = _train_vs_eval_gap("precise"), _train_vs_eval_gap("running")
    assert precise < 0.01  # seen: 0.004 (pooled variance is unbiased, the batch's biased)
    assert running > 0.1  # seen: 0.14


def test_precise_leaves_the_training_alone_and_is_deterministic():
    def trained(bn_stats: str) -> dict[str, torch.Tensor]:
        model = _model()
        fit(model, TASK, _split(24, 1), _split(8, 2), _config(bn_stats=bn_stats), CPU,
            torch.Generator().manual_seed(3), progress=False)
        return model.state_dict()

    running, precise, again = trained("running"), trained("precise"), trained("precise")
    stats = {k for k in running if k.endswith(("running_mean", "running_var"))}
    assert all(torch.equal(running[k], precise[k]) for k in running if k not in stats)
    assert all(not torch.equal(running[k], precise[k]) for k in stats)
    assert all(torch.equal(precise[k], again[k]) for k in precise)


def test_evalnet_training_recomputes_its_statistics_and_nothing_else():
    """The EvalNet's own loop (imseg.evalnet.train) with ``bn_stats="precise"``."""
    from imseg.evalnet.data import EvalNetData, targets_in_chunks
    from imseg.evalnet.ensemble import build_evalnet
    from imseg.evalnet.train import train_evalnet

    split = _split(12, 4)
    masks = torch.cat([split.labels, 1 - split.labels])
    index = torch.arange(12).repeat(2)
    data = EvalNetData(split.images, index, masks,
                       targets_in_chunks(TASK, masks, split.labels, index, CPU))

    def trained(bn_stats: str) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(1)
        net = build_evalnet(TASK, 3, alpha=0.25, bn_momentum=0.01, generator=gen)
        train_evalnet(net, TASK, data, data, EvalNetConfig(epochs=1, batch_size=8), CPU, gen,
                      amp=False, progress=False, bn_stats=bn_stats, bn_stats_batches=2)
        return net.state_dict()

    running, precise = trained("running"), trained("precise")
    stats = {k for k in running if k.endswith(("running_mean", "running_var"))}
    assert stats and all(torch.equal(running[k], precise[k]) for k in running if k not in stats)
    # momentum 0.01 after 3 steps: the running means are still near their initial zeros
    assert all(float((precise[k] - running[k]).abs().max()) > 1e-3 for k in stats)


def test_derived_generator_follows_the_seed_and_draws_nothing_from_it():
    gen = torch.Generator().manual_seed(11)
    first = torch.randint(0, 10**9, (4,), generator=derived_generator(gen))
    assert torch.equal(torch.randint(0, 10**9, (4,), generator=gen),
                       torch.randint(0, 10**9, (4,), generator=torch.Generator().manual_seed(11)))
    again = torch.randint(0, 10**9, (4,), generator=derived_generator(gen))
    other = torch.randint(0, 10**9, (4,),
                          generator=derived_generator(torch.Generator().manual_seed(12)))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_bn_stats_defaults_to_precise_the_papers_presets_keep_running():
    assert TrainConfig().bn_stats == build_config().train.bn_stats == "precise"
    assert build_config(["small"]).train.bn_stats == "precise"
    for preset in ("isic2018", "hela", "suim", "cityscapes", "demo", "quick"):
        assert build_config([preset]).train.bn_stats == "running", preset
    assert build_config(overrides={"train": {"bn_stats": "running"}}).train.bn_stats == "running"
    with pytest.raises(ConfigError, match="bn_stats"):
        build_config(overrides={"train": {"bn_stats": "exact"}})


# ------------------------------------------------------------------------ torchrun
def _synced_model() -> torch.nn.Module:
    model = _model().double()
    return distributed.convert_sync_bn(model, CPU)  # without a group: the same arithmetic


def _stats(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.endswith(("_mean", "_var"))}


def _precise_stats() -> dict[str, torch.Tensor]:
    model = _synced_model()
    cfg = _config(batch_size=8)
    refresh_bn_stats(model, _split(24, 1).images, cfg, CPU,
                     torch.Generator().manual_seed(5))
    return _stats(model)


def _rank(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        torch.save(_precise_stats(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_processes_pool_their_shares_into_the_single_process_statistics(tmp_path: Path):
    out = tmp_path / "stats"
    mp.spawn(_rank, args=(2, str(tmp_path / "pg"), str(out)), nprocs=2)
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]
    single = _precise_stats()
    assert single.keys() == ranks[0].keys()
    for key, value in single.items():
        assert torch.equal(ranks[0][key], ranks[1][key])
        assert torch.allclose(ranks[0][key], value, rtol=1e-9, atol=1e-9), key
    assert any(not torch.allclose(v, _stats(_synced_model())[k]) for k, v in single.items())


def test_a_one_image_batch_on_a_1x1_map_is_one_clear_error():
    # 16 px halves to 1x1 at the tiny U-Net's deepest level; one labeled image is a batch of one
    train = _split(1, 3, size=16)
    with pytest.raises(ConfigError, match="batch of one image.*1x1 feature map.*at least 2"):
        fit(_model(), TASK, train, _split(2, 4, size=16), _config(), CPU,
            torch.Generator().manual_seed(0))
