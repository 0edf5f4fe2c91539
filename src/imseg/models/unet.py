"""The paper's tiny U-Net (docs/method.md §2), rebuilt in PyTorch from the reference layer plan.

Widths follow the reference: ``int(f * alpha)`` filters for a base width ``f``
(truncation, so alpha 0.75 gives 12/24/48/96/192). Skips are **added**, not
concatenated, which keeps the net at 0.17-2.72 M parameters. The model returns
logits; the activation belongs to :meth:`imseg.tasks.Task.activate`.

The small building blocks here (``scaled_filters``, ``conv_relu``,
``batch_norm``, ``init_keras_style``) are shared with :mod:`imseg.models.evalnet`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from imseg.models.perturb import doubled_with_dropout

KERAS_BN_MOMENTUM = 0.01
"""Keras' BatchNormalization momentum 0.99 in PyTorch's convention (1 - 0.99)."""

KERAS_BN_EPS = 1e-3
"""Keras' BatchNormalization epsilon (PyTorch's default is 1e-5)."""

UNET_DIVISOR = 16
"""Four 2x2 max-pools: height and width must be multiples of this."""

_TRUNC_STD_CORRECTION = 0.87962566103423978
"""Std of a unit normal truncated at +-2 std; Keras divides by it (VarianceScaling)."""


def scaled_filters(base: int, alpha: float) -> int:
    """Width of a layer with ``base`` filters at width multiplier ``alpha``, as the reference rounds.

    The reference truncates (``int(base * alpha)``); the tiny epsilon guards
    against products such as ``16 * 1.1 = 17.600000000000001`` landing just
    below an integer when they should equal it.
    """
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    filters = int(base * alpha + 1e-9)
    if filters < 1:
        raise ValueError(f"alpha={alpha} leaves {base}*alpha < 1 filter; use alpha >= {1 / base}")
    return filters


def conv_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Conv with 'same' padding and bias (Keras ``Conv2D(..., activation='relu')``)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=True)
    return nn.Sequential(conv, nn.ReLU(inplace=True))


def batch_norm(channels: int, momentum: float) -> nn.BatchNorm2d:
    """BatchNorm with learnable gamma/beta and Keras' epsilon."""
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPS, momentum=momentum)


def check_kernel_size(kernel_size: int) -> None:
    """Only odd kernels have a symmetric 'same' padding; Keras pads even ones asymmetrically."""
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")


def init_keras_style(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Initialise weights as the reference's Keras layers do.

    Convs: He-normal (Keras' truncated normal, std sqrt(2 / fan_in), cut at 2 std),
    zero bias. Linear: Glorot-uniform, zero bias (Keras ``Dense`` defaults).
    BatchNorm: gamma 1, beta 0. Modules are visited in registration order, so
    the same seed (global or ``generator``) gives the same weights.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            std = math.sqrt(2.0 / fan_in) / _TRUNC_STD_CORRECTION
            nn.init.trunc_normal_(m.weight, 0.0, std, -2 * std, 2 * std, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_image(x: torch.Tensor, channels: int, name: str = "image") -> None:
    """Raise ValueError unless ``x`` is an (N, channels, H, W) batch."""
    if x.ndim != 4:
        raise ValueError(f"{name} must be a 4-D (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(
            f"{name} has {x.shape[1]} channels but the model expects {channels} "
            f"(shape {tuple(x.shape)}; use NCHW order)"
        )


def to_unit_range(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast an image in 0..255 (uint8 or float) to ``dtype`` and scale it to 0..1."""
    return x.to(dtype) / 255.0


def float32_head(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run the output layer outside autocast, like the reference's ``dtype='float32'`` head.

    Keeps logits (and the loss built on them) in full precision under mixed
    precision; without autocast it just runs ``head`` in the model's dtype.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        weight = next(head.parameters())
        return head(x.to(weight.dtype))


class _EncoderStage(nn.Module):
    """k x k conv + ReLU, 1x1 conv + ReLU, BN; returns (skip, pooled)."""

    def __init__(self, cin: int, cout: int, k: int, momentum: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_relu(cin, cout, k), conv_relu(cout, cout, 1), batch_norm(cout, momentum)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.body(x)
        return skip, F.max_pool2d(skip, 2)


class _DecoderStage(nn.Module):
    """Nearest 2x upsample, add the skip, 1x1 conv(f1)+ReLU, BN, kxk conv(f1)+ReLU, 1x1 conv(f2)+ReLU, BN."""

    def __init__(self, cin: int, f1: int, f2: int, k: int, momentum: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_relu(cin, f1, 1),
            batch_norm(f1, momentum),
            conv_relu(f1, f1, k),
            conv_relu(f1, f2, 1),
            batch_norm(f2, momentum),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.body(up + skip)


class TinyUNet(nn.Module):
    """Tiny U-Net of the paper: images in 0..255 (N, C, H, W) -> logits (N, out_channels, H, W).

    ``alpha`` scales every width (16*alpha base filters). H and W must be
    multiples of 16. ``bn_momentum`` defaults to Keras' 0.99 running average
    (0.01 in PyTorch's convention); ``generator`` seeds the initial weights
    (the global RNG when None).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        alpha: float = 1.0,
        kernel_size: int = 3,
        *,
        bn_momentum: float = KERAS_BN_MOMENTUM,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}"
            )
        check_kernel_size(kernel_size)
        f16, f32, f64, f128, f256 = (scaled_filters(b, alpha) for b in (16, 32, 64, 128, 256))
        k, m = kernel_size, bn_momentum
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.alpha = float(alpha)
        self.kernel_size = kernel_size

        self.stem = nn.Sequential(conv_relu(in_channels, f16, 1), batch_norm(f16, m))
        self.encoders = nn.ModuleList(
            [
                _EncoderStage(f16, f16, k, m),
                _EncoderStage(f16, f32, k, m),
                _EncoderStage(f32, f64, k, m),
                _EncoderStage(f64, f128, k, m),
            ]
        )
        self.bottleneck = nn.Sequential(
            conv_relu(f128, f256, k), conv_relu(f256, f128, 1), batch_norm(f128, m)
        )
        self.decoders = nn.ModuleList(
            [
                _DecoderStage(f128, f128, f64, k, m),
                _DecoderStage(f64, f64, f32, k, m),
                _DecoderStage(f32, f32, f16, k, m),
                _DecoderStage(f16, f16, f16, k, m),
            ]
        )
        self.head = nn.Conv2d(f16, out_channels, 1, bias=True)
        init_keras_style(self, generator)

    def forward(self, x: torch.Tensor, feature_dropout: float | None = None) -> torch.Tensor:
        """Logits for a batch of images in 0..255; with ``feature_dropout``, ``2N`` of them:
        the clean ones, then UniMatch's perturbed stream (:mod:`imseg.models.perturb`)."""
        features = self.encode(x)
        if feature_dropout is not None:
            features = doubled_with_dropout(features, feature_dropout)
        return self.decode(features)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's features: the four skips, then the bottleneck's output."""
        check_image(x, self.in_channels)
        h, w = x.shape[-2:]
        if h % UNET_DIVISOR or w % UNET_DIVISOR:
            raise ValueError(
                f"TinyUNet needs height and width divisible by {UNET_DIVISOR} (four 2x2 pools), "
                f"got {h}x{w}; resize or pad the images"
            )
        x = self.stem(to_unit_range(x, self.head.weight.dtype))
        features = []
        for encoder in self.encoders:
            skip, x = encoder(x)
            features.append(skip)
        features.append(self.bottleneck(x))
        return features

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits from :meth:`encode`'s features."""
        *skips, x = features
        for decoder, skip in zip(self.decoders, reversed(skips), strict=True):
            x = decoder(x, skip)
        return float32_head(self.head, x)


def count_parameters(model: nn.Module, keras_style: bool = True) -> int:
    """Number of parameters; by default counted as Keras does, to compare with the paper.

    Keras' ``count_params`` includes BatchNorm's moving mean and variance (not
    trainable), so ``keras_style`` adds the BN running statistics to the
    parameters; ``keras_style=False`` counts only ``model.parameters()``.
    """
    n = sum(p.numel() for p in model.parameters())
    if keras_style:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                n += m.running_mean.numel() + m.running_var.numel()
    return n


def build_unet(
    in_channels: int,
    out_channels: int,
    alpha: float,
    *,
    kernel_size: int = 3,
    bn_momentum: float = 0.01,
    generator: torch.Generator | None = None,
) -> TinyUNet:
    """A :class:`TinyUNet` in channels_last memory format (faster convs on GPU)."""
    model = TinyUNet(in_channels, out_channels, alpha, kernel_size, bn_momentum=bn_momentum,
                     generator=generator)
    return model.to(memory_format=torch.channels_last)
