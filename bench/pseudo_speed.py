"""Pseudo-labeling throughput: 3 teachers + the Inconsistency Mask over 512 images of 256×256.

    python bench/pseudo_speed.py [--quick] [--threads N] [--alpha 1.0]

imseg: ``LABELERS["inconsistency"]`` (batched, streamed, default SSL settings).
Reference way: Keras, one image at a time through ``model.predict`` for every
teacher, then the IM, blocking and the binary filter in NumPy (as the reference's
pseudo-labeling functions do). Physical limit: the teachers' forward conv FLOPs
(counted from the model's layers) over the peak FLOP/s of a large float32 matmul
measured in the same worker. Teachers are freshly initialised (speed does not
depend on the weights).
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
    parser,
    run_worker,
    worker_env,
)


def conv_flops(model, size: int, channels: int = 3) -> int:
    """Forward FLOPs (2 per multiply-add) of every Conv2d of ``model`` on one ``size``² image."""
    import torch
    from torch import nn

    total = 0

    def hook(module: nn.Conv2d, _inp, out) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        macs = out.shape[1] * out.shape[2] * out.shape[3] * (module.in_channels // module.groups) * k
        total += 2 * macs

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros((1, channels, size, size), device=next(model.parameters()).device))
    model.train(was_training)
    for h in handles:
        h.remove()
    return total


def peak_matmul_flops(device, threads: int) -> dict:
    """Best float32 FLOP/s of a large square matmul (TF32 off on CUDA: true float32)."""
    import torch

    n = 8192 if device.type == "cuda" else 2048
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(6):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return {"n": n, "flops_per_s": 2 * n**3 / best}


def imseg_worker(args) -> dict:
    import torch
    from _common import peak_rss_mb, pin

    from imseg.config import SSLConfig
    from imseg.models.unet import build_unet
    from imseg.pseudo.labelers import LABELERS, LabelingInput
    from imseg.tasks import Task
    from imseg.training.inference import uses_bfloat16

    pin(args.threads)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8,
                           generator=gen)
    teachers = []
    for t in range(args.teachers):
        model = build_unet(3, 1, args.alpha, generator=torch.Generator().manual_seed(t))
        teachers.append(model.to(device).eval())
    task = Task("binary", 1)
    ssl = SSLConfig()

    def run(imgs):
        inp = LabelingInput(task=task, teachers=teachers, images=imgs, device=device, ssl=ssl,
                            generator=torch.Generator().manual_seed(1), n=len(teachers),
                            amp=args.amp)
        out = LABELERS["inconsistency"](inp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    run(images[: min(len(images), ssl.pseudo_batch_size)])  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    out = run(images)
    seconds = time.perf_counter() - start
    flops_per_image = conv_flops(teachers[0], args.size)
    peak = peak_matmul_flops(device, args.threads)
    ideal = args.teachers * args.images * flops_per_image / peak["flops_per_s"]
    result = {"framework": f"imseg / torch {torch.__version__}", "device": str(device),
              "images": args.images, "teachers": args.teachers, "seconds": seconds,
              "cpu_seconds": time.process_time() - cpu, "kept": len(out),
              "batch": ssl.pseudo_batch_size,
              "amp": uses_bfloat16(device, args.amp),
              "forward_gflop_per_image": flops_per_image / 1e9,
              "peak_matmul_gflops": peak["flops_per_s"] / 1e9, "ideal_seconds": ideal,
              "peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
        result["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--alpha", type=float, default=1.0, help="teacher width (default 1.0)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--images", type=int, default=None, help="imseg images (default 512)")
    p.add_argument("--keras-images", type=int, default=None,
                   help="images for the one-at-a-time reference (default: as --images); its "
                        "rate is per image, so a subset measures it")
    p.add_argument("--teachers", type=int, default=3)
    p.add_argument("--no-keras", action="store_true")
    p.add_argument("--worker", choices=["imseg"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        emit(imseg_worker(args))
        return
    images = args.images or (64 if args.quick else 512)
    keras_images = args.keras_images or (8 if args.quick else images)
    common = ["--threads", str(args.threads), "--alpha", str(args.alpha), "--size",
              str(args.size), "--teachers", str(args.teachers)]
    print(f"pseudo-labeling, {args.teachers} teachers (alpha {args.alpha}) + IM, "
          f"{args.size}x{args.size}, {args.threads} thread(s), imseg on {args.device} "
          f"(amp {args.amp})")
    keras_py = None if args.no_keras else keras_python()
    imseg = run_worker([sys.executable, __file__, "--worker", "imseg", "--device", args.device,
                        "--amp", args.amp, "--images", str(images), *common],
                       worker_env(args.threads))
    imseg["images_per_s"] = imseg["images"] / imseg["seconds"]
    result = {"bench": "pseudo_speed", "machine": machine(), "threads": args.threads,
              "imseg": imseg,
              "imseg_vs_physical_limit": imseg["seconds"] / imseg["ideal_seconds"]}
    print(f"imseg: {imseg['images']} images in {imseg['seconds']:.1f} s = "
          f"{imseg['images_per_s']:.2f} img/s ({imseg['kept']} pairs kept)")
    print(f"physical limit: {args.teachers} x {imseg['forward_gflop_per_image']:.2f} GFLOP "
          f"per image at the measured matmul peak {imseg['peak_matmul_gflops']:.0f} GFLOP/s "
          f"= {imseg['ideal_seconds']:.1f} s; imseg takes "
          f"{result['imseg_vs_physical_limit']:.1f}x that "
          f"({100 / result['imseg_vs_physical_limit']:.0f}% of peak)"
          + (" [a float32 peak; bfloat16 units go beyond it]" if imseg["amp"] else ""))
    if keras_py is not None:
        keras = run_worker([str(keras_py), "bench/keras_side.py", "pseudo", "--images",
                            str(keras_images), "--warmup", "2", *common],
                           worker_env(args.threads, MALLOC_ENV))
        keras["images_per_s"] = keras["images"] / keras["seconds"]
        result["keras_one_at_a_time"] = keras
        result["ratio"] = imseg["images_per_s"] / keras["images_per_s"]
        print(f"reference way (Keras, one image at a time): {keras['images']} images in "
              f"{keras['seconds']:.1f} s = {keras['images_per_s']:.2f} img/s")
        print(f"ratio: imseg is {result['ratio']:.1f}x the one-image-at-a-time reference")
    finish(args, result)


if __name__ == "__main__":
    main()
