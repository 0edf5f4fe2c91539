"""Training throughput: imseg's tiny U-Net against the same layer plan in Keras 3 / TensorFlow,
and a stage's S models trained fused (one grouped network) against one at a time.

    python bench/train_speed.py [--quick] [--threads N] [--alphas 0.5 1.5] [--models S]
    python bench/train_speed.py --device cuda --no-keras --models 5 --alphas 0.5 1.0

256×256 RGB, batch 32, MSE on the sigmoid output, AdamW (lr 3e-3, wd 1e-4), both
sides fed from in-memory uint8 batches. The frameworks run in separate processes one
after another (``--rounds`` times, alternating), pinned to the same cores with the same
thread count; warm-up steps are excluded. Ratios use the median step time over all
timed steps of all rounds.

With ``--models S`` (> 1) imseg times a *stage step*: one optimizer step of each of S
models, fused (:func:`imseg.training.fused.fused_epoch` on one grouped network) and one
at a time (S calls of :func:`imseg.training.fit.supervised_epoch`), each in its own
worker; img/s counts all S models' images. Keras trains its models one at a time, so
its img/s for S models equals one model's.
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
    """One stage step of S models (``--models``): S supervised steps one at a time
    (``--mode single``), or one step of the S models grouped (``--mode fused``)."""
    import torch
    from _common import StepTimer, peak_rss_mb, pin

    from imseg.config import TrainConfig
    from imseg.data.dataset import Split
    from imseg.models.grouped import GroupedUNet
    from imseg.models.unet import build_unet, count_parameters
    from imseg.tasks import Task
    from imseg.training.fit import Batches, compile_mode, make_optimizer, supervised_epoch
    from imseg.training.fused import fused_epoch
    from imseg.training.inference import uses_bfloat16

    pin(args.threads)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    n = 2 * args.batch
    images = torch.randint(0, 256, (n, 3, args.size, args.size), dtype=torch.uint8, generator=gen)
    labels = (torch.rand((n, 1, args.size, args.size), generator=gen) < 0.3).to(torch.uint8)
    split = Split(images, labels, [str(i) for i in range(n)])
    cfg = TrainConfig(batch_size=args.batch, alpha=args.alpha, amp=args.amp,
                      compile=True if args.compile == "default" else (args.compile or False))

    def maybe_compiled(net):  # on any device, unlike training's `compiled` (CUDA only)
        return torch.compile(net, mode=compile_mode(cfg)) if args.compile else net

    task = Task("binary", 1)
    nets = [build_unet(3, 1, args.alpha, generator=torch.Generator().manual_seed(k)).to(device)
            for k in range(args.models)]

    def batches(k: int) -> Batches:
        return Batches(split, args.batch, device, torch.Generator().manual_seed(k), steps=1)

    if args.mode == "fused":
        grouped = GroupedUNet.from_nets(nets).to(memory_format=torch.channels_last)
        optimizer = make_optimizer(grouped, cfg)
        step_model = maybe_compiled(grouped)
        fused_batches = [batches(k) for k in range(args.models)]

        def stage_step() -> None:
            fused_epoch(step_model, optimizer, fused_batches, task, cfg, device)
    else:
        singles = [(maybe_compiled(net), make_optimizer(net, cfg),
                    batches(k)) for k, net in enumerate(nets)]

        def stage_step() -> None:
            for net, optimizer, b in singles:
                supervised_epoch(net, optimizer, b, task, cfg, device)

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
            stage_step()
            sync()
    out = {"framework": f"imseg / torch {torch.__version__}", "device": str(device),
           "amp": uses_bfloat16(device, cfg.amp), "compile": args.compile,
           "mode": args.mode, "models": args.models,
           "params": count_parameters(nets[0]), "warmup_s": warmup_s, "wall": timer.wall,
           "cpu": timer.cpu, "peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    return out


def summarize(runs: list[dict], batch: int) -> dict:
    """Medians over every timed step; img/s counts the images of all the step's models."""
    wall = [w for r in runs for w in r["wall"]]
    cpu = [c for r in runs for c in r["cpu"]]
    images = batch * runs[0].get("models", 1)
    return {"framework": runs[0]["framework"], "params": runs[0]["params"],
            "step_s_median": median(wall), "step_s_best": min(wall),
            "cpu_s_per_step_median": median(cpu), "images_per_s": images / median(wall),
            "warmup_s": [r["warmup_s"] for r in runs],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            **{k: runs[0][k] for k in ("jit_compile", "amp", "compile", "device", "gpu",
                                       "cuda_max_allocated_mb") if k in runs[0]}}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--alphas", type=float, nargs="+", default=None)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--models", type=int, default=1,
                   help="S, the models of a stage: > 1 also times them fused")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--compile", nargs="?", const="default", default=None,
                   choices=["default", "reduce-overhead", "max-autotune"],
                   help="torch.compile the imseg model (a mode: reduce-overhead = CUDA graphs)")
    p.add_argument("--no-keras", action="store_true", help="imseg only (e.g. on a GPU machine)")
    p.add_argument("--worker", choices=["imseg"], help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=["single", "fused"], default="single",
                   help=argparse.SUPPRESS)
    p.add_argument("--alpha", type=float, default=1.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        emit(imseg_worker(args))
        return
    alphas = args.alphas or ([0.5] if args.quick else [0.5, 1.5])
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    steps = args.steps or (2 if args.quick else 5)
    rounds = args.rounds or (1 if args.quick else 2)
    modes = ["single", "fused"] if args.models > 1 else ["single"]
    keras_py = None if args.no_keras else keras_python()
    env = worker_env(args.threads)
    results = {"bench": "train_speed", "machine": machine(), "threads": args.threads,
               "batch": args.batch, "size": args.size, "models": args.models,
               "warmup_steps": warmup, "timed_steps": steps, "rounds": rounds, "alphas": {}}
    print(f"training throughput, {args.size}x{args.size}, batch {args.batch}, "
          f"{args.threads} thread(s), imseg on {args.device} (amp {args.amp}), "
          f"{args.models} model(s) a stage step")
    for alpha in alphas:
        common = ["--threads", str(args.threads), "--alpha", str(alpha), "--size",
                  str(args.size), "--batch", str(args.batch), "--warmup", str(warmup),
                  "--steps", str(steps)]
        imseg_cmd = [sys.executable, __file__, "--worker", "imseg", "--device", args.device,
                     "--amp", args.amp, "--models", str(args.models), *common,
                     *(["--compile", args.compile] if args.compile else [])]
        keras_cmd = None if keras_py is None else [str(keras_py), "bench/keras_side.py",
                                                   "train", *common]
        runs: dict[str, list[dict]] = {mode: [] for mode in modes}
        keras_runs: list[dict] = []
        for _ in range(rounds):
            for mode in modes:
                runs[mode].append(run_worker([*imseg_cmd, "--mode", mode], env))
            if keras_cmd:
                keras_runs.append(run_worker(keras_cmd, worker_env(args.threads, MALLOC_ENV)))
        row = {"imseg": summarize(runs["single"], args.batch)}
        if "fused" in runs:
            row["imseg_fused"] = summarize(runs["fused"], args.batch)
            row["fused_vs_single"] = (row["imseg_fused"]["images_per_s"]
                                      / row["imseg"]["images_per_s"])
        if keras_runs:
            row["keras"] = summarize(keras_runs, args.batch)
            row["ratio"] = row["imseg"]["images_per_s"] / row["keras"]["images_per_s"]
            row["ratio_best_step"] = (args.models * row["keras"]["step_s_best"]
                                      / row["imseg"]["step_s_best"])  # img/s at the best steps
            if "imseg_fused" in row:
                row["fused_vs_keras"] = (row["imseg_fused"]["images_per_s"]
                                         / row["keras"]["images_per_s"])
        results["alphas"][str(alpha)] = row
        print(_line(alpha, row), flush=True)
    finish(args, results)


def _line(alpha: float, row: dict) -> str:
    single = row["imseg"]
    line = (f"alpha {alpha}: imseg {single['images_per_s']:.2f} img/s one at a time "
            f"({single['step_s_median']:.3f} s/stage step, {single['params']:,} params)")
    if "imseg_fused" in row:
        line += (f" | fused {row['imseg_fused']['images_per_s']:.2f} img/s, "
                 f"{row['fused_vs_single']:.2f}x one at a time")
    if "keras" in row:
        line += (f" | keras {row['keras']['images_per_s']:.2f} img/s "
                 f"({row['keras']['step_s_median']:.2f} s/step) | "
                 f"imseg/keras {row['ratio']:.2f}x (best step {row['ratio_best_step']:.2f}x)")
        if "fused_vs_keras" in row:
            line += f", fused/keras {row['fused_vs_keras']:.2f}x"
    return line


if __name__ == "__main__":
    main()
