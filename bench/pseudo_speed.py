"""Pseudo-labeling throughput: 3 teachers + the Inconsistency Mask over 512 images of 256×256.

    python bench/pseudo_speed.py [--quick] [--threads N] [--alpha 1.0]

imseg: the ``inconsistency`` labeler (batched, streamed, default SSL settings), eager and
compiled (``train.compile_inference``; ``--no-compile``: eager only), in one worker.
Reference way: Keras, one image at a time through ``model.predict`` for every
teacher, then the IM, blocking and the binary filter in NumPy (as the reference's
pseudo-labeling functions do). Physical limit: the teachers' forward conv FLOPs
(counted from the model's layers) over the best FLOP/s of a large matmul measured in
the same worker before and after the passes, in the dtype imseg computed in (bfloat16
under ``--amp always`` where the CPU has bfloat16 kernels, else float32). Teachers are freshly initialised (speed does not
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


def peak_matmul_flops(device, dtype) -> dict:
    """Best FLOP/s of a large square matmul in ``dtype`` (TF32 off on CUDA: true float32)."""
    import torch

    n = 8192 if device.type == "cuda" else 2048
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(8):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return {"n": n, "flops_per_s": 2 * n**3 / best}


def imseg_worker(args) -> dict:
    """The labeling pass eager and compiled (``train.compile_inference``), each after a warm-up
    batch (which holds the compile), in one process; the matmul peak before and after."""
    import torch
    from _common import peak_rss_mb, pin

    from imseg.config import Config, SSLConfig
    from imseg.models.flops import conv_flops
    from imseg.models.unet import build_unet
    from imseg.pseudo.labelers import LABELERS, LabelingInput
    from imseg.tasks import Task
    from imseg.training.inference import for_inference, uses_bfloat16

    pin(args.threads)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bfloat16 = uses_bfloat16(device, args.amp)
    dtype = torch.bfloat16 if bfloat16 else torch.float32
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8,
                           generator=gen)
    teachers = []
    for t in range(args.teachers):
        model = build_unet(3, 1, args.alpha, generator=torch.Generator().manual_seed(t))
        teachers.append(model.to(device).eval())
    task = Task("binary", 1)
    ssl = SSLConfig()

    def run(models, imgs):
        inp = LabelingInput(task=task, teachers=models, images=imgs, device=device,
                            batch_size=ssl.pseudo_batch_size,
                            generator=torch.Generator().manual_seed(1), n=len(models),
                            amp=args.amp)
        out = LABELERS.parse("inconsistency", Config(), "bench").label(inp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    peaks = [peak_matmul_flops(device, dtype)["flops_per_s"]]
    flops_per_image = conv_flops(teachers[0], (3, args.size, args.size))
    passes = {}
    ways = {"eager": teachers}
    if not args.no_compile:
        ways["compiled"] = for_inference(teachers, len(images), tuple(images.shape[1:]), device,
                                         "always")
    for way, models in ways.items():
        start = time.perf_counter()
        run(models, images[: min(len(images), ssl.pseudo_batch_size)])  # warm-up (+ compile)
        warmup = time.perf_counter() - start
        start, cpu = time.perf_counter(), time.process_time()
        out = run(models, images)
        passes[way] = {"seconds": time.perf_counter() - start, "warmup_seconds": warmup,
                       "cpu_seconds": time.process_time() - cpu, "kept": len(out)}
    peaks.append(peak_matmul_flops(device, dtype)["flops_per_s"])
    peak = max(peaks)
    ideal = args.teachers * args.images * flops_per_image / peak
    for p in passes.values():
        p["images_per_s"] = args.images / p["seconds"]
        p["share_of_peak"] = ideal / p["seconds"]
    result = {"framework": f"imseg / torch {torch.__version__}", "device": str(device),
              "images": args.images, "teachers": args.teachers, "passes": passes,
              "batch": ssl.pseudo_batch_size, "amp_asked": args.amp, "amp": bfloat16,
              "peak_dtype": str(dtype).removeprefix("torch."),
              "forward_gflop_per_image": flops_per_image / 1e9,
              "peak_matmul_gflops": peak / 1e9, "peak_matmul_gflops_each": [x / 1e9 for x in peaks],
              "ideal_seconds": ideal, "peak_rss_mb": peak_rss_mb()}
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
    p.add_argument("--no-compile", action="store_true",
                   help="time the eager pass only (default: eager and compiled)")
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
                        "--amp", args.amp, "--images", str(images), *common,
                        *(["--no-compile"] if args.no_compile else [])],
                       worker_env(args.threads))
    best = imseg["passes"].get("compiled", imseg["passes"]["eager"])
    imseg["images_per_s"] = best["images_per_s"]
    result = {"bench": "pseudo_speed", "machine": machine(), "threads": args.threads,
              "imseg": imseg, "imseg_vs_physical_limit": 1 / best["share_of_peak"]}
    if args.amp == "always" and not imseg["amp"]:
        print("amp always: this CPU has no bfloat16 kernels, so imseg ran float32 "
              "(imseg.training.inference.cpu_has_bfloat16)")
    print(f"physical limit: {args.teachers} x {imseg['forward_gflop_per_image']:.2f} GFLOP "
          f"per image at the measured {imseg['peak_dtype']} matmul peak "
          f"{imseg['peak_matmul_gflops']:.0f} GFLOP/s (best of "
          f"{', '.join(f'{x:.0f}' for x in imseg['peak_matmul_gflops_each'])}) "
          f"= {imseg['ideal_seconds']:.1f} s")
    for way, p in imseg["passes"].items():
        print(f"imseg {way}: {imseg['images']} images in {p['seconds']:.1f} s = "
              f"{p['images_per_s']:.2f} img/s, {100 * p['share_of_peak']:.0f}% of peak "
              f"({p['kept']} pairs kept; warm-up batch {p['warmup_seconds']:.1f} s)")
    if "compiled" in imseg["passes"]:
        result["compiled_vs_eager"] = (imseg["passes"]["compiled"]["images_per_s"]
                                       / imseg["passes"]["eager"]["images_per_s"])
        print(f"compiled / eager: {result['compiled_vs_eager']:.2f}x")
    if keras_py is not None:
        keras = run_worker([str(keras_py), "bench/keras_side.py", "pseudo", "--images",
                            str(keras_images), "--warmup", "2", *common],
                           worker_env(args.threads, MALLOC_ENV))
        keras["images_per_s"] = keras["images"] / keras["seconds"]
        result["keras_one_at_a_time"] = keras
        result["ratio"] = imseg["images_per_s"] / keras["images_per_s"]
        print(f"reference way (Keras, one image at a time): {keras['images']} images in "
              f"{keras['seconds']:.1f} s = {keras['images_per_s']:.2f} img/s")
        print(f"ratio: imseg ({'compiled' if 'compiled' in imseg['passes'] else 'eager'}) is "
              f"{result['ratio']:.1f}x the one-image-at-a-time reference")
    finish(args, result)


if __name__ == "__main__":
    main()
