"""One whole IM generation on an ISIC-sized synthetic set: seconds and peak memory.

    python bench/generation_memory.py [--quick] [--threads N] [--device cpu|cuda]

imseg's own code path: ``experiment.loop.run_generation`` (pseudo-label the
unlabeled split with 3 teachers + IM, build the training set, train S students,
score each on val and test). The data set has the ISIC 2018 sizes of the paper
(259 labeled, 2,335 unlabeled, 100 val, 1,000 test; 256×256 RGB), made of
synthetic images in memory. To keep the run short each student trains few steps
(``--steps``, one epoch): memory, not time, is the target here. The teachers
share one random initialisation with a positive head bias, so they agree
everywhere, the IM is empty and every unlabeled image passes the binary filter:
the largest training set, the worst case for memory. On CPU both allocator
modes are measured: ``reuse`` (freed memory kept for the next batch: fast,
imseg's default from 16 GiB of RAM) and ``low-memory`` (glibc's default). Peak RSS is the process's; on CUDA also
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, finish, machine, parser, run_worker, worker_env

ISIC = {"labeled": 259, "unlabeled": 2335, "val": 100, "test": 1000}

MODES = {"default": {}, "reuse": {"IMSEG_REUSE_FREED_MEMORY": "1"},
         "low-memory": {"IMSEG_REUSE_FREED_MEMORY": "0"}}
"""CPU allocator modes (imseg.training.inference.reuse_freed_memory): imseg's default (on
from 16 GiB of RAM), forced on, forced off."""


def synthetic_split(n: int, size: int, gen, prefix: str):
    """Smooth random blobs: a plausible image and its thresholded mask."""
    import torch
    import torch.nn.functional as F

    from imseg.data.dataset import Split

    if n == 0:
        return Split(torch.empty((0, 3, size, size), dtype=torch.uint8),
                     torch.empty((0, 1, size, size), dtype=torch.uint8), [])
    images, labels = [], []
    for start in range(0, n, 256):  # chunked: the float work stays small
        m = min(256, n - start)
        low = torch.rand((m, 3, size // 16, size // 16), generator=gen)
        img = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        images.append((img * 255).round().to(torch.uint8))
        labels.append((img.mean(dim=1, keepdim=True) > 0.55).to(torch.uint8))
    return Split(torch.cat(images), torch.cat(labels), [f"{prefix}{i:05d}" for i in range(n)])


def worker(args) -> dict:
    import torch
    from _common import peak_rss_mb, pin

    from imseg.config import build_config
    from imseg.data.dataset import Dataset
    from imseg.data.layout import DatasetInfo
    from imseg.experiment.context import RunContext
    from imseg.experiment.loop import Chain, run_generation
    from imseg.experiment.recipes import recipes_of
    from imseg.models.unet import build_unet
    from imseg.results import ResultsTable
    from imseg.storage import save_checkpoint

    pin(args.threads)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = {k: max(1, round(v * args.scale)) for k, v in ISIC.items()}
    gen = torch.Generator().manual_seed(0)
    info = DatasetInfo(task="binary", classes=["lesion"], image_size=(args.size, args.size))
    dataset = Dataset(info, *(synthetic_split(sizes[k], args.size, gen, k[:2])
                              for k in ("labeled", "unlabeled", "val", "test")))
    rss_data = peak_rss_mb()
    cfg = build_config(overrides={
        "device": args.device,
        "train": {"epochs": 1, "steps_per_epoch": args.steps, "alpha": args.alpha,
                  "amp": args.amp, "compile_inference": args.compile_inference},
        "ssl": {"students": args.students},
    })
    run_dir = Path(tempfile.mkdtemp(prefix="imseg-bench-gen-"))
    ctx = RunContext(run_dir, run_dir / "data", cfg, dataset, device,
                     ResultsTable(run_dir / "results.csv"), progress=False)
    teachers = []
    for t in range(3):
        model = build_unet(3, 1, cfg.train.alpha, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            model.head.bias.fill_(4.0)  # positive everywhere: every pair passes the filter
        rel = f"teachers/t{t}.pt"
        save_checkpoint(run_dir / rel, {
            "model": {"kind": "unet", "in_channels": 3, "out_channels": 1,
                      "alpha": cfg.train.alpha, "bn_momentum": cfg.train.bn_momentum},
            "state_dict": model.state_dict()})
        teachers.append({"checkpoint": rel, "val_iou": 0.5 - t / 10})
    start = time.perf_counter()
    rows = run_generation(ctx, recipes_of(cfg)["im"], Chain("im", 0, 3), 1, teachers,
                          dataset.labeled, dataset.unlabeled)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {"device": str(device), "sizes": sizes, "students": args.students,
              "steps_per_student": args.steps, "alpha": cfg.train.alpha,
              "batch": cfg.train.batch_size, "seconds": seconds,
              "train_pairs": rows[0]["n_train_pairs"],
              "student_seconds": [r["seconds"] for r in rows],
              "compile_inference": cfg.train.compile_inference,
              "im_fraction": rows[0].get("im_fraction"),
              "rss_after_data_mb": rss_data, "peak_rss_mb": peak_rss_mb(),
              "framework": f"imseg / torch {torch.__version__}"}
    if device.type == "cuda":
        result["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu"] = torch.cuda.get_device_name()
    return result


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--scale", type=float, default=None,
                   help="fraction of the ISIC sizes (default 1; --quick 0.0625)")
    p.add_argument("--students", type=int, default=None, help="students S (default 2)")
    p.add_argument("--steps", type=int, default=None, help="training steps per student")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--alpha", type=float, default=1.0,
                   help="width of teachers and students (1.0: a growing student's third "
                        "generation; the ISIC preset starts at 0.5)")
    p.add_argument("--budget-gb", type=float, default=6.0, help="the peak-memory target")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=None,
                   help="allocator modes to measure (default: both; --quick: imseg's default)")
    p.add_argument("--compile-inference", default="auto", choices=["auto", "always", "never"],
                   help="train.compile_inference for the pseudo-labeling pass (default auto)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.scale = args.scale or (0.0625 if args.quick else 1.0)
    args.students = args.students or (1 if args.quick else 2)
    args.steps = args.steps or (2 if args.quick else 4)
    if args.worker:
        emit(worker(args))
        return
    cmd = [sys.executable, __file__, "--worker", "--threads", str(args.threads), "--device",
           args.device, "--scale", str(args.scale), "--students", str(args.students),
           "--steps", str(args.steps), "--size", str(args.size), "--alpha", str(args.alpha),
           "--amp", args.amp, "--compile-inference", args.compile_inference]
    modes = args.modes or (["default"] if args.quick or args.device == "cuda"
                           else ["reuse", "low-memory"])
    s = {k: max(1, round(v * args.scale)) for k, v in ISIC.items()}
    print(f"one IM generation, {s['labeled']} labeled + {s['unlabeled']} unlabeled "
          f"(val {s['val']}, test {s['test']}), {args.size}x{args.size}, alpha {args.alpha:g}, "
          f"{args.students} "
          f"student(s) x {args.steps} steps, {args.threads} thread(s), {args.device}")
    result = {"bench": "generation_memory", "machine": machine(), "threads": args.threads,
              "budget_gb": args.budget_gb, "modes": {}}
    for mode in modes:
        r = run_worker(cmd, worker_env(args.threads, MODES[mode]), timeout=7200)
        r["fits_budget"] = r["peak_rss_mb"] / 1024 <= args.budget_gb
        line = (f"{mode:>10}: {r['seconds']:.1f} s; {r['train_pairs']} training pairs; peak "
                f"RSS {r['peak_rss_mb'] / 1024:.2f} GB (after making the data "
                f"{r['rss_after_data_mb'] / 1024:.2f} GB) -> "
                f"{'within' if r['fits_budget'] else 'OVER'} the {args.budget_gb:g} GB target")
        if "cuda_max_allocated_mb" in r:
            line += f"; CUDA max allocated {r['cuda_max_allocated_mb'] / 1024:.2f} GB"
        print(line, flush=True)
        result["modes"][mode] = r
    finish(args, result)


if __name__ == "__main__":
    main()
