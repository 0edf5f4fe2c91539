"""Networks: the paper's tiny U-Net and EvalNet (mask-quality regressor)."""

from imseg.models.evalnet import EvalNet
from imseg.models.unet import TinyUNet, build_unet, count_parameters

__all__ = ["EvalNet", "TinyUNet", "build_unet", "count_parameters"]
