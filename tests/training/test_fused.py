"""fit_fused: S models trained as one grouped network come out as S separate `fit` calls."""

from __future__ import annotations

import pytest
import torch

from imseg.config import build_config
from imseg.data.dataset import Split, load_dataset
from imseg.models.unet import build_unet
from imseg.runtime import seed_everything
from imseg.training.fit import fit
from imseg.training.fused import fit_fused, fusable, use_fused
from imseg.training.inference import evaluate_model

CPU = torch.device("cpu")
SEEDS = (3, 4, 5)


def _config(**train):
    return build_config(overrides={"train": {
        "alpha": 0.25, "epochs": 3, "batch_size": 4, "steps_per_epoch": 2, "bn_momentum": 0.1,
        "eval_batch_size": 8, "bn_stats": "running", **train}}).train


def _net(task, seed: int):
    """A model built as stages build it: global RNG seeded from the model's seed.

    float64: Adam's first steps move each weight by about ±lr whatever the size of its
    gradient, so float32 rounding of a near-zero gradient can flip a step; in float64
    the comparison is sharp (the model casts its uint8 input to its own dtype).
    """
    generator = seed_everything(seed)
    return build_unet(3, task.out_channels, 0.25, bn_momentum=0.1).double(), generator


def _both_ways(data, cfg):
    """Each seed's model trained alone with `fit`, and all of them with `fit_fused`."""
    ds = load_dataset(data)
    train = Split.concat([ds.labeled, ds.unlabeled])  # the sample's truth: 8 pairs
    alone = []
    for seed in SEEDS:
        net, gen = _net(ds.task, seed)
        alone.append(fit(net, ds.task, train, ds.val, cfg, CPU, gen, progress=False))
    nets, gens = zip(*(_net(ds.task, seed) for seed in SEEDS), strict=True)
    fused = fit_fused(list(nets), ds.task, train, ds.val, cfg, CPU, list(gens), progress=False)
    return ds, alone, fused, nets


def _assert_same_states(a: dict, b: dict, rtol: float = 1e-7, atol: float = 1e-9) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=rtol, atol=atol, msg=key)


@pytest.mark.parametrize("kind", ["binary", "multilabel", "multiclass"])
def test_each_fused_model_equals_the_model_trained_alone(kind, request):
    data = request.getfixturevalue(f"{kind}_data")
    ds, alone, fused, nets = _both_ways(data, _config())
    assert len(fused) == len(SEEDS)
    for a, f, net in zip(alone, fused, nets, strict=True):
        assert f.history == pytest.approx(a.history, abs=1e-9)
        assert f.best_epoch == a.best_epoch
        assert f.val["iou"] == pytest.approx(a.val["iou"], abs=1e-9)
        _assert_same_states(a.state, f.state)
        # the net holds its best epoch's weights, as after fit
        _assert_same_states(f.state, net.state_dict(), rtol=0, atol=0)
    # different seeds really train different models
    assert len({tuple(f.history) for f in fused}) == len(SEEDS)


def test_models_keep_their_own_best_epochs(multiclass_data):
    _, alone, fused, nets = _both_ways(multiclass_data, _config(epochs=4))
    best = [f.best_epoch for f in fused]
    assert best == [a.best_epoch for a in alone]
    assert len(set(best)) > 1, "the seeds were chosen so that the best epochs differ"
    ds = load_dataset(multiclass_data)
    for f, net in zip(fused, nets, strict=True):
        assert f.best_epoch == 1 + max(range(4), key=lambda i: (f.history[i], -i))
        score = evaluate_model(net, ds.val, ds.task, CPU, 8)["iou"]
        assert score == pytest.approx(max(f.history), abs=1e-9)


def test_precise_batchnorm_statistics_are_each_models_own(binary_data):
    ds, alone, fused, _ = _both_ways(binary_data, _config(bn_stats="precise", epochs=2))
    for a, f in zip(alone, fused, strict=True):
        # the statistics pass sums in float32 (imseg.training.batchnorm): reduction order
        # differs between one wide and one narrow layer, hence the looser tolerance
        _assert_same_states(a.state, f.state, rtol=1e-4, atol=1e-6)
        assert f.history == pytest.approx(a.history, abs=2e-3)
    # precise statistics differ from the running averages: the option really ran
    net, gen = _net(ds.task, SEEDS[0])
    running = fit(net, ds.task, Split.concat([ds.labeled, ds.unlabeled]), ds.val,
                  _config(epochs=2), CPU, gen, progress=False)
    assert not torch.allclose(running.state["stem.1.running_var"],
                              fused[0].state["stem.1.running_var"])


def test_when_to_fuse():
    assert use_fused("auto", torch.device("cuda")) and not use_fused("auto", CPU)
    assert use_fused("always", CPU) and not use_fused("never", torch.device("cuda"))
    with pytest.raises(ValueError, match="train.fuse"):
        use_fused("sometimes", CPU)
    same = [build_unet(3, 1, 0.25) for _ in range(2)]
    assert fusable(same) is None
    assert "differs" in fusable([*same, build_unet(3, 1, 0.5)])
    assert build_config().train.fuse == "auto"


def test_one_generator_per_model(binary_data):
    ds = load_dataset(binary_data)
    nets = [build_unet(3, 1, 0.25) for _ in range(2)]
    with pytest.raises(ValueError, match="1 generators for 2 models"):
        fit_fused(nets, ds.task, ds.labeled, ds.val, _config(), CPU, [torch.Generator()],
                  progress=False)
