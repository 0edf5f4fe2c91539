"""State a labeler keeps across a chain's generations, saved so a resumed run reuses it.

A labeler that declares ``Needs(state=...)`` (:mod:`imseg.parts`) gets a
:class:`FileStateStore` for its chain: one file per generation under
``RUN/state/<labeler>/<chain folder>_g<generation>.pt``, written atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

from imseg.storage import load_checkpoint, save_checkpoint


class StateStore(Protocol):
    """Per-generation state of one chain: a dict of tensors, or None when not saved yet."""

    def load(self, generation: int) -> dict[str, torch.Tensor] | None: ...

    def save(self, generation: int, state: dict[str, torch.Tensor]) -> None: ...


class FileStateStore:
    """A :class:`StateStore` on files: ``root / f"{folder_of(generation)}.pt"``."""

    def __init__(self, root: Path, folder_of: Callable[[int], str]) -> None:
        self.root, self.folder_of = Path(root), folder_of

    def path(self, generation: int) -> Path:
        return self.root / f"{self.folder_of(generation)}.pt"

    def load(self, generation: int) -> dict[str, torch.Tensor] | None:
        path = self.path(generation)
        return load_checkpoint(path) if path.is_file() else None

    def save(self, generation: int, state: dict[str, torch.Tensor]) -> None:
        save_checkpoint(self.path(generation), state)


class MemoryStateStore:
    """A :class:`StateStore` in memory (tests, one-off labeling)."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def load(self, generation: int) -> dict[str, torch.Tensor] | None:
        return self.states.get(generation)

    def save(self, generation: int, state: dict[str, torch.Tensor]) -> None:
        self.states[generation] = state
