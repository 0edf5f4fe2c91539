"""Helpers the paper's download sources share.

A download "part" may sit under ``--source`` either extracted as a folder or
still as its zip; :class:`Part` reads both the same way (zips in place, nothing
extracted to disk). The rest: a fresh output folder, the reference's split
counts, and writing a list of pairs into the prepared layout with a progress bar.
Bad input files are gathered into one error by :class:`imseg.errors.Problems`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm import tqdm

from imseg.data.layout import (
    INFO_FILE,
    SPLITS,
    DatasetInfo,
    check_out,
    split_dirs,
    staged_layout,
    write_pair,
)
from imseg.data.splitting import split_keys
from imseg.errors import DataError
from imseg.tasks import Task


class Part:
    """One part of a download: a folder, or a zip whose members sit under ``prefix``.

    File names are POSIX paths relative to the part's root (``train/aachen/x.png``).
    """

    def __init__(self, location: Path, archive: zipfile.ZipFile | None = None, prefix: str = ""):
        self.location = Path(location)
        self._zip = archive
        self._prefix = prefix

    def __enter__(self) -> Part:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def files(self, suffixes: Iterable[str] | None = None) -> list[str]:
        """Relative names of all files (optionally only those ending in ``suffixes``), sorted.

        Hidden files and macOS ``__MACOSX`` leftovers are skipped.
        """
        if self._zip is not None:
            names = [
                n[len(self._prefix) :]
                for n in self._zip.namelist()
                if n.startswith(self._prefix) and not n.endswith("/")
            ]
        else:
            names = [
                p.relative_to(self.location).as_posix()
                for p in self.location.rglob("*")
                if p.is_file()
            ]
        ends = tuple(s.lower() for s in suffixes) if suffixes is not None else None
        return sorted(
            n
            for n in names
            if not any(c.startswith(".") or c == "__MACOSX" for c in PurePosixPath(n).parts)
            and (ends is None or n.lower().endswith(ends))
        )

    def label(self, name: str) -> str:
        """Where a file lies, for messages: ``folder/name`` or ``archive.zip:member``."""
        if self._zip is not None:
            return f"{self.location}:{self._prefix}{name}"
        return str(self.location / name)

    def read(
        self, name: str, mode: str | None = None, draft: tuple[int, int] | None = None
    ) -> np.ndarray:
        """A file as a uint8 array, converted to ``mode`` (None: the stored values).

        ``draft`` ``(W, H)`` lets JPEG decode at a reduced scale that is still at
        least that large (much faster for big photos; a no-op for PNG).
        """
        try:
            if self._zip is not None:
                source: io.BytesIO | Path = io.BytesIO(self._zip.read(self._prefix + name))
            else:
                source = self.location / name
            with Image.open(source) as im:
                if draft is not None and mode is not None:
                    im.draft(mode, draft)
                im = im.convert(mode) if mode else im
                arr = np.asarray(im)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"{self.label(name)}: cannot read image ({exc})") from exc
        if arr.dtype != np.uint8:
            if arr.size and (arr.min() < 0 or arr.max() > 255):
                raise DataError(f"{self.label(name)}: values outside 0..255")
            arr = arr.astype(np.uint8)
        return arr


def find_part(source: Path, folder: str, zips: Iterable[str] = (), expect: str = "") -> Part:
    """The part ``folder`` under ``source``: the extracted folder first, else a zip.

    ``zips`` are the zip names to try (default ``<folder>.zip``); members are
    read from under ``<folder>/`` inside the zip when they sit there, else from
    its top. ``expect`` describes the content for the error message.
    """
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"{source}: source folder not found")
    path = source / folder
    if path.is_dir():
        return Part(path)
    names = tuple(zips) or (f"{folder}.zip",)
    for name in names:
        zpath = source / name
        if zpath.is_file():
            try:
                archive = zipfile.ZipFile(zpath)
            except (OSError, zipfile.BadZipFile) as exc:
                raise DataError(f"{zpath}: cannot open zip ({exc})") from exc
            prefix = f"{folder}/"
            if not any(n.startswith(prefix) for n in archive.namelist()):
                prefix = ""
            return Part(zpath, archive, prefix)
    what = f" ({expect})" if expect else ""
    raise DataError(
        f"{path}: not found; expected the folder {path}{what} "
        f"or the zip {' or '.join(str(source / n) for n in names)}"
    )


def split_fraction(
    keys: list[str], fraction: float, seed: int, first: str, rest: str
) -> dict[str, list[str]]:
    """Seeded split: ``first`` gets ``n - ceil((1 - fraction)·n)`` of the keys, ``rest`` the others.

    These are the counts of the reference's ``train_test_split`` (2594 → 259/2335,
    2975 → 297/2678, 500 → 250/250); a positive fraction gets at least one key.
    """
    if not 0.0 <= fraction <= 1.0:
        raise DataError(f"fraction must lie in [0, 1], not {fraction}")
    n = len(keys)
    count = n - math.ceil((1.0 - fraction) * n - 1e-9)
    if fraction > 0 and n and count == 0:
        count = 1
    return split_keys(keys, {first: count / n if n else 0.0}, seed, rest)


@contextlib.contextmanager
def fresh_layout(out: Path) -> Iterator[Path]:
    """A folder to write a new prepared data set into; it replaces an earlier one in
    ``out`` only when the block ends without error (:func:`imseg.data.layout.staged_layout`:
    a failure or a kill leaves the earlier set as it was).

    Only what a prepared layout holds is replaced (its split folders and dataset.yaml), so
    a rerun with another seed leaves no stale files; a folder holding anything else is
    refused rather than touched.
    """
    out = Path(out)
    check_out(out, overwrite=True)  # not a file, not another prepare's; a killed one's leftover goes
    if out.is_dir():
        ours = set(SPLITS) | {INFO_FILE, INFO_FILE + ".tmp"}
        other = sorted(p.name for p in out.iterdir() if p.name not in ours)
        if other:
            raise DataError(
                f"{out}: holds other files ({', '.join(other[:5])}); "
                "choose an empty folder or an earlier prepared data set to replace"
            )
    with staged_layout(out) as root:
        yield root


Loader = Callable[[str], tuple[np.ndarray, np.ndarray | None]]
"""stem → (image ``H×W×C`` uint8, in-memory label ``(label_channels, H, W)`` or None)."""


def write_split(
    out: Path, split: str, stems: list[str], load: Loader, task: Task, desc: str = ""
) -> int:
    """Load and write every stem of one split with a progress bar; returns the count.

    The split's image folder is created even when ``stems`` is empty, so the
    layout is complete.
    """
    split_dirs(out, split)[0].mkdir(parents=True, exist_ok=True)
    for stem in tqdm(stems, desc=desc or split, unit="img", disable=None):
        image, label = load(stem)
        write_pair(out, split, stem, image, label, task)
    return len(stems)


def summary(name: str, out: Path, info: DatasetInfo) -> str:
    """One line for the CLI: where, what size, how many per split."""
    counts = ", ".join(f"{k} {v}" for k, v in info.counts.items())
    h, w = info.image_size
    return f"{name}: {out} ({info.task}, {len(info.classes)} classes, {h}x{w}): {counts}"


def download_parser(subparsers: argparse._SubParsersAction, name: str, *, help: str,
                    description: str, source_help: str,
                    labeled_help: str = "fraction of the training images that are labeled (0.1)",
                    seed_help: str = "seed of the splits (42)") -> argparse.ArgumentParser:
    """An ``imseg prepare <name>`` command with the options every paper data set shares."""
    p = subparsers.add_parser(name, help=help, description=description)
    p.add_argument("--source", type=Path, required=True, help=source_help)
    p.add_argument("--out", type=Path, required=True, help="prepared data set folder to write")
    p.add_argument("--labeled-fraction", type=float, default=0.1, help=labeled_help)
    p.add_argument("--seed", type=int, default=42, help=seed_help)
    return p
