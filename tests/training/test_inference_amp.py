"""Mixed precision modes: ``auto`` leaves CPU runs in float32, ``always`` uses bfloat16 there
where the CPU has bfloat16 kernels."""

from __future__ import annotations

import logging

import pytest
import torch

from imseg.config import build_config
from imseg.errors import ConfigError
from imseg.logs import log
from imseg.models.unet import build_unet
from imseg.tasks import Task
from imseg.training import inference
from imseg.training.inference import predict_batches

CPU = torch.device("cpu")


def _probs(model, images, amp) -> torch.Tensor:
    return torch.cat([p[0] for _, p in predict_batches([model], images, Task("binary", 1), CPU,
                                                        batch_size=4, amp=amp)])


def test_cpu_bfloat16_only_when_always(monkeypatch):
    monkeypatch.setattr(inference, "cpu_has_bfloat16", lambda: True)  # the path, on any CPU
    gen = torch.Generator().manual_seed(0)
    model = build_unet(3, 1, 0.25, generator=gen).eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=gen)
    exact = _probs(model, images, "never")
    assert torch.equal(_probs(model, images, "auto"), exact)  # CPU default: float32
    assert torch.equal(_probs(model, images, True), exact)
    mixed = _probs(model, images, "always")
    assert not torch.equal(mixed, exact)  # bfloat16 really ran
    assert (mixed - exact).abs().max() < 0.05  # and stays close


def test_always_runs_float32_with_a_warning_on_a_cpu_without_bfloat16(monkeypatch):
    monkeypatch.setattr(inference, "cpu_has_bfloat16", lambda: False)
    inference._warn_no_cpu_bfloat16.cache_clear()
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    log.addHandler(handler)
    try:
        gen = torch.Generator().manual_seed(0)
        model = build_unet(3, 1, 0.25, generator=gen).eval()
        images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=gen)
        assert torch.equal(_probs(model, images, "always"), _probs(model, images, "never"))
        _probs(model, images, "always")
    finally:
        log.removeHandler(handler)
    warnings = [m for m in said if "bfloat16" in m]
    assert len(warnings) == 1 and "float32" in warnings[0]  # said once, not per batch
    assert inference.uses_bfloat16(torch.device("cuda"), "always")  # CUDA is not affected


def test_amp_setting_accepts_bools_and_modes():
    assert build_config().train.amp == "auto"
    assert build_config(overrides={"train": {"amp": True}}).train.amp == "auto"
    assert build_config(overrides={"train": {"amp": False}}).train.amp == "never"
    assert build_config(sets=["train.amp=always"]).train.amp == "always"
    with pytest.raises(ConfigError, match="amp"):
        build_config(overrides={"train": {"amp": "sometimes"}})
