"""Writing a planned ``imseg prepare folder`` set: every split's images (resized or cut
into tiles) and masks in the prepared layout's encoding, and the dataset.yaml that
describes them.

The rules: :mod:`imseg.data.sources.folder`.
"""

from __future__ import annotations

from pathlib import Path

from imseg.data.imageio import read_image, resize_image, resize_mask
from imseg.data.layout import SPLITS, DatasetInfo, write_pair
from imseg.data.sources.folder.masks import MaskRead, read_mask
from imseg.data.sources.folder.plan import Plan, to_disk
from imseg.data.sources.folder.scan import Item, progress_bar
from imseg.data.tiles import cut_pair


def dataset_info(
    plan: Plan,
    image_size: tuple[int, int],
    splits: dict[str, list[Item]],
    *,
    source: Path,
    channels: int,
    seed: int,
    rotate: bool,
    tile_scale: float,
    tile_overlap: float,
    ignore_index: int | None,
    mask_threshold: int | None,
    suffixes: dict[str, str],
    renamed: dict[str, str],
) -> DatasetInfo:
    """What dataset.yaml records of the set (the split counts follow once written);
    ``extra`` keeps how the sources were read: void value, threshold, mask suffixes,
    renamed stems, tiles."""
    extra: dict = {} if ignore_index is None else {"ignore_index": int(ignore_index)}
    if mask_threshold is not None:
        extra["mask_threshold"] = int(mask_threshold)
    if suffixes:
        extra["mask_suffix"] = suffixes
    if renamed:
        extra["renamed"] = renamed
    if tile_scale:
        extra["tile_overlap"] = float(tile_overlap)
        extra["tiled_images"] = {split: len(splits[split]) for split in SPLITS}
    return DatasetInfo(
        task=plan.task.kind,
        classes=plan.classes,
        image_size=image_size,
        channels=channels,
        colors=plan.colors,
        seed=seed,
        source=str(Path(source).resolve()),
        rotate=rotate,
        tile_scale=tile_scale,
        whole_image_scores=bool(tile_scale),  # a user's score is that of their images
        extra=extra,
    )


def write_splits(root: Path, splits: dict[str, list[Item]], how: MaskRead, plan: Plan,
                  info: DatasetInfo, tile_overlap: float, progress: bool) -> None:
    """Write every split's images (resized to ``info.image_size`` or cut into tiles of it)
    and masks under ``root``; ``train_unlabeled`` gets masks only when every one of its
    images has one (so the split is either fully scored or not)."""
    size, tile_scale = info.image_size, info.tile_scale
    with_truth = {split: split != "train_unlabeled"
                  or all(i.mask is not None for i in splits[split]) for split in SPLITS}
    for split in SPLITS:
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        if with_truth[split]:
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
    jobs = [(split, item) for split in SPLITS for item in splits[split]]
    for split, item in progress_bar(jobs, "writing", progress):
        image = read_image(item.image, info.channels)
        truth = with_truth[split] and item.mask is not None
        mask = to_disk(read_mask(item.mask, how), plan) if truth else None  # type: ignore[arg-type]
        overlap = tile_overlap if split.startswith("train") else 0.0
        pieces = (cut_pair(item.stem, image, mask, size, tile_scale, overlap) if tile_scale
                  else [(item.stem, resize_image(image, size),
                         None if mask is None else resize_mask(mask, size))])
        for stem, piece, disk in pieces:
            label = None if disk is None else plan.task.encode_mask(disk)
            write_pair(root, split, stem, piece, label, plan.task)
