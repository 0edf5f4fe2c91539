"""Training throughput: imseg's tiny U-Net against the same layer plan in Keras 3 / TensorFlow.

    python bench/train_speed.py [--quick] [--threads N] [--alphas 0.5 1.5]

256×256 RGB, batch 32, MSE on the sigmoid output, AdamW (lr 3e-3, wd 1e-4), both
sides fed from in-memory uint8 batches. The two frameworks run in separate
processes one after another (``--rounds`` times, alternating), pinned to the same
cores with the same thread count; warm-up steps are excluded. The ratio uses the
median step time over all timed steps of all rounds.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import (
    MALLOC_ENV,
    emit,
    finish,
    keras_python,
    machine,
    median,
    parser,
    run_worker,
    worker_env,
)


def imseg_worker(args) -> dict:
    """imseg's own training step: Batches + supervised_epoch (one step per call)."""
    import torch
    from _common import StepTimer, peak_rss_mb, pin

    from imseg.config import TrainConfig
    from imseg.data.dataset import Split
    from imseg.models.unet import build_unet, count_parameters
    from imseg.tasks import Task
    from imseg.training.fit import Batches, make_optimizer, supervised_epoch
    from imseg.training.inference import uses_bfloat16

    pin(args.threads)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    n = 2 * args.batch
    images = torch.randint(0, 256, (n, 3, args.size, args.size), dtype=torch.uint8, generator=gen)
    labels = (torch.rand((n, 1, args.size, args.size), generator=gen) < 0.3).to(torch.uint8)
    cfg = TrainConfig(batch_size=args.batch, alpha=args.alpha, compile=args.compile,
                      amp=args.amp)
    task = Task("binary", 1)
    model = build_unet(3, 1, args.alpha, generator=gen).to(device)
    optimizer = make_optimizer(model, cfg)
    step_model = torch.compile(model) if args.compile else model
    batches = Batches(Split(images, labels, [str(i) for i in range(n)]), args.batch, device,
                      gen, steps=1)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    timer = StepTimer()
    start = time.perf_counter()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync()
            warmup_s, timer = time.perf_counter() - start, StepTimer()
        with timer:
            supervised_epoch(step_model, optimizer, batches, task, cfg, device)
            sync()
    out = {"framework": f"imseg / torch {torch.__version__}", "device": str(device),
           "amp": uses_bfloat16(device, cfg.amp),
           "compile": args.compile,
           "params": count_parameters(model), "warmup_s": warmup_s, "wall": timer.wall,
           "cpu": timer.cpu, "peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    return out


def summarize(runs: list[dict], batch: int) -> dict:
    wall = [w for r in runs for w in r["wall"]]
    cpu = [c for r in runs for c in r["cpu"]]
    return {"framework": runs[0]["framework"], "params": runs[0]["params"],
            "step_s_median": median(wall), "step_s_best": min(wall),
            "cpu_s_per_step_median": median(cpu), "images_per_s": batch / median(wall),
            "warmup_s": [r["warmup_s"] for r in runs],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            **{k: runs[0][k] for k in ("jit_compile", "amp", "compile", "device", "gpu",
                                       "cuda_max_allocated_mb") if k in runs[0]}}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--alphas", type=float, nargs="+", default=None)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="torch.compile the imseg model")
    p.add_argument("--no-keras", action="store_true", help="imseg only (e.g. on a GPU machine)")
    p.add_argument("--worker", choices=["imseg"], help=argparse.SUPPRESS)
    p.add_argument("--alpha", type=float, default=1.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        emit(imseg_worker(args))
        return
    alphas = args.alphas or ([0.5] if args.quick else [0.5, 1.5])
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    steps = args.steps or (2 if args.quick else 5)
    rounds = args.rounds or (1 if args.quick else 2)
    keras_py = None if args.no_keras else keras_python()
    env = worker_env(args.threads)
    results = {"bench": "train_speed", "machine": machine(), "threads": args.threads,
               "batch": args.batch, "size": args.size, "warmup_steps": warmup,
               "timed_steps": steps, "rounds": rounds, "alphas": {}}
    print(f"training throughput, {args.size}x{args.size}, batch {args.batch}, "
          f"{args.threads} thread(s), imseg on {args.device} (amp {args.amp})")
    for alpha in alphas:
        common = ["--threads", str(args.threads), "--alpha", str(alpha), "--size",
                  str(args.size), "--batch", str(args.batch), "--warmup", str(warmup),
                  "--steps", str(steps)]
        imseg_cmd = [sys.executable, __file__, "--worker", "imseg", "--device", args.device,
                     "--amp", args.amp, *common, *(["--compile"] if args.compile else [])]
        keras_cmd = None if keras_py is None else [str(keras_py), "bench/keras_side.py",
                                                   "train", *common]
        imseg_runs, keras_runs = [], []
        for _ in range(rounds):
            imseg_runs.append(run_worker(imseg_cmd, env))
            if keras_cmd:
                keras_runs.append(run_worker(keras_cmd, worker_env(args.threads, MALLOC_ENV)))
        row = {"imseg": summarize(imseg_runs, args.batch)}
        if keras_runs:
            row["keras"] = summarize(keras_runs, args.batch)
            row["ratio"] = row["imseg"]["images_per_s"] / row["keras"]["images_per_s"]
            row["ratio_best_step"] = row["keras"]["step_s_best"] / row["imseg"]["step_s_best"]
        results["alphas"][str(alpha)] = row
        line = (f"alpha {alpha}: imseg {row['imseg']['images_per_s']:.2f} img/s "
                f"({row['imseg']['step_s_median']:.2f} s/step, "
                f"{row['imseg']['params']:,} params)")
        if keras_runs:
            line += (f" | keras {row['keras']['images_per_s']:.2f} img/s "
                     f"({row['keras']['step_s_median']:.2f} s/step) | "
                     f"ratio {row['ratio']:.2f}x (best step {row['ratio_best_step']:.2f}x)")
        print(line, flush=True)
    finish(args, results)


if __name__ == "__main__":
    main()
