"""EvalNet (docs/method.md §2): predicts how good a segmentation mask is without the truth.

It sees an image and a candidate mask and regresses the mask's IoU against the
unseen ground truth; the per-class variant (the reference's "miou" net) also
predicts, per class, whether the class is present. Used to pick pseudo labels
and augmented copies.

Six 2x2 max-pools floor odd sizes, as in the reference (Cityscapes' 208x416
works). Inputs under 64 px would pool a side down to nothing, so a pool leaves
alone any side already at 1 px: the net runs at every size (e.g. the U-Net's
16 or 32 px) and is unchanged from 64 px on, where no side reaches 1 px early.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imseg.models.unet import (
    KERAS_BN_MOMENTUM,
    batch_norm,
    check_image,
    check_kernel_size,
    conv_relu,
    float32_head,
    init_keras_style,
    scaled_filters,
    to_unit_range,
)


class _SafeMaxPool(nn.Module):
    """2x2 max-pool that skips sides already at 1 px (a plain 2x2 pool elsewhere).

    Without parameters, so checkpoints and parameter counts stay as before.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = tuple(min(2, side) for side in x.shape[-2:])
        if kernel == (1, 1):
            return x
        return F.max_pool2d(x, kernel)


def _conv_block(cin: int, cout: int, k: int, momentum: float) -> nn.Sequential:
    """k x k conv + ReLU, 1x1 conv + ReLU, BN, 2x2 max-pool (see :class:`_SafeMaxPool`)."""
    return nn.Sequential(
        conv_relu(cin, cout, k),
        conv_relu(cout, cout, 1),
        batch_norm(cout, momentum),
        _SafeMaxPool(),
    )


def _branch(cin: int, f: int, k: int, momentum: float) -> nn.Sequential:
    """Input block (1x1 conv + ReLU, BN) followed by one conv block."""
    return nn.Sequential(
        conv_relu(cin, f, 1), batch_norm(f, momentum), _conv_block(f, f, k, momentum)
    )


class EvalNet(nn.Module):
    """Image (N, C, H, W) in 0..255 + mask (N, M, H, W) in 0..1 -> predicted IoU.

    ``per_class=False``: ``forward`` returns (N,) IoU scores in [0, 1].
    ``per_class=True``: returns ``(iou, present)``, each (N, n_classes) in [0, 1].
    The mask's encoding (binary, one-hot, multilabel) is the caller's choice;
    the net only needs ``mask_channels``. ``generator`` seeds the initial weights.
    """

    def __init__(
        self,
        image_channels: int = 3,
        mask_channels: int = 1,
        n_classes: int = 1,
        alpha: float = 1.0,
        per_class: bool = False,
        *,
        kernel_size: int = 3,
        bn_momentum: float = KERAS_BN_MOMENTUM,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if image_channels < 1 or mask_channels < 1 or n_classes < 1:
            raise ValueError(
                "image_channels, mask_channels and n_classes must be >= 1, got "
                f"{image_channels}, {mask_channels}, {n_classes}"
            )
        if not per_class and n_classes != 1:
            raise ValueError(
                f"the single-score EvalNet predicts one IoU; n_classes={n_classes} needs per_class=True"
            )
        check_kernel_size(kernel_size)
        widths = [scaled_filters(b, alpha) for b in (16, 32, 64, 128, 256)]
        f16, k, m = widths[0], kernel_size, bn_momentum
        self.image_channels = image_channels
        self.mask_channels = mask_channels
        self.n_classes = n_classes
        self.alpha = float(alpha)
        self.per_class = per_class

        self.image_branch = _branch(image_channels, f16, k, m)
        self.mask_branch = _branch(mask_channels, f16, k, m)
        cins = [2 * f16, *widths[:-1]]
        self.trunk = nn.Sequential(
            *(_conv_block(ci, co, k, m) for ci, co in zip(cins, widths, strict=True))
        )
        self.iou_head = nn.Linear(widths[-1], n_classes)
        self.present_head = nn.Linear(widths[-1], n_classes) if per_class else None
        init_keras_style(self, generator)

    def forward(
        self, image: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predicted IoU (and, per class, presence) of ``mask`` for ``image``."""
        check_image(image, self.image_channels, "image")
        check_image(mask, self.mask_channels, "mask")
        if image.shape[0] != mask.shape[0] or image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(
                f"image {tuple(image.shape)} and mask {tuple(mask.shape)} differ in batch or size"
            )
        dtype = self.iou_head.weight.dtype
        a = self.image_branch(to_unit_range(image, dtype))
        b = self.mask_branch(mask.to(dtype))
        x = self.trunk(torch.cat([a, b], dim=1))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        iou = torch.sigmoid(float32_head(self.iou_head, x))
        if self.present_head is None:
            return iou.squeeze(1)
        return iou, torch.sigmoid(float32_head(self.present_head, x))
