"""Faults for the tests of `prepare`: a disk that fills up part-way, and a snapshot of a
folder to show that a failure changed nothing."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from PIL import Image


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def fill_disk(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """After ``after`` more images are saved (masks that coco and labelme draw first
    included), every save fails with ENOSPC, as on a disk that fills up while a set is
    written; ``monkeypatch.undo()`` frees the space."""
    real = Image.Image.save
    left = [after]

    def save(self, fp, *args, **kwargs):
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        left[0] -= 1
        return real(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
