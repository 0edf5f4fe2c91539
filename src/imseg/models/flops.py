"""Forward FLOPs of a network, counted from its convolutions.

Used to size work before doing it (whether compiling a pseudo-labeling pass pays)
and by the benchmarks' roofline (FLOPs over the machine's measured peak).
"""

from __future__ import annotations

import torch
from torch import nn


def conv_flops(model: nn.Module, shape: tuple[int, int, int]) -> int:
    """FLOPs (2 per multiply-add) of every ``Conv2d`` of ``model`` on one ``(C, H, W)`` image.

    Convolutions carry nearly all the arithmetic of the segmentation nets used here;
    the elementwise layers between them cost memory traffic, not FLOPs. One forward
    pass of a single image is run to read the output sizes.
    """
    total = 0

    def count(module: nn.Conv2d, _inputs, out: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        per_output = kernel * (module.in_channels // module.groups)
        total += 2 * per_output * out.shape[1] * out.shape[2] * out.shape[3]

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles = [m.register_forward_hook(count) for m in convs]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *shape), device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total
