"""Training throughput of a stage's S tiny U-Nets: fused (one grouped network) vs one at a time.

    OMP_NUM_THREADS=1 python bench/fused_speed.py [--models 5] [--alpha 0.5] [--size 64]
        [--batch 8] [--device cpu] [--rounds 3] [--steps 5]

Both ways run in this one process, alternating round by round, on the same
in-memory uint8 batches: ``fused`` is one step of
:func:`imseg.training.fused.fused_epoch` (all S models), ``single`` is one step
of :func:`imseg.training.fit.supervised_epoch` for each of the S models in turn.
Images per second count every model's images (S x batch per stage step); the
ratio compares the medians over all timed rounds. The load average is printed
because other processes on the machine change the absolute numbers.
"""

from __future__ import annotations

import os
import time

import torch
from _common import median, parser

from imseg.config import TrainConfig
from imseg.data.dataset import Split
from imseg.models.grouped import GroupedUNet
from imseg.models.unet import build_unet
from imseg.tasks import Task
from imseg.training.fit import Batches, make_optimizer, supervised_epoch
from imseg.training.fused import fused_epoch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(step, device: torch.device, warmup: int, steps: int) -> list[float]:
    """Seconds of each of ``steps`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--models", type=int, default=5, help="S, the models of a stage")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--no-channels-last", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", args.threads)))
    gen = torch.Generator().manual_seed(0)
    n = 4 * args.batch
    images = torch.randint(0, 256, (n, 3, args.size, args.size), dtype=torch.uint8, generator=gen)
    labels = (torch.rand((n, 1, args.size, args.size), generator=gen) < 0.3).to(torch.uint8)
    split = Split(images.to(device), labels.to(device), [str(i) for i in range(n)])
    cfg = TrainConfig(batch_size=args.batch, alpha=args.alpha, amp=args.amp,
                      channels_last=not args.no_channels_last)
    task = Task("binary", 1)
    nets = [build_unet(3, 1, args.alpha, generator=torch.Generator().manual_seed(k)).to(device)
            for k in range(args.models)]
    if not cfg.channels_last:
        nets = [net.to(memory_format=torch.contiguous_format) for net in nets]
    grouped = GroupedUNet.from_nets(nets)
    if cfg.channels_last:
        grouped.to(memory_format=torch.channels_last)
    fused_opt = make_optimizer(grouped, cfg)
    fused_batches = [Batches(split, args.batch, device, torch.Generator().manual_seed(k), steps=1)
                     for k in range(args.models)]
    single = [(net, make_optimizer(net, cfg),
               Batches(split, args.batch, device, torch.Generator().manual_seed(k), steps=1))
              for k, net in enumerate(nets)]

    def fused_step() -> None:
        fused_epoch(grouped, fused_opt, fused_batches, task, cfg, device)

    def single_step() -> None:
        for net, opt, batches in single:
            supervised_epoch(net, opt, batches, task, cfg, device)

    load = os.getloadavg()
    print(f"S={args.models} tiny U-Nets alpha {args.alpha}, {args.size}x{args.size}, batch "
          f"{args.batch}, {device}, threads {torch.get_num_threads()}, amp {args.amp}, "
          f"channels_last {cfg.channels_last}; load average before: "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    fused_t: list[float] = []
    single_t: list[float] = []
    for r in range(args.rounds):
        fused_t += _timed(fused_step, device, args.warmup if r == 0 else 0, args.steps)
        single_t += _timed(single_step, device, args.warmup if r == 0 else 0, args.steps)
    per_step = args.models * args.batch
    fused_ips, single_ips = per_step / median(fused_t), per_step / median(single_t)
    load = os.getloadavg()
    print(f"fused:          {fused_ips:8.1f} img/s ({median(fused_t) * 1e3:.1f} ms per stage step)")
    print(f"one at a time:  {single_ips:8.1f} img/s ({median(single_t) * 1e3:.1f} ms per stage step)")
    print(f"ratio fused / one at a time: {fused_ips / single_ips:.2f}x "
          f"(load average after: {load[0]:.2f})")


if __name__ == "__main__":
    main()
