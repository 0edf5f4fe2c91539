"""An unfinished model's training state, so that a killed run resumes inside the model it
was training instead of at its first epoch.

:func:`imseg.training.fit.fit` writes one after an epoch once ``train.snapshot_minutes``
have passed since the last (atomically, over the last one) and starts from it when
it finds one. It holds everything the next epochs depend on: the weights, the optimizer's
moments and rates, every random stream (the model's generator, the BatchNorm pass's,
torch's, CUDA's, NumPy's and Python's), a trainer's own state (an EMA teacher, its step
count), and the best epoch, its weights and scores and the history so far. So a resumed
model comes out as the one trained without a stop, to the bit on the same machine.

The file records whom it belongs to (``identity``: the model's place, seed and settings);
one of another model, one from other settings, or one that cannot be read is set aside
with a line in the log, and the model trains from its first epoch. The file goes once
the model's checkpoint is written. Loaded with ``weights_only``: nothing in it runs code.
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from imseg.logs import log
from imseg.storage import atomic_write_bytes

SUFFIX = ".unfinished"
"""``models/<approach>/r0_g1/c2.unfinished`` beside ``c2.pt``: not a ``*.pt``, so nothing
that looks for checkpoints picks it up."""

FORMAT = 1


@runtime_checkable
class Resumable(Protocol):
    """A trainer's epoch function with state of its own (an EMA teacher)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def random_state(generators: Mapping[str, torch.Generator | None]) -> dict:
    """Every random stream training draws from: the named ``generators`` and the
    process-wide ones (torch, CUDA, NumPy, Python), in types ``weights_only`` loads."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "generators": {name: g.get_state() for name, g in generators.items() if g is not None},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, list(internal), gauss_next],
    }


def restore_random_state(state: dict, generators: Mapping[str, torch.Generator | None]) -> None:
    """Set every stream :func:`random_state` captured."""
    for name, g in generators.items():
        if g is not None:
            g.set_state(state["generators"][name])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])  # else another machine: not bit for bit
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


@dataclass
class Snapshots:
    """The snapshot file of one model: where it lives, whom it belongs to, how often it is
    written (``every_s``; None: never, and none is read)."""

    path: Path
    identity: dict
    every_s: float | None
    _last_write: float = field(default_factory=time.monotonic)
    _state: dict | None = None
    _read: bool = False

    @property
    def on(self) -> bool:
        return self.every_s is not None

    def latest(self) -> dict | None:
        """The saved state of this model, or None (none, another model's, unreadable: then
        the log says why and training starts over). Read once."""
        if not self._read:
            self._read = True
            self._state = self._load() if self.on and self.path.is_file() else None
        return self._state

    def first_epoch(self) -> int:
        """The epoch training starts at: 1, or the one after the snapshot's."""
        state = self.latest()
        return 1 if state is None else int(state["epoch"]) + 1

    def due(self) -> bool:
        return self.on and time.monotonic() - self._last_write >= self.every_s

    def write(self, state: dict) -> None:
        """Save ``state`` (with this model's identity) over the last snapshot, atomically."""
        buf = io.BytesIO()
        torch.save({"format": FORMAT, "identity": self.identity, **state}, buf)
        atomic_write_bytes(self.path, buf.getvalue())
        self._last_write = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _load(self) -> dict | None:
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
            return self._set_aside(f"cannot be read ({type(exc).__name__})")
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            return self._set_aside("not a snapshot of this imseg version")
        if state.get("identity") != self.identity:
            return self._set_aside(f"it belongs to {state.get('identity')}, not to "
                                   f"{self.identity}")
        return state

    def _set_aside(self, why: str) -> None:
        log.info(f"{self.path}: training state not used ({why}); the model trains from its "
                 "first epoch")
        return None
