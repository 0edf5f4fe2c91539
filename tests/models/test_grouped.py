"""GroupedUNet: S tiny U-Nets as one grouped network give each net's own outputs and weights."""

from __future__ import annotations

import pytest
import torch

from imseg.models.checkpoint import SMP, ModelSpec
from imseg.models.grouped import (
    GroupedUNet,
    split_outputs,
    stack_inputs,
    why_not_groupable,
    why_spec_not_groupable,
)
from imseg.models.unet import build_unet

S = 3


def _nets(out_channels: int, alpha: float, dtype=torch.float32, momentum: float = 0.1):
    """S nets with their own seeded initial weights, in the default (contiguous) layout.

    channels_last is left out on purpose: on CPU torch's channels_last BatchNorm in training
    mode loses ~1e-4 relative precision in float32, which would swamp the comparison.
    """
    return [build_unet(3, out_channels, alpha, bn_momentum=momentum,
                       generator=torch.Generator().manual_seed(seed))
            .to(dtype=dtype, memory_format=torch.contiguous_format) for seed in range(S)]


def _images(size: int = 32, batch: int = 2) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(9)
    return [torch.randint(0, 256, (batch, 3, size, size), generator=gen, dtype=torch.uint8)
            for _ in range(S)]


def _compare(nets, grouped, images, train: bool) -> float:
    """Largest difference between each net's logits and its share of the grouped logits,
    relative to the largest logit."""
    grouped.train(train)
    for net in nets:
        net.train(train)
    with torch.no_grad():
        fused = split_outputs(grouped(stack_inputs(images)), S)
        alone = [net(x) for net, x in zip(nets, images, strict=True)]
    assert [f.shape for f in fused] == [a.shape for a in alone]
    scale = max(1.0, max(float(a.abs().max()) for a in alone))
    return max(float((f - a).abs().max()) for f, a in zip(fused, alone, strict=True)) / scale


@pytest.mark.parametrize("out_channels", [1, 3, 4], ids=["binary", "multilabel", "multiclass"])
@pytest.mark.parametrize("alpha", [0.25, 0.5])
def test_grouped_forward_equals_each_net_float32(out_channels, alpha):
    nets = _nets(out_channels, alpha)
    grouped = GroupedUNet.from_nets(nets)
    images = _images()
    assert _compare(nets, grouped, images, train=False) < 1e-5
    # batch statistics over 2 images of 2x2 pixels at the bottleneck amplify rounding, and
    # their summation order follows the thread count (1e-4 at one thread, 2e-4 at two);
    # float64 equality is tested below
    assert _compare(nets, grouped, images, train=True) < 1e-3
    # the training forward moved every model's BatchNorm statistics as its own net's
    for k, net in enumerate(nets):
        for key, value in net.state_dict().items():
            torch.testing.assert_close(grouped.model_state(k)[key], value, rtol=1e-4, atol=1e-5)


def test_grouped_forward_equals_each_net_float64_exactly():
    nets = _nets(4, 0.5, torch.float64)
    grouped = GroupedUNet.from_nets(nets)
    assert _compare(nets, grouped, _images(), train=True) < 1e-12


def test_each_model_sees_only_its_own_channel_group():
    nets = _nets(1, 0.25, torch.float64)
    grouped = GroupedUNet.from_nets(nets).eval()
    images = _images()
    with torch.no_grad():
        before = split_outputs(grouped(stack_inputs(images)), S)
        images[1] = 255 - images[1]
        after = split_outputs(grouped(stack_inputs(images)), S)
    assert torch.equal(before[0], after[0]) and torch.equal(before[2], after[2])
    assert not torch.allclose(before[1], after[1])


def test_model_states_round_trip_into_single_nets():
    nets = _nets(3, 0.25)
    grouped = GroupedUNet.from_nets(nets)
    for k, net in enumerate(nets):
        state = grouped.model_state(k)
        assert state.keys() == net.state_dict().keys()
        assert all(torch.equal(state[key], v) for key, v in net.state_dict().items())
    fresh = build_unet(3, 3, 0.25)
    fresh.load_state_dict(grouped.model_state(2))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(),
                                                 nets[2].state_dict().values(), strict=True))


def test_keras_quirks_are_kept_uint8_input_and_float32_head_under_autocast():
    nets = [net.eval() for net in _nets(4, 0.25)]
    grouped = GroupedUNet.from_nets(nets).eval()
    images = _images()
    x = stack_inputs(images)
    with torch.no_grad():
        assert torch.equal(grouped(x), grouped(x.float()))  # 0..255 in, scaled inside
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fused = grouped(x.float())
            alone = [net(img.float()) for net, img in zip(nets, images, strict=True)]
    assert fused.dtype == torch.float32
    for f, a in zip(split_outputs(fused, S), alone, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(f, a, rtol=1e-2, atol=1e-2)


def test_size_and_channel_checks_still_apply():
    grouped = GroupedUNet.from_nets(_nets(1, 0.25))
    with pytest.raises(ValueError, match="divisible by 16"):
        grouped(torch.zeros(1, 3 * S, 24, 24))
    with pytest.raises(ValueError, match=f"expects {3 * S}"):
        grouped(torch.zeros(1, 3, 32, 32))


def test_nets_of_different_shapes_are_not_grouped():
    assert why_not_groupable(_nets(1, 0.25)) is None
    mixed = [*_nets(1, 0.25)[:2], build_unet(3, 1, 0.5)]
    assert "net 2 differs" in why_not_groupable(mixed)
    assert "only TinyUNet" in why_not_groupable([torch.nn.Conv2d(3, 1, 1)])
    other_momentum = [*_nets(1, 0.25)[:2], *_nets(1, 0.25, momentum=0.01)[:1]]
    with pytest.raises(ValueError, match="cannot group"):
        GroupedUNet.from_nets(other_momentum)


def test_a_spec_says_whether_its_nets_group_before_any_is_built():
    assert why_spec_not_groupable(ModelSpec(3, 1, alpha=0.5)) is None
    smp = ModelSpec(3, 1, kind=SMP, arch="Unet", encoder="resnet18")
    assert why_spec_not_groupable(smp) == "Unet/resnet18 is an smp model"
