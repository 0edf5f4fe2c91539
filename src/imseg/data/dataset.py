"""Load a prepared split once into memory as uint8 tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imseg.data.imageio import read_image
from imseg.data.layout import DatasetInfo, read_info, split_dirs
from imseg.data.tiles import first_cover, source_groups
from imseg.errors import DataError
from imseg.tasks import VOID, Task


@dataclass
class Split:
    """A split in memory.

    ``images``: uint8 ``(N, channels, H, W)``; ``labels``: uint8
    ``(N, label_channels, H, W)`` in the in-memory encoding of
    :mod:`imseg.tasks`, or None when the truth is not known.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    stems: list[str]
    groups: torch.Tensor | None = None
    """int64 ``(N,)``: images with one id are scored together, as one image (the tiles of
    one source image, dataset.yaml ``whole_image_scores``); None: each image alone."""
    counted: torch.Tensor | None = None
    """bool ``(N, H, W)``: the pixels a whole-image score counts in this tile (val and
    test tiles that overlap an earlier one of their image: not the shared ones); None:
    all."""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def scored(self, sl: slice) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Labels and score groups of images ``sl`` as a score counts them: a pixel that
        an earlier tile of the same image holds too is VOID here (the labels themselves
        stay whole, for what learns from them)."""
        assert self.labels is not None
        labels = self.labels[sl]
        if self.counted is not None:
            labels = labels.masked_fill(~self.counted[sl][:, None], VOID)
        return labels, None if self.groups is None else self.groups[sl]

    def subset(self, index: torch.Tensor | list[int]) -> Split:
        idx = torch.as_tensor(index, dtype=torch.long)
        return Split(
            self.images[idx],
            None if self.labels is None else self.labels[idx],
            [self.stems[i] for i in idx.tolist()],
            None if self.groups is None else self.groups[idx],
            None if self.counted is None else self.counted[idx],
        )

    @staticmethod
    def concat(parts: list[Split]) -> Split:
        """Join splits; labels are kept only when every part has them, and so are score
        groups (found again from the stems: the parts' ids would collide)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("nothing to concatenate")
        labels = (
            torch.cat([p.labels for p in parts])  # type: ignore[misc]
            if all(p.labels is not None for p in parts)
            else None
        )
        stems = [s for p in parts for s in p.stems]
        grouped = all(p.groups is not None for p in parts)
        return Split(
            torch.cat([p.images for p in parts]),
            labels,
            stems,
            torch.tensor(source_groups(stems), dtype=torch.long) if grouped else None,
        )


def read_mask(path: Path) -> np.ndarray:
    """A mask file as stored, without colour conversion (palette PNGs give their indices)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("RGBA", "LA"):
                im = im.convert(im.mode[:-1])
            if im.mode in ("I", "I;16", "I;16B", "F"):
                arr = np.asarray(im)
                if arr.max() > 255:
                    raise DataError(f"{path}: mask values above 255")
                return arr.astype(np.uint8)
            return np.asarray(im, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read mask ({exc})") from exc


def load_split(
    root: Path, split: str, info: DatasetInfo | None = None, with_labels: bool = True
) -> Split:
    """Read every image (and mask, when present) of a split into memory.

    Masks are checked against the task: a wrong value or size raises a
    :class:`DataError` naming the file.
    """
    root = Path(root)
    info = info or read_info(root)
    task: Task = info.task_obj
    images_dir, masks_dir = split_dirs(root, split)
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: split folder not found")
    paths = sorted(images_dir.glob("*.png"))
    stems = [p.stem for p in paths]
    h, w = info.image_size
    images = np.empty((len(paths), info.channels, h, w), dtype=np.uint8)
    has_masks = with_labels and masks_dir.is_dir()
    labels = np.empty((len(paths), task.label_channels, h, w), dtype=np.uint8) if has_masks else None
    for i, path in enumerate(paths):
        img = read_image(path, info.channels)
        if img.shape[:2] != (h, w):
            raise DataError(f"{path}: size {img.shape[1]}×{img.shape[0]}, expected {w}×{h}")
        images[i] = np.moveaxis(img, -1, 0)
        if labels is not None:
            mpath = masks_dir / path.name
            if not mpath.is_file():
                raise DataError(f"{path}: no mask {mpath}")
            mask = read_mask(mpath)
            if mask.shape[:2] != (h, w):
                raise DataError(f"{mpath}: size {mask.shape[1]}×{mask.shape[0]}, expected {w}×{h}")
            problem = task.check_disk_mask(mask)
            if problem:
                raise DataError(f"{mpath}: {problem}")
            labels[i] = task.encode_mask(mask)
    whole = info.whole_image_scores
    return Split(
        torch.from_numpy(images),
        None if labels is None else torch.from_numpy(labels),
        stems,
        torch.tensor(source_groups(stems), dtype=torch.long) if whole else None,
        torch.from_numpy(first_cover(stems, (h, w))) if whole and split in ("val", "test")
        else None,
    )


@dataclass
class Dataset:
    """All four splits of a prepared data set in memory, with its info."""

    info: DatasetInfo
    labeled: Split
    unlabeled: Split
    val: Split
    test: Split

    @property
    def task(self) -> Task:
        return self.info.task_obj


def load_dataset(root: Path) -> Dataset:
    """Load a prepared data set; the unlabeled split keeps its truth only for scoring."""
    root = Path(root)
    info = read_info(root)
    splits = {}
    for name in ("train_labeled", "train_unlabeled", "val", "test"):
        images_dir, _ = split_dirs(root, name)
        if images_dir.is_dir():
            splits[name] = load_split(root, name, info)
        elif name == "train_unlabeled":
            splits[name] = _empty(info)
        else:
            raise DataError(f"{images_dir}: split folder not found in {root}")
    for name in ("train_labeled", "val"):
        if len(splits[name]) == 0:
            raise DataError(f"{root / name}: no images")
        if splits[name].labels is None:
            raise DataError(f"{root / name / 'masks'}: masks are required for this split")
    return Dataset(info, splits["train_labeled"], splits["train_unlabeled"], splits["val"],
                   splits["test"])


def _empty(info: DatasetInfo) -> Split:
    h, w = info.image_size
    return Split(torch.empty((0, info.channels, h, w), dtype=torch.uint8), None, [])
