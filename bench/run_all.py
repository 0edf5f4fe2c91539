"""Run every benchmark in turn (``make bench``); ``--quick`` for a smoke run of about 2 minutes.

    python bench/run_all.py [--quick] [--threads N] [--device cpu|cuda] [--amp MODE] [--out DIR]

Each benchmark also writes its numbers as JSON into ``--out`` (default bench/.out/).
On ``--device cuda`` the Keras side is skipped (it is a CPU reference here).
"""

from __future__ import annotations

import subprocess
import sys
import time

from _common import BENCH, parser

BENCHES = ["train_speed", "train_command", "pseudo_speed", "generation_memory", "tensorboard_cost",
           "generation_cost"]
WITH_KERAS = {"train_speed", "train_command", "pseudo_speed"}
"""The benchmarks with a Keras side (skipped on CUDA)."""


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", default=str(BENCH / ".out"))
    p.add_argument("--only", nargs="+", choices=BENCHES, default=BENCHES)
    args = p.parse_args()
    failed = []
    for name in args.only:
        cmd = [sys.executable, str(BENCH / f"{name}.py"), "--threads", str(args.threads),
               "--device", args.device, "--amp", args.amp, "--json", f"{args.out}/{name}.json"]
        if args.quick:
            cmd.append("--quick")
        if args.device == "cuda" and name in WITH_KERAS:
            cmd.append("--no-keras")
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
        print(f"({time.perf_counter() - start:.0f} s)", flush=True)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
