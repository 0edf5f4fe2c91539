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

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from imseg.data.imageio import WIDE_RULES
from imseg.errors import DataError
from imseg.storage import atomic_write_text
from imseg.tasks import TASK_KINDS, Task, task_from_info

SPLITS: tuple[str, ...] = ("train_labeled", "train_unlabeled", "val", "test")
INFO_FILE = "dataset.yaml"

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
    Image.fromarray(np.ascontiguousarray(image.squeeze())).save(images / f"{stem}.png")
    if label is not None:
        masks.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(task.decode_mask(label))).save(masks / f"{stem}.png")


def count_split(root: Path, split: str) -> int:
    """Number of images in a split (0 when the split folder is absent)."""
    images, _ = split_dirs(root, split)
    return len(list(images.glob("*.png"))) if images.is_dir() else 0


def finalize_counts(root: Path, info: DatasetInfo) -> DatasetInfo:
    """Fill ``info.counts`` from the files on disk and write dataset.yaml."""
    info.counts = {split: count_split(root, split) for split in SPLITS}
    write_info(root, info)
    return info
