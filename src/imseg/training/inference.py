"""Batched inference and evaluation on in-memory uint8 images."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from collections.abc import Iterator

import torch
from torch import nn

from imseg.config import AmpMode, AutoMode, amp_mode
from imseg.data.dataset import Split
from imseg.evaluation.metrics import MetricAccumulator
from imseg.logs import log
from imseg.models.flops import conv_flops
from imseg.tasks import Task


def uses_bfloat16(device: torch.device, amp: AmpMode | bool = True) -> bool:
    """Whether ``amp`` means bfloat16 on ``device``: on CUDA unless ``never``; on CPU only
    for ``always`` (it changes the numbers there) and only where the CPU has bfloat16
    kernels (:func:`cpu_has_bfloat16`); elsewhere ``always`` runs float32, with a warning."""
    mode = amp_mode(amp)
    if device.type == "cuda":
        return mode != "never"
    if device.type != "cpu" or mode != "always":
        return False
    if not cpu_has_bfloat16():
        _warn_no_cpu_bfloat16()
        return False
    return True


@functools.cache
def cpu_has_bfloat16() -> bool:
    """Whether oneDNN has bfloat16 kernels for this CPU (AVX-512 and newer x86, Arm with BF16).

    Without them bfloat16 convolutions and matmuls run as scalar fallbacks: on an
    AVX2-only EPYC (Zen 3) a bfloat16 matmul ran at 1.9 GFLOP/s against 118 in float32,
    and pseudo-labeling with ``amp: always`` 11x slower than without. Where torch
    cannot say, the user's choice stands.
    """
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else True
    except (RuntimeError, AttributeError):
        return True


@functools.cache
def _warn_no_cpu_bfloat16() -> None:
    log.warning("train.amp is 'always', but this CPU has no bfloat16 kernels (they would run "
                "~10x slower than float32 here): running in float32")


def autocast(device: torch.device, amp: AmpMode | bool = True) -> contextlib.AbstractContextManager:
    """bfloat16 autocast where :func:`uses_bfloat16` says so (no loss scaling needed)."""
    if uses_bfloat16(device, amp):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.cache
def reuse_freed_memory() -> bool:
    """Let glibc keep freed memory for the next batch instead of unmapping it (CPU speed).

    By default glibc serves each block over 32 MiB (every activation of a
    256×256 batch) with a fresh ``mmap`` and unmaps it on free, so every CPU
    step pays page faults and kernel zeroing again: about 45% of a training
    step of the tiny U-Net. Raising the mmap and trim thresholds keeps those
    pages in the process: CPU training steps run about 1.8x faster (a whole
    ISIC-sized generation about 5x), but freed blocks stay resident, so the
    peak grows (ISIC-sized generation at alpha 1: 6.2 GiB instead of 5.0). Hence it is
    on only where the machine has ``_REUSE_MIN_RAM`` or more;
    ``IMSEG_REUSE_FREED_MEMORY=1`` / ``=0`` forces it on / off. Applied once, on
    the first CPU batch. Returns whether it was applied (glibc on Linux only).
    """
    choice = os.environ.get("IMSEG_REUSE_FREED_MEMORY", "auto")
    if choice == "0" or not sys.platform.startswith("linux"):
        return False
    if choice != "1" and _physical_memory() < _REUSE_MIN_RAM:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
                    and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc (musl): leave the allocator alone
        return False


def release_freed_memory() -> None:
    """Hand free heap pages back to the system between phases (after pseudo-labeling).

    With :func:`reuse_freed_memory` on, glibc never trims on its own, so what one
    phase freed in scattered pieces would stay resident under the next phase's
    peak. ``malloc_trim`` returns those pages (a cheap call, made rarely).
    """
    if reuse_freed_memory.cache_info().currsize and reuse_freed_memory():
        ctypes.CDLL("libc.so.6").malloc_trim(0)


_REUSE_MIN_RAM = 16 * 2**30
"""Physical memory from which :func:`reuse_freed_memory` trades memory for speed by default."""


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


CPU_COMPILE_MIN_FLOP = 2e12
"""Convolution FLOPs from which compiling a CPU pseudo-labeling pass pays (``compile_inference:
auto``). Compiled (fused BatchNorm, ReLU, pooling, upsampling and adds around oneDNN's
convolutions) the tiny U-Net labels 1.2-1.3x (alpha 1) to 1.6x (alpha 0.5) faster on 2 cores;
the first compile of an architecture and batch shape costs ~20 s, so a pass of 2 TFLOP
(~20 s eager there) about breaks even, and every later pass of the study reuses torch's
compile cache (~1 s)."""


def compiles_inference(setting: AutoMode, device: torch.device, flop: float) -> bool:
    """Whether a pass of ``flop`` convolution FLOPs runs compiled under ``train.compile_inference``.

    ``auto`` compiles on CPU only: on CUDA a pseudo-labeling pass of these nets takes
    seconds, less than the compile.
    """
    if setting == "always":
        return True
    return setting == "auto" and device.type == "cpu" and flop >= CPU_COMPILE_MIN_FLOP


class CompiledFullBatches(nn.Module):
    """``model`` compiled for the batch shape it first sees; other shapes run eagerly.

    A pass's batches all have one shape but the last; compiling that one too (or
    compiling for dynamic shapes) would cost a second compile for a single batch.
    Where compiling fails (no C++ compiler, an operator inductor lacks), this and every
    other model of the process runs eagerly from then on, after one warning: the
    numbers are right either way.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.__dict__["_compiled"] = torch.compile(model, dynamic=False)  # not a submodule
        self._shape: torch.Size | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _COMPILE_FAILED and self._shape in (None, x.shape):
            try:
                out = self._compiled(x)
                self._shape = x.shape
                return out
            except Exception as error:  # noqa: BLE001 - eager gives the same result
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                _COMPILE_FAILED.append(f"{type(error).__name__}: {first[:200]}")
                log.warning("compiling %s for inference failed (%s); running eagerly, and not "
                            "compiling again in this process", type(self.model).__name__,
                            _COMPILE_FAILED[0])
        return self.model(x)


_COMPILE_FAILED: list[str] = []
"""Why compiling failed in this process, if it did: later passes then stay eager at once
(a missing C++ compiler fails every compile, one warning is enough)."""


def for_inference(models: list[nn.Module], images: int, shape: tuple[int, ...],
                  device: torch.device, setting: AutoMode,
                  forwards_per_image: int | None = None) -> list[nn.Module]:
    """``models`` as a pass over ``images`` images of ``shape`` ``(C, H, W)`` should run them:
    compiled (:class:`CompiledFullBatches`) where :func:`compiles_inference` says so, else
    as given. ``forwards_per_image``: model calls per image (default one per model; an
    input ensemble calls one model once per view)."""
    if not models or images == 0 or setting == "never" or _COMPILE_FAILED:
        return models
    calls = forwards_per_image or len(models)
    flop = conv_flops(models[0], tuple(shape)) * images * calls
    if not compiles_inference(setting, device, flop):
        return models
    log.info("compiling %d model(s) for a pass of %.1f TFLOP (compile_inference: %s)",
             len(models), flop / 1e12, setting)
    return [CompiledFullBatches(m) for m in models]


def to_input(images: torch.Tensor, device: torch.device, channels_last: bool = True) -> torch.Tensor:
    """uint8 images → float tensor on ``device`` (the model scales by 1/255 itself)."""
    if device.type == "cpu":
        reuse_freed_memory()
    x = images.to(device, non_blocking=True).float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict_batches(
    models: list[nn.Module],
    images: torch.Tensor,
    task: Task,
    device: torch.device,
    batch_size: int = 64,
    amp: AmpMode | bool = True,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(index slice, probabilities)`` per batch; probabilities are
    ``(n_models, B, out_channels, H, W)`` float32 on ``device``.

    Streaming keeps memory bounded: a multiclass data set's full probability
    maps would not fit, its labels do.
    """
    for m in models:
        m.eval()
    for start in range(0, images.shape[0], batch_size):
        sl = slice(start, min(start + batch_size, images.shape[0]))
        x = to_input(images[sl], device)
        with autocast(device, amp):
            probs = torch.stack([task.activate(m(x)) for m in models])
        yield sl, probs.float()


def evaluate_model(
    model: nn.Module,
    split: Split,
    task: Task,
    device: torch.device,
    batch_size: int = 64,
    amp: AmpMode | bool = True,
    test: bool = False,
) -> dict:
    """Score one model on a labeled split (headline ``iou``, ``dice``, per-class values;
    ``test``: the data set's ``test_metrics`` too)."""
    if split.labels is None or len(split) == 0:
        return {}
    acc = MetricAccumulator(task, test)
    for sl, probs in predict_batches([model], split.images, task, device, batch_size, amp):
        labels, groups = split.scored(sl)
        acc.update(task.to_label(probs[0]), labels.to(device), groups)
    return acc.compute()
