"""Atomic writes: a stopped run, a full disk or an unwritable folder never leaves a
half-written file behind, and the user gets one message naming the path and errno."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from imseg.errors import StorageError


class WriteFailed(StorageError):
    """A StorageError that keeps the path and the OSError, so a caller that knows more
    (``prepare``: the old set is untouched) can restate it with its own advice."""

    def __init__(self, message: str, path: Path, cause: OSError):
        super().__init__(message)
        self.path = Path(path)
        self.cause = cause


FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_REMEDIES = {
    **dict.fromkeys(FULL_ERRNOS, "free some space (or use another --out)"),
    **dict.fromkeys((errno.EACCES, errno.EPERM, errno.EROFS), "choose a writable --out"),
    errno.ENAMETOOLONG: "use shorter file names (most file systems allow 255 bytes a name, "
                        "4096 a path) or a shorter --out path",
}


def storage_error(path: Path, exc: OSError, outcome: str | None = None) -> WriteFailed:
    """One readable message for an OSError while writing ``path``: the path, the cause
    and what to do. ``outcome`` says what the failure left (then the advice is to run
    the same command again); by default a full disk is said to resume."""
    code = exc.errno
    name = errno.errorcode.get(code, "?") if code is not None else "?"
    reason = exc.strerror or str(exc)
    remedy = _REMEDIES.get(code, "")  # type: ignore[arg-type]
    if outcome is not None:
        hint = f"; {outcome}" + (f"; {remedy}, then run the same command again" if remedy else "")
    elif code in FULL_ERRNOS:
        hint = f"; {remedy}, then run the same command to resume"
    else:
        hint = f"; {remedy}" if remedy else ""
    return WriteFailed(f"cannot write {path}: {reason} (errno {code} {name}){hint}", path, exc)


def umask() -> int:
    """The process's file-creation mask (read by setting a strict one for an instant)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def new_mode(folder: bool = False) -> int:
    """The permissions a plain ``open`` (``mkdir``) gives a new file (folder) under the
    umask. Temporary files and folders are created private (0600, 0700); renamed into
    place as they are, a colleague or a Ray worker running as another user of the group
    could not read a checkpoint or a data set."""
    return (0o777 if folder else 0o666) & ~umask()


def usual_mode(path: Path) -> int:
    """The permissions ``path`` gets when written: those it has, else a new file's."""
    try:
        return Path(path).stat().st_mode & 0o7777
    except OSError:
        return new_mode()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place,
    with the permissions ``path`` has or a new file gets (:func:`usual_mode`).

    Any OSError (full disk, read-only or missing folder) becomes a StorageError naming
    ``path``; the temporary file is removed, so nothing half-written stays.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        write(tmp)
        tmp.chmod(usual_mode(path))
        os.replace(tmp, path)
    except OSError as exc:
        raise storage_error(path, exc) from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def png_bytes(array: np.ndarray) -> bytes:
    """An ``H×W`` or ``H×W×C`` uint8 array encoded as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: Path, array: np.ndarray) -> None:
    """An ``H×W`` or ``H×W×C`` uint8 array as a PNG file, atomically."""
    atomic_write_bytes(path, png_bytes(array))


def write_png(path: Path, array: np.ndarray) -> None:
    """A PNG written in place, for files inside a folder that is itself swapped in whole
    (a prepared set): no temporary name per file, whose extra length could pass the
    name limit; an OSError still becomes a StorageError naming ``path``."""
    try:
        Path(path).write_bytes(png_bytes(array))
    except OSError as exc:
        raise storage_error(path, exc) from None


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, hex: which file it is, wherever it has moved."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(path: Path, state: dict) -> None:
    """Save a checkpoint dict (weights + the config that built them) atomically.

    Serialised in memory first: torch's own file writer reports a full disk as an
    opaque ``RuntimeError`` (inline_container.cc); a plain write gives the errno.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    from imseg.errors import DataError

    if not Path(path).is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise DataError(f"{path}: not an imseg checkpoint (cannot be read: "
                        f"{type(exc).__name__})") from None
