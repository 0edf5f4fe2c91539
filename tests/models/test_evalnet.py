"""EvalNet: shapes, ranges, sizes, parameter counts, seeding and a tiny fit."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from imseg.models import EvalNet, TinyUNet, count_parameters


def keras_evalnet_count(
    alpha: float, image_channels: int, mask_channels: int, n_out: int, heads: int, k: int = 3
) -> int:
    """Keras count_params of the reference get_evalnet / get_evalnet_miou, layer by layer."""

    def conv(i: int, o: int, ks: int) -> int:
        return i * o * ks * ks + o

    def block(i: int, o: int) -> int:
        return conv(i, o, k) + conv(o, o, 1) + 4 * o

    f = [int(b * alpha) for b in (16, 32, 64, 128, 256)]
    n = 0
    for cin in (image_channels, mask_channels):
        n += conv(cin, f[0], 1) + 4 * f[0] + block(f[0], f[0])
    prev = 2 * f[0]
    for width in f:
        n += block(prev, width)
        prev = width
    return n + heads * (prev * n_out + n_out)


def _batch(n: int, c: int, m: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    mask = torch.rand(n, m, h, w, generator=g)
    return image, mask


@pytest.mark.parametrize(("c", "h", "w"), [(3, 64, 64), (1, 64, 128), (3, 80, 96)])
def test_binary_variant_shape_and_range(c: int, h: int, w: int) -> None:
    torch.manual_seed(0)
    net = EvalNet(image_channels=c, mask_channels=1, alpha=0.5)
    iou = net(*_batch(3, c, 1, h, w))
    assert iou.shape == (3,)
    assert iou.dtype == torch.float32
    assert bool(((iou > 0) & (iou < 1)).all())


def test_per_class_variant_shapes_and_ranges() -> None:
    torch.manual_seed(0)
    net = EvalNet(image_channels=3, mask_channels=5, n_classes=5, alpha=0.5, per_class=True)
    iou, present = net(*_batch(2, 3, 5, 64, 64))
    assert iou.shape == present.shape == (2, 5)
    for t in (iou, present):
        assert bool(((t >= 0) & (t <= 1)).all())
    assert not torch.allclose(iou, present)  # two separate heads


def test_outputs_are_sigmoid_of_the_head() -> None:
    net = EvalNet(alpha=0.5).eval()
    with torch.no_grad():
        net.iou_head.weight.zero_()
        net.iou_head.bias.fill_(2.0)
    iou = net(*_batch(2, 3, 1, 64, 64))
    torch.testing.assert_close(iou, torch.full((2,), 1 / (1 + torch.exp(torch.tensor(-2.0)))))


def test_prediction_depends_on_image_and_mask() -> None:
    torch.manual_seed(1)
    net = EvalNet(alpha=0.5).eval()
    image, mask = _batch(2, 3, 1, 64, 64)
    base = net(image, mask)
    assert not torch.allclose(base, net(image, 1.0 - mask))
    assert not torch.allclose(base, net(255 - image, mask))
    torch.testing.assert_close(base, net(image.float(), mask))  # uint8 == float 0..255


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_parameter_count_matches_reference_layers(alpha: float) -> None:
    binary = EvalNet(3, 1, 1, alpha)
    per_class = EvalNet(3, 4, 4, alpha, per_class=True)
    assert count_parameters(binary) == keras_evalnet_count(alpha, 3, 1, 1, heads=1)
    assert count_parameters(per_class) == keras_evalnet_count(alpha, 3, 4, 4, heads=2)


def test_parameter_count_grows_with_alpha() -> None:
    counts = [count_parameters(EvalNet(alpha=a)) for a in (0.5, 1.0, 2.0)]
    assert 0 < counts[0] < counts[1] < counts[2]
    assert counts[2] > 3.5 * counts[1]  # widths double: conv weights roughly quadruple


def test_invalid_inputs_raise() -> None:
    net = EvalNet(alpha=0.5)
    image, mask = _batch(1, 3, 1, 64, 64)
    with pytest.raises(ValueError, match="differ"):
        net(image, mask[..., :, :-16])
    with pytest.raises(ValueError, match="mask has 2 channels"):
        net(image, torch.cat([mask, mask], 1))
    with pytest.raises(ValueError, match="per_class"):
        EvalNet(n_classes=3)


def test_same_seed_same_weights() -> None:
    torch.manual_seed(5)
    a = EvalNet(alpha=0.5, per_class=True, mask_channels=2, n_classes=2)
    torch.manual_seed(5)
    b = EvalNet(alpha=0.5, per_class=True, mask_channels=2, n_classes=2)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    c = EvalNet(alpha=0.5, per_class=True, mask_channels=2, n_classes=2)
    assert not torch.equal(a.present_head.weight, c.present_head.weight)


def test_autocast_and_channels_last() -> None:
    torch.manual_seed(3)
    net = EvalNet(alpha=0.5).eval()
    image, mask = _batch(2, 3, 1, 64, 64)
    reference = net(image, mask)
    net = net.to(memory_format=torch.channels_last)
    torch.testing.assert_close(net(image, mask), reference, rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        iou = net(image, mask)
    assert iou.dtype == torch.float32
    torch.testing.assert_close(iou, reference, rtol=0.0, atol=0.05)


def test_few_adam_steps_regress_iou_targets() -> None:
    torch.manual_seed(0)
    net = EvalNet(alpha=0.5)
    image, mask = _batch(2, 3, 1, 64, 64)
    target = torch.tensor([0.1, 0.9])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = F.mse_loss(net(image, mask), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


UNET_SIZES = [(16, 16), (32, 32), (48, 48), (64, 64), (16, 64), (32, 96)]


@pytest.mark.parametrize(("h", "w"), UNET_SIZES)
def test_runs_at_every_unet_size(h: int, w: int) -> None:
    unet = TinyUNet(3, 1, alpha=0.25).eval()
    assert unet(torch.zeros(1, 3, h, w)).shape[-2:] == (h, w)  # a size the U-Net accepts
    torch.manual_seed(0)
    net = EvalNet(image_channels=3, mask_channels=2, n_classes=2, alpha=0.25, per_class=True)
    trunk_sizes = []
    net.trunk.register_forward_hook(lambda _m, _i, out: trunk_sizes.append(out.shape[-2:]))
    iou, present = net(*_batch(2, 3, 2, h, w))
    assert iou.shape == present.shape == (2, 2)
    assert bool(((iou > 0) & (iou < 1)).all())
    # a side stops halving at 1 px instead of pooling down to nothing
    assert tuple(trunk_sizes[0]) == (max(1, h // 64), max(1, w // 64))


def _with_plain_pools(net: EvalNet) -> EvalNet:
    """A copy of ``net`` whose pools are the old unconditional ``nn.MaxPool2d(2)``."""
    old = copy.deepcopy(net)
    blocks = [old.image_branch[2], old.mask_branch[2], *old.trunk]
    for block in blocks:
        block[3] = torch.nn.MaxPool2d(2)
    return old


@pytest.mark.parametrize(("h", "w"), [(64, 64), (80, 96), (64, 128), (208, 416)])
@pytest.mark.parametrize("train", [False, True])
def test_unchanged_from_64_px_on(h: int, w: int, train: bool) -> None:
    torch.manual_seed(4)
    net = EvalNet(alpha=0.25).train(train)
    old = _with_plain_pools(net)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in old.modules()) == 7
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.modules()) == 0
    image, mask = _batch(2, 3, 1, h, w)
    with torch.no_grad():
        assert torch.equal(net(image, mask), old(image, mask))
    assert net.state_dict().keys() == old.state_dict().keys()  # checkpoints still load
