"""A whole training command, imseg against the same layer plan in Keras 3 / TensorFlow.

    python bench/train_command.py [--quick] [--threads N] [--alpha 0.5] [--epochs 5]

Where ``train_speed.py`` times training steps, this times what a user waits for:
``imseg train`` on a prepared folder (start-up, reading the PNGs, every epoch with
its validation, the best checkpoint, the test score, results.csv) against a Keras
script doing what the reference's training does with the same layer plan
(``bench/keras_side.py command``: TensorFlow decodes the PNGs, ``model.fit`` with the
validation IoU after each epoch and the best weights saved, then the test IoU). One
model, the reference's settings (MSE, AdamW lr 3e-3, batch 32, no augmentation),
on a generated 256×256 binary set (``imseg prepare sample``: 128 labeled, 32 val,
32 test, so every epoch is 4 full batches on both sides). Both commands run as
subprocesses pinned to the same cores with the same thread count, alternating
``--rounds`` times; wall time is measured from outside, start-up included.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    MALLOC_ENV,
    ROOT,
    finish,
    keras_python,
    machine,
    median,
    parser,
    pin,
    run_worker,
    worker_env,
)


def timed(cmd: list[str], env: dict, threads: int) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of ``cmd`` run on the first ``threads`` cores."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT,
                          preexec_fn=lambda: pin(threads))
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, proc


def imseg_command(args, data: Path, out: Path) -> dict:
    cmd = [sys.executable, "-m", "imseg", "train", "--data", str(data), "--out", str(out),
           "--epochs", str(args.epochs), "--alpha", str(args.alpha), "--candidates", "1",
           "--keep", "1", "--batch-size", "32", "--device", args.device, "--no-progress",
           "--set", f"train.amp={args.amp}"]
    seconds, _ = timed(cmd, worker_env(args.threads), args.threads)
    with (out / "results.csv").open(newline="") as f:
        row = next(csv.DictReader(f))
    return {"seconds": seconds, "best_epoch": int(row["best_epoch"]),
            "val_iou": float(row["val_iou"]), "test_iou": float(row["test_iou"]),
            "model_seconds": float(row["seconds"])}


def keras_command(args, keras_py: Path, data: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = run_worker([str(keras_py), "bench/keras_side.py", "command", "--data", str(data),
                         "--out", str(out), "--epochs", str(args.epochs), "--alpha",
                         str(args.alpha), "--threads", str(args.threads)],
                        worker_env(args.threads, MALLOC_ENV))
    result["seconds_inside"], result["seconds"] = result["seconds"], time.perf_counter() - start
    return result


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 5; quick 1)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--no-keras", action="store_true")
    args = p.parse_args()
    args.epochs = args.epochs or (1 if args.quick else 5)
    keras_py = None if args.no_keras else keras_python()
    pin(args.threads)  # the driver too stays off the other cores
    print(f"whole training command, 256x256 binary (128 labeled, 32 val, 32 test), alpha "
          f"{args.alpha}, {args.epochs} epoch(s), {args.threads} thread(s)")
    with tempfile.TemporaryDirectory(prefix="imseg-bench-") as tmp:
        data = Path(tmp) / "data"
        subprocess.run([sys.executable, "-m", "imseg", "prepare", "sample", "--task", "binary",
                        "--out", str(data), "--size", "256", "--n", "128",
                        "--labeled-fraction", "1.0"], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        runs: dict[str, list[dict]] = {"imseg": [], "keras": []}
        for r in range(args.rounds):
            runs["imseg"].append(imseg_command(args, data, Path(tmp) / f"imseg{r}"))
            print(f"imseg round {r}: {runs['imseg'][-1]['seconds']:.1f} s", flush=True)
            if keras_py is not None:
                runs["keras"].append(keras_command(args, keras_py, data, Path(tmp) / f"keras{r}"))
                print(f"keras round {r}: {runs['keras'][-1]['seconds']:.1f} s", flush=True)
    result = {"bench": "train_command", "machine": machine(), "threads": args.threads,
              "alpha": args.alpha, "epochs": args.epochs, "runs": runs,
              "imseg_s": median([r["seconds"] for r in runs["imseg"]])}
    line = f"imseg train: {result['imseg_s']:.1f} s"
    if runs["keras"]:
        result["keras_s"] = median([r["seconds"] for r in runs["keras"]])
        result["ratio"] = result["keras_s"] / result["imseg_s"]
        line += (f" | keras: {result['keras_s']:.1f} s | imseg is {result['ratio']:.2f}x "
                 f"as fast (test IoU imseg {runs['imseg'][0]['test_iou']:.3f}, "
                 f"keras {runs['keras'][0]['test_iou']:.3f})")
    print(line)
    finish(args, result)


if __name__ == "__main__":
    main()
