"""Shared helpers of the benchmarks: worker processes, threads, timing, memory, the Keras venv.

Every benchmark is a *driver* that starts one *worker* process per framework, one
after another, with the same thread count and the same CPU cores, and compares
what they print. Workers print one line ``RESULT {json}`` as their last result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
KERAS_VENV = Path(os.environ.get("IMSEG_KERAS_VENV",
                                 Path.home() / ".cache" / "imseg" / "bench-venv-keras"))
"""The Keras venv lives outside the repo (1.6 GB): copies of the working tree stay small."""
KERAS_REQUIREMENTS = BENCH / "requirements-keras.txt"

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
"""glibc settings equal to what imseg applies in-process (imseg.training.inference.
reuse_freed_memory), given to the Keras worker so both sides run on the same allocator policy."""


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small smoke-sized run (~1 minute)")
    p.add_argument("--threads", type=int, default=default_threads(),
                   help="threads (and cores) given to every worker (default: all cores)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="imseg's device (the Keras side always runs on CPU)")
    p.add_argument("--amp", default="auto", choices=["auto", "always", "never"],
                   help="imseg's mixed precision (train.amp): auto = bfloat16 on CUDA only, "
                        "always = on CPU too (not the default: it changes the numbers)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p


# ------------------------------------------------------------------------- workers
def pin(threads: int) -> None:
    """Restrict this process to the first ``threads`` cores it may use."""
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cores)


def worker_env(threads: int, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(BENCH) + os.pathsep + env.get("PYTHONPATH", "")})
    env.update(extra or {})
    return env


def run_worker(cmd: list[str], env: dict, timeout: float = 3600) -> dict:
    """Run a worker and return the JSON of its ``RESULT`` line (raises with its output if none)."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"worker {' '.join(cmd)} failed (exit {proc.returncode}):\n"
                       f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def emit(result: dict) -> None:
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------- measuring
class StepTimer:
    """Wall and process-CPU seconds of each timed step."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __enter__(self) -> StepTimer:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall.append(time.perf_counter() - self._w)
        self.cpu.append(time.process_time() - self._c)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def machine() -> dict:
    """What the numbers were measured on, and how busy it was."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": model, "cores": os.cpu_count(), "load_1min": load,
            "python": platform.python_version()}


def load_warning(threads: int) -> str | None:
    load = machine()["load_1min"]
    if load is not None and load > (os.cpu_count() or 1) + 0.5:
        return (f"note: load average {load:.1f} on {os.cpu_count()} cores — other processes "
                "compete for the CPU; ratios are measured side by side but absolute numbers "
                "are pessimistic")
    return None


# ------------------------------------------------------------------------- Keras venv
def keras_python(install: bool = True) -> Path:
    """The Keras venv's python, creating it from bench/requirements-keras.txt when missing."""
    py = KERAS_VENV / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", "import keras, tensorflow"],
                                        capture_output=True).returncode == 0
    if ok:
        return py
    if not install:
        raise RuntimeError(f"{KERAS_VENV} has no working keras; run without --no-install")
    print(f"creating {KERAS_VENV} (tensorflow-cpu + keras from PyPI; a few minutes)...",
          flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(KERAS_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(KERAS_REQUIREMENTS)],
                   check=True)
    return py


def finish(args, result: dict) -> None:
    """End a bench: note a busy machine (printed and recorded), then write ``--json``."""
    warning = load_warning(args.threads)
    if warning:
        print(warning)
        result["warning"] = warning
    write_json(args.json, result)


def write_json(path: Path | None, result: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
