"""The prepared on-disk layout every source writes and every run reads.

::

    <root>/dataset.yaml
    <root>/{train_labeled,train_unlabeled,val,test}/images/<stem>.png
    <root>/{train_labeled,train_unlabeled,val,test}/masks/<stem>.png

``train_unlabeled/masks`` is optional: when present it holds the hidden truth,
used only to score pseudo labels, never for training. Masks are encoded as
:mod:`imseg.tasks` describes (binary/multilabel 0/255 with 128 void,
multiclass class ids with 255 void).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from imseg.data.imageio import WIDE_RULES
from imseg.errors import DataError, StorageError
from imseg.storage import (
    FULL_ERRNOS,
    WriteFailed,
    atomic_write_text,
    storage_error,
    write_png,
)
from imseg.tasks import TASK_KINDS, Task, task_from_info

SPLITS: tuple[str, ...] = ("train_labeled", "train_unlabeled", "val", "test")
INFO_FILE = "dataset.yaml"

BY_HAND = "by hand"
"""How labeled images were chosen when neither ``imseg suggest`` nor its caller said."""

# A readable default palette (RGB) for class colours in figures and overlays.
DEFAULT_COLORS: list[tuple[int, int, int]] = [
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
    (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60),
    (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200),
    (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128),
]


def default_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct colours, cycling the default palette."""
    return [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(n)]


@dataclass
class DatasetInfo:
    """What dataset.yaml holds: enough to load and score the data without guessing.

    ``classes`` are the foreground labels for binary (one) and multilabel (one
    per channel), and all classes including background for multiclass.
    """

    task: str
    classes: list[str]
    image_size: tuple[int, int]
    channels: int = 3
    colors: list[tuple[int, int, int]] = field(default_factory=list)
    seed: int = 42
    source: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    rotate: bool = True
    """Whether free 90° rotations suit the data (augmentation, input ensembles)."""
    headline_classes: list[str] = field(default_factory=list)
    """The classes whose mean IoU is the headline score (model selection, test IoU,
    pseudo-label IoU); empty: all. HeLa: alive and dead, not position (the paper's
    mIoU_ad)."""
    test_metrics: list[str] = field(default_factory=list)
    """Extra metrics of the test split in results.csv's ``test_details``
    (:data:`imseg.tasks.TEST_METRICS`; HeLa: ``cell_count``)."""
    wide_images: str = ""
    """How this data set's 16-bit source images became 8-bit, so ``predict`` reads new
    ones alike (:data:`imseg.data.imageio.WIDE_RULES`); empty: ``stretch``."""
    tile_scale: float = 0.0
    """0: every source image was resized whole to ``image_size``. Above 0: the images
    are ``image_size`` tiles cut from the source images scaled by this factor (1: their
    own pixels), so ``predict`` cuts new images alike (:mod:`imseg.data.tiles`)."""
    whole_image_scores: bool = False
    """Score each source image's tiles together, as the whole image they were cut from
    (val, test, pseudo-label quality), not each tile alone: a user's score is that of
    their images, and a tile holding a sliver of an object is not an image. HeLa keeps
    the paper's per-crop scores."""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASK_KINDS:
            raise DataError(f"dataset.yaml: task must be one of {TASK_KINDS}, not {self.task!r}")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.classes = [str(c) for c in self.classes]
        if not self.colors:
            n = len(self.classes) + (1 if self.task == "binary" else 0)
            self.colors = default_colors(n) if self.task != "multilabel" else default_colors(
                len(self.classes) + 1
            )[1:]
        self.colors = [tuple(int(v) for v in c) for c in self.colors]  # type: ignore[misc]
        self.headline_classes = [str(c) for c in self.headline_classes]
        self.test_metrics = [str(m) for m in self.test_metrics]
        if self.wide_images not in ("", *WIDE_RULES):
            raise DataError(f"dataset.yaml: wide_images must be one of {WIDE_RULES}, not "
                            f"{self.wide_images!r}")
        given = self.tile_scale
        try:
            self.tile_scale = float(given)
        except (TypeError, ValueError):
            self.tile_scale = float("nan")
        if not (self.tile_scale >= 0 and np.isfinite(self.tile_scale)):
            raise DataError(f"dataset.yaml: tile_scale must be 0 (resized images) or a "
                            f"positive scale, not {given!r}")
        if not isinstance(self.whole_image_scores, bool):
            raise DataError(f"dataset.yaml: whole_image_scores must be true or false, not "
                            f"{self.whole_image_scores!r}")
        try:
            self.task_obj  # noqa: B018 - validates the classes against the task kind
        except ValueError as exc:
            raise DataError(f"dataset.yaml: {exc}") from None

    @property
    def task_obj(self) -> Task:
        return task_from_info(self.task, self.classes, self.headline_classes, self.test_metrics)

    @property
    def chosen_by(self) -> list[str]:
        """How the labeled images added since ``prepare`` were chosen, oldest addition
        first (``extra.history``, written by :mod:`imseg.active.add`); empty for a set
        as prepared."""
        history = self.extra.get("history") or []
        return [str(h.get("chosen_by") or BY_HAND) for h in history if isinstance(h, dict)]

    def plain(self) -> dict:
        """The fields as plain values; the newer optional keys only when set, so what is
        written reads in an imseg from before them."""
        data = asdict(self)
        for key in ("headline_classes", "test_metrics", "wide_images", "tile_scale",
                    "whole_image_scores"):
            if not data[key]:
                del data[key]
        data["image_size"] = list(self.image_size)
        data["colors"] = [list(c) for c in self.colors]
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.plain(), sort_keys=False)


def write_info(root: Path, info: DatasetInfo) -> None:
    """Write ``dataset.yaml`` (atomically)."""
    atomic_write_text(Path(root) / INFO_FILE, info.to_yaml())


def read_info(root: Path) -> DatasetInfo:
    """Read ``dataset.yaml`` of a prepared data set, with a clear error when absent."""
    path = Path(root) / INFO_FILE
    if not path.is_file():
        raise DataError(
            f"{path} not found: {root} is not a prepared data set "
            "(create one with `imseg prepare folder|sample|...`)"
        )
    data = yaml.safe_load(path.read_text()) or {}
    known = set(DatasetInfo.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise DataError(f"{path}: unknown keys {sorted(unknown)}")
    for key in ("task", "classes", "image_size"):
        if key not in data:
            raise DataError(f"{path}: missing key {key!r}")
    return DatasetInfo(**data)


def split_dirs(root: Path, split: str) -> tuple[Path, Path]:
    """``(images_dir, masks_dir)`` of one split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    return Path(root) / split / "images", Path(root) / split / "masks"


def write_pair(
    root: Path,
    split: str,
    stem: str,
    image: np.ndarray,
    label: np.ndarray | None,
    task: Task,
) -> None:
    """Write one image (``H×W×C`` or ``H×W`` uint8) and its in-memory label as PNGs.

    ``label`` is the in-memory encoding ``(label_channels, H, W)`` (see
    :mod:`imseg.tasks`); None writes the image only (an unlabeled image whose
    truth is unknown).
    """
    images, masks = split_dirs(root, split)
    images.mkdir(parents=True, exist_ok=True)
    write_png(images / f"{stem}.png", image.squeeze())
    if label is not None:
        masks.mkdir(parents=True, exist_ok=True)
        write_png(masks / f"{stem}.png", task.decode_mask(label))


def count_split(root: Path, split: str) -> int:
    """Number of images in a split (0 when the split folder is absent)."""
    images, _ = split_dirs(root, split)
    return len(list(images.glob("*.png"))) if images.is_dir() else 0


def finalize_counts(root: Path, info: DatasetInfo) -> DatasetInfo:
    """Fill ``info.counts`` from the files on disk and write dataset.yaml."""
    info.counts = {split: count_split(root, split) for split in SPLITS}
    write_info(root, info)
    return info


# ----------------------------------------------------------- writing a whole set safely
PARTIAL = ".imseg-partial-"
"""Name start of the folder inside ``--out`` that a new set is written into before it
is swapped in: ``.imseg-partial-<process id>-<random>``. One whose process is gone
(a killed ``prepare``) is removed by the next ``prepare`` into that ``--out``."""
_REPLACED = "replaced"
"""Where the old set waits inside the partial folder while the new one moves in."""


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, that holds anything but without ``--overwrite``,
    or that another running ``prepare`` writes into; remove what a killed one left."""
    out = Path(out)
    try:
        kind = "folder" if out.is_dir() else "other" if out.exists() else ""
    except OSError as exc:  # a path too long for the system: the remedy is in the message
        raise storage_error(out, exc) from None
    if kind == "other":
        raise DataError(f"{out}: --out exists and is not a folder")
    if not kind:
        return
    clear_left_over(out)
    if not overwrite and any(not p.name.startswith(PARTIAL) for p in out.iterdir()):
        raise DataError(f"{out}: --out is not empty; choose a new folder or pass --overwrite "
                        f"(which replaces only the split folders and {INFO_FILE} there)")


def clear_left_over(out: Path) -> None:
    """Remove the partial folders that killed ``prepare`` runs left in ``out``; refuse an
    ``out`` that a running one writes into."""
    for folder in Path(out).glob(f"{PARTIAL}*"):
        pid = _writer_pid(folder.name)
        if _alive(pid):
            raise DataError(f"{out}: another imseg prepare (process {pid}) is writing a data "
                            "set here; wait for it to end or choose another --out")
        if _holds_old_set(folder) and not _swap_done(folder, out):  # never lose the old set
            raise DataError(f"{folder / _REPLACED}: holds (parts of) the earlier data set of "
                            f"{out}, moved aside by a prepare stopped while it swapped sets; "
                            "move them back into --out or delete them, then run the command "
                            "again")
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def staged_layout(out: Path) -> Iterator[Path]:
    """An empty folder to write a whole prepared set into; when the block ends without
    error, its split folders and dataset.yaml replace those of ``out`` (anything else in
    ``out`` stays); on any error it is removed and ``out`` is left as it was.

    The folder lies inside ``out``, so the swap is a few renames on one file system
    (whatever the parent's permissions, even when ``out`` is a mount point). A write
    that fails becomes one StorageError naming the file as it would lie in ``out``.
    """
    out = Path(out)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = out / f"{PARTIAL}{os.getpid()}-{secrets.token_hex(4)}"
        staging.mkdir()
    except OSError as exc:
        raise storage_error(out, exc) from None
    swapped = False
    try:
        yield staging
        _swap_in(staging, out)
        swapped = True
    except WriteFailed as exc:
        raise _restated(exc, staging, out, created) from None
    except OSError as exc:  # e.g. a folder that cannot be made; else not a write of ours
        if not Path(exc.filename or out).is_relative_to(staging):
            raise
        raise _restated(storage_error(Path(exc.filename), exc), staging, out, created) from None
    finally:
        if swapped or not _holds_old_set(staging):
            shutil.rmtree(staging, ignore_errors=True)
        if created and not swapped:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: nothing was there before


@contextlib.contextmanager
def staged_update(root: Path) -> Iterator[Path]:
    """A staged copy of the prepared set ``root`` to change, swapped in whole as
    :func:`staged_layout` does (on any error ``root`` stays as it was). Its split
    folders hold hard links to ``root``'s files (copies where the file system has
    none), so a changed file must be removed before it is written anew: writing into a
    linked file would change the live set."""
    root = Path(root)
    read_info(root)  # a prepared set, or one clear error
    clear_left_over(root)
    with staged_layout(root) as staging:
        for split in SPLITS:
            if (root / split).is_dir():
                shutil.copytree(root / split, staging / split, copy_function=_link_or_copy)
        shutil.copy2(root / INFO_FILE, staging / INFO_FILE)
        yield staging


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _swap_in(staging: Path, out: Path) -> None:
    """Move ``out``'s set aside and the staged one in, dataset.yaml last (a set is whole
    when its dataset.yaml is there); on any error or interrupt, move everything back."""
    aside = staging / _REPLACED
    aside.mkdir()
    names = [INFO_FILE, *SPLITS]
    moves = [(out / n, aside / n) for n in names if os.path.lexists(out / n)]
    moves += [(staging / n, out / n) for n in reversed(names) if (staging / n).exists()]
    done: list[tuple[Path, Path]] = []
    try:
        for source, target in moves:
            os.replace(source, target)
            done.append((source, target))
    except BaseException as exc:
        for source, target in reversed(done):
            with contextlib.suppress(OSError):
                os.replace(target, source)
        if isinstance(exc, OSError):
            raise storage_error(Path(exc.filename or out), exc) from None
        raise


def _holds_old_set(staging: Path) -> bool:
    """Whether parts of the old set still wait in the partial folder (a swap that could
    not be undone): then it is kept, not removed."""
    aside = staging / _REPLACED
    return aside.is_dir() and any(aside.iterdir())


def _swap_done(staging: Path, out: Path) -> bool:
    """Whether a swap into ``out`` finished (the new set moved in whole, dataset.yaml last)
    and only the replaced old set waits in ``staging``, as ``--overwrite`` meant to drop."""
    rest = [p.name for p in staging.iterdir() if p.name != _REPLACED]
    return not rest and (out / INFO_FILE).is_file()


def _restated(exc: WriteFailed, staging: Path, out: Path, created: bool) -> StorageError:
    """A failed write, named as the file would lie in ``out``, saying what was left."""
    cause, path = exc.cause, exc.path
    if path.is_relative_to(staging):
        path = out / path.relative_to(staging)
    if created:
        outcome = f"nothing was written ({out} was not created)"
    elif _holds_old_set(staging):
        outcome = f"the old set could not be put back: its parts are in {staging / _REPLACED}"
    else:
        outcome = f"{out} is as it was (the partly written new set was removed)"
        if cause.errno in FULL_ERRNOS:
            outcome += "; until it is whole, the new set needs room beside the old one"
    return storage_error(path, cause, outcome)


def _writer_pid(name: str) -> int:
    """The process id in a partial folder's name (0 when there is none)."""
    head = name[len(PARTIAL):].split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def _alive(pid: int) -> bool:
    """Whether process ``pid`` (another than this one) still runs. POSIX only: elsewhere
    signal 0 is no probe, and a partial folder is taken as left over."""
    if pid <= 0 or pid == os.getpid() or os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except (OverflowError, OSError):
        return False
    return True
