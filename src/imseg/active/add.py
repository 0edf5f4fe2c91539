"""``imseg prepare add``: newly labeled images move from the unlabeled to the labeled
split of a prepared set.

Choices:

* **Matched by pixels**: an image given is found in the set by its pixels, not its
  name: as it is (the images ``imseg suggest`` wrote), else as ``prepare`` would have
  made it (resized to ``image_size``, or scaled by ``tile_scale`` for a set of tiles),
  so renamed copies and the original files both work. Its mask goes the same way
  (nearest neighbour; a tiled image's mask is cut at its tiles' positions).
* **Refused, naming the image**: one of val, test or the labeled split (only unlabeled
  images can be added; val and test stay untouched), one unknown to the set, two
  given images of one set image, or one whose file name the labeled split already has
  for another image. Bad annotations are refused naming their file
  (:mod:`imseg.active.corrections`). Nothing is changed before every check passed.
* **Nothing lost**: the set is written through :func:`imseg.data.layout.staged_update`
  (hard links, swapped in whole), so a failure leaves it as it was. The unlabeled
  images' hidden true masks, if the set has them, leave with them.
* **History**: dataset.yaml's ``extra.version`` counts the set's versions (a set never
  added to is version 1) and ``extra.history`` lists each addition: version, time, the
  source images added, where images and labels came from, and how they were chosen
  (``chosen_by``: ``imseg suggest``'s score when the images folder is its output, else
  what the caller says, else ``by hand``; ``imseg report`` draws one line of test score
  against labeled images per way of choosing). The splits' stems and pixels
  are part of the data set's hash (``experiment/settings.py: data_hash``), so a run
  folder trained on the earlier version refuses to resume on the new one; a new run
  trains on the new labels.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from imseg.active.corrections import FORMATS, READERS, Masks, guess_format, read_masks_folder
from imseg.active.diversity import SPREADS
from imseg.active.images import SourceImage, split_sources
from imseg.data.imageio import list_images, pixel_digest, read_image, resize_image, resize_mask
from imseg.data.layout import (
    BY_HAND,
    SPLITS,
    DatasetInfo,
    finalize_counts,
    read_info,
    split_dirs,
    staged_update,
)
from imseg.data.tiles import scale_image, scale_mask, tile_origin
from imseg.errors import ConfigError, Problems
from imseg.storage import write_png

FIRST_VERSION = 1


@dataclass
class Match:
    """A given image, the set's source image it is, and how its mask becomes the set's."""

    path: Path
    split: str
    source: SourceImage
    geometry: str
    """``as_is``, ``resized`` (to ``image_size``) or ``scaled`` (by ``tile_scale``)."""


def add_labels(data: Path, images: Path, masks: Path | None = None,
               annotations: Path | None = None, fmt: str | None = None,
               chosen_by: str | None = None) -> DatasetInfo:
    """Move the images of ``images`` from the unlabeled to the labeled split of the set
    ``data``, with their labels from ``masks`` (PNG folder) or ``annotations`` (COCO
    JSON, LabelMe JSON or folder); returns the new dataset.yaml. ``chosen_by``: how the
    images were chosen (default: module doc, "History")."""
    data = Path(data)
    info = read_info(data)
    given = list_images(Path(images))
    matches = match_images(data, info, given)
    labels = read_labels(given, info, masks, annotations, fmt)
    with staged_update(data) as staging:
        for stem, match in matches.items():
            _move(staging, info, match, labels[stem])
        record_addition(info, [m.source.stem for m in matches.values()], images,
                        masks if masks is not None else annotations,
                        chosen_by or suggested_by(Path(images)))
        return finalize_counts(staging, info)


def read_labels(given: dict[str, Path], info: DatasetInfo, masks: Path | None,
                annotations: Path | None, fmt: str | None) -> Masks:
    """Each given image's mask, from a PNG folder or an annotation file."""
    if (masks is None) == (annotations is None):
        raise ConfigError("give the labels as --masks FOLDER or as --annotations FILE")
    if masks is not None:
        return read_masks_folder(given, masks, info)
    fmt = fmt or guess_format(annotations)  # type: ignore[arg-type]
    return READERS[fmt](given, Path(annotations), info)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- matching
def set_index(data: Path, info: DatasetInfo) -> dict[bytes, tuple[str, SourceImage]]:
    """Every source image of the set by its pixels' key."""
    index = {}
    for split in SPLITS:
        for source in split_sources(data, split):
            index.setdefault(pixel_digest(source.read(info)), (split, source))
    return index


def match_images(data: Path, info: DatasetInfo, given: dict[str, Path]) -> dict[str, Match]:
    """Each given image's source image in the unlabeled split (module doc); one DataError
    naming every image that is not there."""
    index = set_index(data, info)
    labeled_images, _ = split_dirs(data, "train_labeled")
    problems = Problems()
    found: dict[str, Match] = {}
    taken: dict[str, Path] = {}
    for stem, path in given.items():
        image = problems.attempt(read_image, path, info.channels, info.wide_images or "stretch")
        if image is None:
            continue
        hit = next(((index[key], way) for way, key in _keys(image, info) if key in index), None)
        if hit is None:
            problems.add(f"{path}: not an image of {data} (none of its images has these "
                         "pixels, as they are or as prepare makes them)")
            continue
        (split, source), geometry = hit
        if split != "train_unlabeled":
            why = "already labeled" if split == "train_labeled" else "val and test stay as they are"
            problems.add(f"{path}: is the {split} image {source.stem} of {data}; only "
                         f"unlabeled images can be added ({why})")
        elif source.stem in taken:
            problems.add(f"{path}: the same image as {taken[source.stem]} ({source.stem})")
        elif clashes := _name_clashes(source, labeled_images):
            problems.add(f"{path}: the labeled split already has {clashes[0]} (another image "
                         "under its name); rename one of them")
        else:
            taken[source.stem] = path
            found[stem] = Match(path, split, source, geometry)
    problems.raise_any(None if len(problems.messages) < 2 else
                       f"{len(problems.messages)} images cannot be added (nothing was changed):")
    return found


def _name_clashes(source: SourceImage, labeled_images: Path) -> list[Path]:
    """The labeled split's image files that the source image's files would replace."""
    targets = (labeled_images / f"{stem}.png" for stem in source.pieces)
    return [target for target in targets if target.exists()]


def _keys(image: np.ndarray, info: DatasetInfo) -> list[tuple[str, bytes]]:
    """The pixel keys an image may have in the set: as it is, and as prepare makes it."""
    keys = [("as_is", pixel_digest(image))]
    if info.tile_scale and info.tile_scale != 1:
        keys.append(("scaled", pixel_digest(scale_image(image, info.tile_scale))))
    elif not info.tile_scale and image.shape[:2] != tuple(info.image_size):
        keys.append(("resized", pixel_digest(resize_image(image, info.image_size))))
    return keys


# ----------------------------------------------------------------------- writing
def _move(root: Path, info: DatasetInfo, match: Match, mask: np.ndarray) -> None:
    """Move one source image's files to the labeled split and write its mask there (a
    mask already at the target, e.g. one left without its image, is unlinked first: it is
    a hard link to the live set's file)."""
    mask = {"as_is": mask, "resized": resize_mask(mask, info.image_size),
            "scaled": scale_mask(mask, info.tile_scale)}[match.geometry]
    task = info.task_obj
    th, tw = info.image_size
    from_images, from_masks = split_dirs(root, "train_unlabeled")
    to_images, to_masks = split_dirs(root, "train_labeled")
    to_images.mkdir(parents=True, exist_ok=True)
    to_masks.mkdir(parents=True, exist_ok=True)
    for stem in match.source.pieces:
        _, origin = tile_origin(stem)
        piece = mask if origin is None else mask[origin[0] : origin[0] + th,
                                                 origin[1] : origin[1] + tw]
        mask_path = to_masks / f"{stem}.png"
        mask_path.unlink(missing_ok=True)  # write_png writes in place: never through a link
        write_png(mask_path, task.decode_mask(task.encode_mask(piece)))
        os.replace(from_images / f"{stem}.png", to_images / f"{stem}.png")  # a link: kept
        if (from_masks / f"{stem}.png").exists():
            os.remove(from_masks / f"{stem}.png")  # the hidden truth, replaced by the label


def suggested_by(images: Path) -> str:
    """The score ``imseg suggest`` picked ``images`` by (its suggest.yaml beside them,
    e.g. ``im``, ``im:cat``, ``im-clusters``), else :data:`BY_HAND`."""
    record = images.parent / "suggest.yaml"
    try:
        found = yaml.safe_load(record.read_text()) if record.is_file() else None
    except (OSError, yaml.YAMLError):
        found = None
    if not isinstance(found, dict) or not found.get("score"):
        return BY_HAND
    name = ":".join(str(v) for v in (found["score"], found.get("class")) if v)
    spread = found.get("spread")
    return f"{name}-{spread}" if spread and spread != SPREADS[0] else name


def record_addition(info: DatasetInfo, added: list[str], images: Path,
                    labels: Path | None, chosen_by: str = BY_HAND) -> None:
    """Raise the set's version and list what was added (module doc, "History")."""
    version = int(info.extra.get("version", FIRST_VERSION)) + 1
    history = list(info.extra.get("history", []))
    history.append({"version": version, "when": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "added": sorted(added), "images": str(Path(images).resolve()),
                    "labels": str(Path(labels).resolve()) if labels else "",
                    "chosen_by": chosen_by})
    info.extra = {**info.extra, "version": version, "history": history}


def version_of(info: DatasetInfo) -> int:
    return int(info.extra.get("version", FIRST_VERSION))


# --------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``imseg prepare add`` to the ``imseg prepare`` sub-commands."""
    p = subparsers.add_parser(
        "add", help="move newly labeled images from the unlabeled to the labeled split "
                    "of a prepared set (corrections of imseg suggest's pre-annotations)",
        description="Images are matched by their pixels; val and test stay untouched; "
                    "dataset.yaml records the new version and what was added.")
    p.add_argument("--data", type=Path, required=True, help="the prepared set to add to")
    p.add_argument("--images", type=Path, required=True,
                   help="folder of the labeled images (e.g. imseg suggest's images/)")
    labels = p.add_mutually_exclusive_group(required=True)
    labels.add_argument("--masks", type=Path,
                        help="folder of PNG masks named as the images, in the set's encoding")
    labels.add_argument("--annotations", type=Path,
                        help="a COCO JSON, a LabelMe JSON or a folder of LabelMe JSON files")
    p.add_argument("--format", choices=FORMATS,
                   help="of --annotations (default: a folder or a file with 'shapes' is "
                        "LabelMe, else COCO)")
    p.add_argument("--chosen-by", metavar="TEXT",
                   help="how these images were chosen, for the set's history and imseg "
                        "report's curve (default: imseg suggest's score when --images is "
                        "its output, else 'by hand')")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    info = add_labels(args.data, args.images, args.masks, args.annotations, args.format,
                      args.chosen_by)
    added = info.extra["history"][-1]["added"]
    print(f"{args.data}: version {version_of(info)}: added {len(added)} labeled image"
          f"{'s' if len(added) != 1 else ''}; now {info.counts.get('train_labeled', 0)} "
          f"labeled, {info.counts.get('train_unlabeled', 0)} unlabeled")
    return 0
