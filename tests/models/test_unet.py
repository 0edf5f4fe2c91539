"""TinyUNet: the paper's parameter counts, shapes, logits, layouts, seeding, learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imseg.models import TinyUNet, build_unet, count_parameters


def keras_count(alpha: float, cin: int = 3, cout: int = 1, k: int = 3) -> int:
    """Keras count_params of the reference get_unet, written out layer by layer."""

    def conv(i: int, o: int, ks: int) -> int:
        return i * o * ks * ks + o

    def bn(c: int) -> int:
        return 4 * c  # gamma, beta, moving mean, moving variance

    f = {b: int(b * alpha) for b in (16, 32, 64, 128, 256)}
    n = conv(cin, f[16], 1) + bn(f[16])
    prev = f[16]
    for b in (16, 32, 64, 128):
        n += conv(prev, f[b], k) + conv(f[b], f[b], 1) + bn(f[b])
        prev = f[b]
    n += conv(prev, f[256], k) + conv(f[256], f[128], 1) + bn(f[128])
    prev = f[128]
    for b1, b2 in ((128, 64), (64, 32), (32, 16), (16, 16)):
        n += conv(prev, f[b1], 1) + bn(f[b1]) + conv(f[b1], f[b1], k)
        n += conv(f[b1], f[b2], 1) + bn(f[b2])
        prev = f[b2]
    return n + conv(prev, cout, 1)


@pytest.mark.parametrize(
    ("alpha", "paper_millions"), [(0.5, 0.172), (1.0, 0.682), (1.5, 1.530), (2.0, 2.718)]
)
def test_parameter_count_matches_paper(alpha: float, paper_millions: float) -> None:
    n = count_parameters(TinyUNet(3, 1, alpha))
    assert n == keras_count(alpha)
    assert abs(n / 1e6 - paper_millions) / paper_millions < 0.01
    assert round(n / 1e6, 3) == paper_millions


def test_parameter_count_without_bn_statistics() -> None:
    model = TinyUNet(3, 1, 1.0)
    bn_channels = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert count_parameters(model, keras_style=False) == 681681 - 2 * bn_channels
    assert count_parameters(model, keras_style=False) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("alpha", "base"), [(0.75, 12), (1.25, 20), (1.75, 28), (0.5, 8)])
def test_fractional_alpha_truncates_like_reference(alpha: float, base: int) -> None:
    model = TinyUNet(3, 2, alpha)
    assert model.stem[0][0].out_channels == base
    assert model.bottleneck[0][0].out_channels == int(256 * alpha)
    assert count_parameters(model) == keras_count(alpha, cout=2)


@pytest.mark.parametrize(("cin", "cout", "size"), [(3, 1, 32), (1, 1, 64), (4, 5, 32), (3, 3, 64)])
def test_output_shape(cin: int, cout: int, size: int) -> None:
    model = TinyUNet(cin, cout, alpha=0.5)
    x = torch.randint(0, 256, (2, cin, size, size + 16), dtype=torch.uint8)
    y = model(x)
    assert y.shape == (2, cout, size, size + 16)
    assert y.dtype == torch.float32


def test_outputs_are_unsquashed_logits() -> None:
    model = TinyUNet(3, 2, alpha=0.5).eval()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([-7.5, 3.25]))
    y = model(torch.full((1, 3, 32, 32), 200.0))
    assert torch.equal(y[:, 0], torch.full((1, 32, 32), -7.5))
    assert torch.equal(y[:, 1], torch.full((1, 32, 32), 3.25))


def test_uint8_and_float_inputs_agree() -> None:
    torch.manual_seed(0)
    model = TinyUNet(3, 1, alpha=0.5).eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(model(x), model(x.float()))
    # the model scales by 1/255 itself: pre-scaled input is a different image
    assert not torch.allclose(model(x), model(x.float() / 255.0), atol=1e-3)


@pytest.mark.parametrize(("h", "w"), [(40, 32), (32, 24), (8, 8)])
def test_size_not_divisible_by_16_raises(h: int, w: int) -> None:
    with pytest.raises(ValueError, match="divisible by 16"):
        TinyUNet(3, 1, alpha=0.5)(torch.zeros(1, 3, h, w))


def test_bad_inputs_and_arguments_raise() -> None:
    model = TinyUNet(3, 1, alpha=0.5)
    with pytest.raises(ValueError, match="expects 3"):
        model(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="4-D"):
        model(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="alpha"):
        TinyUNet(alpha=0.0)
    with pytest.raises(ValueError, match="alpha"):
        TinyUNet(alpha=0.01)
    with pytest.raises(ValueError, match="odd"):
        TinyUNet(kernel_size=4)


def test_channels_last_matches_contiguous() -> None:
    torch.manual_seed(1)
    plain = TinyUNet(3, 2, alpha=0.5).eval()
    fast = build_unet(3, 2, 0.5).eval()
    fast.load_state_dict(plain.state_dict())
    assert fast.stem[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randint(0, 256, (2, 3, 32, 48), dtype=torch.uint8)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    # training mode: batch statistics of a 2x3 bottleneck amplify float32 rounding,
    # so compare in float64 where the two layouts must agree to rounding
    plain.double().train()
    fast.double().train()
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-9, atol=1e-9)


def test_autocast_keeps_float32_logits() -> None:
    torch.manual_seed(2)
    model = build_unet(3, 1, 0.5).eval()
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    reference = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.dtype == torch.float32
    assert torch.corrcoef(torch.stack([y.flatten(), reference.flatten()]))[0, 1] > 0.95


def test_same_seed_same_weights() -> None:
    torch.manual_seed(7)
    a = TinyUNet(3, 1, 0.5)
    torch.manual_seed(7)
    b = TinyUNet(3, 1, 0.5)
    torch.manual_seed(8)
    c = TinyUNet(3, 1, 0.5)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.head.weight, c.head.weight)


def test_generator_seeds_weights() -> None:
    a = TinyUNet(3, 1, 0.5, generator=torch.Generator().manual_seed(3))
    b = TinyUNet(3, 1, 0.5, generator=torch.Generator().manual_seed(3))
    c = TinyUNet(3, 1, 0.5, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.bottleneck[0][0].weight, c.bottleneck[0][0].weight)


def test_he_normal_init() -> None:
    torch.manual_seed(0)
    model = TinyUNet(3, 1, 1.0)
    conv = model.bottleneck[0][0]  # 3x3 conv 128 -> 256: fan_in 1152
    std = math.sqrt(2.0 / 1152)
    assert abs(conv.weight.std().item() / std - 1.0) < 0.03
    assert conv.weight.abs().max().item() <= 2 * std / 0.8796 + 1e-6  # truncated at 2 sd
    assert abs(conv.weight.mean().item()) < 0.05 * std
    biases = [m.bias for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(torch.count_nonzero(b) == 0 for b in biases)


def test_few_adam_steps_fit_two_images() -> None:
    torch.manual_seed(0)
    model = TinyUNet(3, 1, alpha=0.5)
    target = torch.zeros(2, 1, 32, 32)
    target[0, :, 4:20, 8:24] = 1.0
    target[1, :, 16:30, 2:12] = 1.0
    noise = torch.randint(0, 60, (2, 3, 32, 32))
    x = (noise + 150 * target).to(torch.uint8)  # bright squares on a dark, noisy background
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        loss = F.mse_loss(torch.sigmoid(model(x)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
