"""Errors a user can cause; the CLI prints their message without a traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ImsegError(Exception):
    """Base of all errors that carry a message meant for the user."""


class DataError(ImsegError):
    """Bad input data: missing folder, image without mask, wrong size or values."""


class ConfigError(ImsegError):
    """An invalid configuration file or override."""


class StorageError(ImsegError):
    """Output that cannot be written: full disk, read-only or unwritable folder."""


MAX_LISTED = 20
"""At most this many problems are spelled out in one error; the rest are counted."""


class Problems:
    """Problems with input files, gathered so one error names every file to fix.

    Checking goes on past a bad file, and :meth:`raise_any` raises once at the
    end, so a user fixes all files after one run instead of one file per run.
    """

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.messages)

    def add(self, message: str) -> None:
        self.messages.append(message)

    def attempt(self, check: Callable[..., T], *args: object) -> T | None:
        """``check(*args)``; on a DataError its message is recorded and None returned."""
        try:
            return check(*args)
        except DataError as exc:
            self.add(str(exc))
            return None

    def raise_any(self, heading: str | None = None) -> None:
        """Raise one DataError listing the problems under ``heading`` (by default: nothing
        was written; a single problem without a heading: its message alone)."""
        n = len(self.messages)
        if n == 0:
            return
        if n == 1 and heading is None:
            raise DataError(self.messages[0])
        lines = [heading or f"{n} problems in the input files (nothing was written):"]
        lines += [f"  - {m}" for m in self.messages[:MAX_LISTED]]
        if n > MAX_LISTED:
            lines.append(f"  ... and {n - MAX_LISTED} more")
        raise DataError("\n".join(lines))
