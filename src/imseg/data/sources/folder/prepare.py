"""``imseg prepare folder`` as functions: check every input, then write the set
(:func:`prepare_folder`); masks that another source draws, prepared alike
(:func:`prepare_drawn`).

The rules: :mod:`imseg.data.sources.folder`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from imseg.data.layout import DatasetInfo, finalize_counts, staged_layout
from imseg.data.sources.folder.masks import jpeg_heading, mask_reading, read_mask_palette
from imseg.data.sources.folder.options import DEFAULT_TILE_OVERLAP, check_args, check_out_folder
from imseg.data.sources.folder.plan import assign_splits, plan_size, plan_values
from imseg.data.sources.folder.scan import check_name_lengths, find_items, scan_items, unique_stems
from imseg.data.sources.folder.write import dataset_info, write_splits
from imseg.errors import DataError, Problems
from imseg.storage import WriteFailed, storage_error


def prepare_folder(
    *,
    images: Path,
    masks: Path,
    out: Path,
    unlabeled: Path | None = None,
    val_images: Path | None = None,
    val_masks: Path | None = None,
    test_images: Path | None = None,
    test_masks: Path | None = None,
    size: tuple[int, int] | None = None,
    labeled_fraction: float = 0.1,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    seed: int = 42,
    task: str | None = None,
    classes: list[str] | None = None,
    palette: Path | None = None,
    ignore_index: int | None = None,
    rotate: bool = True,
    channels: int = 3,
    mask_suffix: str | None = None,
    mask_threshold: int | None = None,
    tile_scale: float = 0.0,
    tile_overlap: float = DEFAULT_TILE_OVERLAP,
    overwrite: bool = False,
    progress: bool = True,
) -> DatasetInfo:
    """Check every input, then write the prepared layout and dataset.yaml to ``out``.

    See :mod:`imseg.data.sources.folder` for the rules; returns the written DatasetInfo.
    """
    out = Path(out)
    val_fraction = (0.0 if val_images else 0.1) if val_fraction is None else val_fraction
    test_fraction = (0.0 if test_images else 0.1) if test_fraction is None else test_fraction
    check_args(
        val_images, val_masks, test_images, test_masks, size, labeled_fraction, val_fraction,
        test_fraction, task, classes, palette, ignore_index, channels, mask_threshold,
        tile_scale, tile_overlap,
    )
    check_out_folder(out, overwrite, [images, masks, unlabeled, val_images, val_masks,
                                      test_images, test_masks])
    pal = read_mask_palette(palette, ignore_index)

    problems = Problems()
    fixed = {"val": (val_images, val_masks), "test": (test_images, test_masks)}
    items, suffixes = find_items(images, masks, unlabeled, fixed, mask_suffix, problems)
    renamed = unique_stems(items, problems)
    check_name_lengths(items, out, bool(tile_scale), problems)
    mask_files = [i.mask for i in items if i.mask is not None]
    how, task = mask_reading(mask_files, task, classes, pal, ignore_index, mask_threshold)
    scan_items(items, how, channels, progress, problems)
    target = plan_size(items, size, tile_scale, problems)
    plan = plan_values(items, task, classes, pal, ignore_index, how.threshold, masks, problems)
    problems.raise_any(jpeg_heading(problems.messages, mask_files, how))
    assert target is not None and plan is not None  # no problems: every file was read

    splits = assign_splits(items, labeled_fraction, val_fraction, test_fraction, seed)
    info = dataset_info(plan, target, splits, source=images, channels=channels, seed=seed,
                        rotate=rotate, tile_scale=tile_scale, tile_overlap=tile_overlap,
                        ignore_index=ignore_index, mask_threshold=how.threshold,
                        suffixes=suffixes, renamed=renamed)
    with staged_layout(out) as staging:  # the old set stays until the new one is whole
        write_splits(staging, splits, how, plan, info, tile_overlap, progress)
        return finalize_counts(staging, info)


def prepare_drawn(
    images: dict[str, Path],
    draw: Callable[[str, Path, Problems], None],
    drawn_from: dict[str, str],
    *,
    task: str,
    classes: list[str],
    ignore_index: int | None = None,
    **options,
) -> DatasetInfo:
    """Prepare masks that another source draws from annotations (COCO, LabelMe) as a
    folder of masks, so every check and split rule of :func:`prepare_folder` holds.

    ``images`` holds the image folder of "train" and, optionally, of "val" and "test";
    ``draw(split, dest, problems)`` writes ``dest/<image stem>.png`` for that split's
    annotated images and records what it cannot draw; ``drawn_from[split]`` names what
    the masks come from in messages (not the temporary folder they are drawn into).
    ``options``: the layout keywords of :func:`prepare_folder` (``out``, ``size``, ...).
    """
    problems = Problems()
    with tempfile.TemporaryDirectory(prefix="imseg-drawn-masks-") as tmp:
        masks = {split: Path(tmp) / split for split in images}
        try:
            for split, dest in masks.items():
                dest.mkdir()
                draw(split, dest, problems)
        except WriteFailed as exc:
            raise storage_error(exc.path, exc.cause, f"nothing was written to {options['out']} "
                                "(masks are drawn in a temporary folder first: TMPDIR sets "
                                "where)") from None
        problems.raise_any()
        try:
            return prepare_folder(
                images=images["train"], masks=masks["train"],
                val_images=images.get("val"), val_masks=masks.get("val"),
                test_images=images.get("test"), test_masks=masks.get("test"),
                task=task, classes=classes, ignore_index=ignore_index, mask_suffix="",
                **options,
            )
        except DataError as exc:
            message = str(exc)
            for split, folder in masks.items():
                message = message.replace(str(folder), drawn_from[split])
            raise DataError(message) from None
