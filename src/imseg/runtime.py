"""Device choice, seeds derived from a model's place in a study, thread settings."""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from imseg.errors import ConfigError

        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def derive_seed(base: int, *place: object) -> int:
    """A seed that follows from a model's place in the study, not from a shared stream.

    ``derive_seed(42, "ldt", 0, 3)`` is the same in every process and after any
    resume, so a stopped run that is started again trains identical models.
    """
    text = "/".join([str(base), *(str(p) for p in place)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for explicit draws."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def configure_threads() -> None:
    """Use every core for intra-op work unless the user set OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
