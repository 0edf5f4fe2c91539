"""Data-parallel training of one model (DDP) under ``torchrun``; a no-op otherwise.

``torchrun --nproc-per-node N -m imseg train ...`` starts N processes with the
same command. Each holds the whole split in memory, draws the same global batch
from the same seeded permutation and trains on its share (``shard``); DDP
averages the gradients, so with equal shares (global batch divisible by N) and
synchronised BatchNorm the update equals the single-process one up to float
error. Without ``sync_bn`` each process normalises with the statistics of its
own share, as usual for DDP. Rank 0 writes files; the others follow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from imseg.errors import ConfigError


@dataclass(frozen=True)
class Member:
    """This process's place in the group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


def active() -> bool:
    """Whether a process group with more than one member is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def member() -> Member:
    if not active():
        return Member()
    return Member(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def shard() -> tuple[int, int]:
    """``(rank, world)`` for splitting a global batch; ``(0, 1)`` when not distributed."""
    m = member()
    return m.rank, m.world


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def process_group(device_name: str = "auto") -> Iterator[tuple[Member, torch.device | None]]:
    """Join the group torchrun set up (NCCL on GPUs, Gloo on CPUs) and leave it at the end.

    Yields this process's Member and the device it trains on (``cuda:LOCAL_RANK``),
    or ``(Member(), None)`` when not launched by torchrun: the caller then picks
    the device as usual.
    """
    if not launched() or active():
        yield member(), None
        return
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name == "cuda" and not use_cuda:
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        yield member(), device
        dist.barrier()  # the others wait until rank 0 has written everything
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


# ------------------------------------------------------------------------ the model
class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum that every rank uses is the sum of theirs."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the whole global batch, on any device.

    torch's SyncBatchNorm runs on GPUs only; this one all-reduces per-channel sums
    (autograd-aware, so gradients flow through the shared statistics) and so also
    works with Gloo on CPUs. Same parameters and buffers as BatchNorm2d; without a
    process group it is a BatchNorm2d with float64 statistics.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        # Sums in float64, as torch's CPU BatchNorm accumulates: a one-pass variance
        # in float32 loses digits that the tiny U-Net's 14 BN layers amplify.
        dims = [0, 2, 3]
        xd = x.double()
        count = torch.full((1,), float(x.numel() // x.shape[1]), dtype=torch.float64,
                           device=x.device)
        total = torch.cat([xd.sum(dims), xd.square().sum(dims), count])
        if active():
            total = _AllReduceSum.apply(total)
        c = x.shape[1]
        n = total[2 * c]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean.square()).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1 / float(
                    self.num_batches_tracked)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        shape = (1, c, 1, 1)
        scale = torch.rsqrt(var + self.eps).to(x.dtype)
        y = (x - mean.to(x.dtype).view(shape)) * scale.view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """Synchronised BatchNorm in place of every BatchNorm2d (torch's on CUDA, Gloo's else).

    The parameters stay the same objects, so an optimizer built before still applies.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            like = next(iter(child.state_dict().values()), None)
            sync = GlooSyncBatchNorm(child.num_features, child.eps, child.momentum,
                                     child.affine, child.track_running_stats,
                                     device=None if like is None else like.device,
                                     dtype=None if like is None else like.dtype)
            sync.load_state_dict(child.state_dict())
            if child.affine:
                sync.weight, sync.bias = child.weight, child.bias
            sync.train(child.training)
            setattr(model, name, sync)
        else:
            convert_sync_bn(child, device)
    return model


def wrap(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """The model to step with: DDP around it (BatchNorm synced if asked) when
    distributed, else the model itself."""
    if not active():
        return model
    if sync_bn:
        convert_sync_bn(model, device)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running stats) to every rank, so that all
    evaluate the same model."""
    if active():
        for buf in model.buffers():
            dist.broadcast(buf, 0)
