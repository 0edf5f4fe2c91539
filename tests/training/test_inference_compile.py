"""Compiled inference (``train.compile_inference``): when a pass compiles, and that compiled
teachers label as the eager ones do."""

from __future__ import annotations

import logging

import pytest
import torch

from imseg.config import build_config
from imseg.errors import ConfigError
from imseg.logs import log
from imseg.models.flops import conv_flops
from imseg.models.unet import build_unet
from imseg.pseudo.labelers import LABELERS, LabelingInput
from imseg.tasks import Task
from imseg.training import inference
from imseg.training.inference import CompiledFullBatches, compiles_inference, for_inference

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _teacher(seed: int) -> torch.nn.Module:
    """A tiny U-Net with non-trivial BatchNorm statistics (as a trained teacher has)."""
    gen = torch.Generator().manual_seed(seed)
    model = build_unet(3, 1, 0.25, generator=gen)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1, generator=gen)
            m.running_var.uniform_(0.5, 2, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.uniform_(-0.5, 0.5, generator=gen)
    return model.eval()


def _images(n: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(7))


def _said(during) -> list[str]:
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    log.addHandler(handler)
    try:
        during()
    finally:
        log.removeHandler(handler)
    return said


def test_auto_compiles_large_cpu_passes_only():
    big = inference.CPU_COMPILE_MIN_FLOP
    assert compiles_inference("auto", CPU, big) and not compiles_inference("auto", CPU, big / 2)
    assert not compiles_inference("auto", CUDA, 100 * big)  # a GPU pass is shorter than a compile
    assert compiles_inference("always", CUDA, 1) and compiles_inference("always", CPU, 1)
    assert not compiles_inference("never", CPU, 100 * big)
    assert build_config().train.compile_inference == "auto"
    with pytest.raises(ConfigError, match="compile_inference"):
        build_config(sets=["train.compile_inference=sometimes"])


def test_a_pass_is_sized_by_its_images_and_model_calls(monkeypatch):
    teachers = [_teacher(0), _teacher(1)]
    one_call = conv_flops(teachers[0], (3, 32, 32)) * 10
    shape = (3, 32, 32)
    assert for_inference(teachers, 10, shape, CPU, "auto") is teachers  # tiny: stays eager
    monkeypatch.setattr(inference, "CPU_COMPILE_MIN_FLOP", 2.5 * one_call)
    assert for_inference(teachers, 10, shape, CPU, "auto") is teachers  # 2 teachers: 2 calls
    views = for_inference(teachers[:1], 10, shape, CPU, "auto", forwards_per_image=3)
    assert isinstance(views[0], CompiledFullBatches)  # an input ensemble's 3 views of one
    assert for_inference(teachers, 10, shape, CPU, "never") is teachers
    assert for_inference(teachers, 0, shape, CPU, "always") is teachers  # nothing to label


def test_compiled_teachers_label_as_eager_ones():
    """Full batches run compiled, the last partial one eagerly; labels match eager ones."""
    teachers = [_teacher(k) for k in range(3)]
    images = _images(10)
    compiled = for_inference(teachers, len(images), (3, 32, 32), CPU, "always")

    def label(labeler, models):  # batches of 4, 4 and 2
        return LABELERS.classes[labeler]().label(LabelingInput(
            task=Task("binary", 1), teachers=models, images=images, device=CPU, batch_size=4,
            generator=torch.Generator().manual_seed(1), n=3))

    eager, fast = label("inconsistency", teachers), label("inconsistency", compiled)
    assert all(c._shape == (4, 3, 32, 32) for c in compiled)  # compiled for the full batch
    assert eager.im_fraction > 0.01  # the teachers disagree somewhere
    assert fast.im_fraction == pytest.approx(eager.im_fraction, abs=1e-3)
    eager, fast = label("threshold", teachers), label("threshold", compiled)  # keeps every image
    assert len(fast) == 10 and 0 < eager.labels.float().mean() < 1
    assert (fast.labels == eager.labels).float().mean() > 0.999  # the last bits may differ
    assert torch.equal(label("threshold", compiled).labels, fast.labels)  # compiled repeats
    x = inference.to_input(images[:2], CPU)
    with torch.no_grad():
        assert torch.equal(compiled[0](x), teachers[0](x))  # another shape: eager, no compile
        full = inference.to_input(images[:4], CPU)
        assert torch.allclose(compiled[0](full), teachers[0](full), atol=1e-4)


def test_a_failing_compile_runs_eagerly_after_one_warning(monkeypatch):
    def broken(model, **_):
        def call(x):
            raise RuntimeError("no working C++ compiler found\nmore detail")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(inference, "_COMPILE_FAILED", [])
    teachers = [_teacher(0), _teacher(1)]
    wrapped = for_inference(teachers, 4, (3, 32, 32), CPU, "always")
    x = inference.to_input(_images(4), CPU)
    outs: list[torch.Tensor] = []
    with torch.no_grad():
        said = _said(lambda: outs.extend([wrapped[0](x), wrapped[0](x), wrapped[1](x)]))
        assert torch.equal(outs[0], teachers[0](x)) and torch.equal(outs[1], outs[0])
        assert torch.equal(outs[2], teachers[1](x))
    assert len(said) == 1 and "no working C++ compiler found" in said[0]  # once, not per model
    assert "more detail" not in said[0]  # its first line, not a traceback
    assert for_inference(teachers, 4, (3, 32, 32), CPU, "always") is teachers  # later passes
