"""Mixed precision modes: ``auto`` leaves CPU runs in float32, ``always`` uses bfloat16 there."""

from __future__ import annotations

import pytest
import torch

from imseg.config import build_config
from imseg.errors import ConfigError
from imseg.models.unet import build_unet
from imseg.tasks import Task
from imseg.training.inference import predict_batches

CPU = torch.device("cpu")


def _probs(model, images, amp) -> torch.Tensor:
    return torch.cat([p[0] for _, p in predict_batches([model], images, Task("binary", 1), CPU,
                                                        batch_size=4, amp=amp)])


def test_cpu_bfloat16_only_when_always():
    gen = torch.Generator().manual_seed(0)
    model = build_unet(3, 1, 0.25, generator=gen).eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=gen)
    exact = _probs(model, images, "never")
    assert torch.equal(_probs(model, images, "auto"), exact)  # CPU default: float32
    assert torch.equal(_probs(model, images, True), exact)
    mixed = _probs(model, images, "always")
    assert not torch.equal(mixed, exact)  # bfloat16 really ran
    assert (mixed - exact).abs().max() < 0.05  # and stays close


def test_amp_setting_accepts_bools_and_modes():
    assert build_config().train.amp == "auto"
    assert build_config(overrides={"train": {"amp": True}}).train.amp == "auto"
    assert build_config(overrides={"train": {"amp": False}}).train.amp == "never"
    assert build_config(sets=["train.amp=always"]).train.amp == "always"
    with pytest.raises(ConfigError, match="amp"):
        build_config(overrides={"train": {"amp": "sometimes"}})
