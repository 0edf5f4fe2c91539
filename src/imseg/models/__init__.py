"""Networks: the paper's tiny U-Net and EvalNet (mask-quality regressor).

The nets are imported on first use (PEP 562), so that :mod:`imseg.config`, which checks
model names with :mod:`imseg.models.names`, does not import torch.
"""

from __future__ import annotations

import importlib

_HOMES = {"EvalNet": "evalnet", "TinyUNet": "unet", "build_unet": "unet",
          "count_parameters": "unet"}

__all__ = ["EvalNet", "TinyUNet", "build_unet", "count_parameters"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
