"""``imseg prepare hela``: the HeLa download → overlapping crops in the prepared layout.

The download (docs/method.md §3) holds large brightfield images with three masks each::

    original_data/{train_full,val,test}/brightfield/<stem>.{png,jpg,tif,...}
    original_data/{train_full,val,test}/{alive,dead}/<stem>.png
    original_data/{train_full,val,test}/{mod_position | pos | position}/<stem>.png

Every image is cut into ``crop × crop`` tiles overlapping by ``overlap`` (the
paper: 256 px, 60 %); the tiles are evenly spaced, the last one flush with the
border, so the whole image is covered. The task is multilabel with the
channels ``alive, dead, position``; the brightfield is grey and fed as one
channel, as the reference does (it decodes the PNG with one channel).

Position channel. ``mod_position`` (when present) already holds the
reference's size-adapted discs and is used as it is. Otherwise the raw dots of
``pos``/``position`` become discs here, with the reference's rule: the radius of
a cell's disc is a quarter of the distance to the nearest other cell centre,
clipped to ``[3, 8]`` px. In a dense culture that distance is about one cell
diameter, so the disc follows the cell size where it matters, and because every
radius is at most a quarter of the gap, two discs never touch: counting blobs
of the position channel counts cells. (A radius from the area of the alive/dead
component under the dot was considered and rejected: touching cells merge into
one component, whose area would give large discs that merge too.)

Split (fixing the reference's leak, docs/decisions.md, fault 3): the 10 % labeled part is drawn
by *source image*, so every crop of an image lies on one side and labeled and
unlabeled crops never overlap. ``val`` and ``test`` come from their folders.
The unlabeled crops keep their masks (hidden truth for pseudo-label quality).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree
from tqdm import tqdm

from imseg.data.imageio import list_images, read_image
from imseg.data.layout import DatasetInfo, finalize_counts, split_dirs, write_pair
from imseg.data.sources._common import download_parser, fresh_layout, summary
from imseg.data.splitting import split_keys
from imseg.data.tiles import cut_pair
from imseg.errors import DataError, Problems
from imseg.tasks import Task

CLASSES = ["alive", "dead", "position"]
COLORS = [(60, 180, 75), (230, 25, 75), (0, 130, 200)]
SOURCE_SPLITS = {"train_full": "train", "val": "val", "test": "test"}
POSITION_FOLDERS = ("mod_position", "pos", "position")
"""Checked in this order: precomputed discs first, raw dots otherwise."""
MASK_THRESHOLD = 10
BRIGHTFIELD_WIDE = "high_byte"  # 16-bit brightfield → 8 bits as OpenCV reads it
"""A mask pixel is foreground above this grey value (the reference's threshold)."""
MIN_RADIUS, MAX_RADIUS = 3, 8


# ----------------------------------------------------------------- geometry
def dot_centres(dots: np.ndarray) -> np.ndarray:
    """Centres ``(K, 2)`` (row, col, rounded) of the 8-connected blobs of a bool mask."""
    labels, n = ndimage.label(dots, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    centres = ndimage.center_of_mass(dots, labels, range(1, n + 1))
    return np.rint(np.asarray(centres, dtype=np.float64)).astype(np.int64)


def disc_radii(
    centres: np.ndarray, min_radius: int = MIN_RADIUS, max_radius: int = MAX_RADIUS
) -> np.ndarray:
    """Per centre: ``floor(nearest-neighbour distance / 4)`` clipped to the radius range.

    A lone centre (no neighbour) gets ``min_radius``, as in the reference.
    """
    if len(centres) < 2:
        return np.full(len(centres), min_radius, dtype=np.int64)
    dist, _ = cKDTree(centres).query(centres, k=2)
    nearest = dist[:, 1]
    raw = np.floor(nearest / 4.0).astype(np.int64)
    raw[nearest == 0] = min_radius  # duplicate centres: treat as lone
    return np.clip(raw, min_radius, max_radius)


def draw_discs(shape: tuple[int, int], centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """A bool mask with a filled disc ``dy² + dx² ≤ r²`` at every centre (clipped to the image)."""
    out = np.zeros(shape, dtype=bool)
    h, w = shape
    for (cy, cx), r in zip(centres.tolist(), radii.tolist(), strict=True):
        y0, y1 = max(cy - r, 0), min(cy + r + 1, h)
        x0, x1 = max(cx - r, 0), min(cx + r + 1, w)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        out[y0:y1, x0:x1] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return out


def position_discs(
    dots: np.ndarray, min_radius: int = MIN_RADIUS, max_radius: int = MAX_RADIUS
) -> np.ndarray:
    """Raw position dots (bool mask) → size-adapted discs (the reference's mod_position)."""
    centres = dot_centres(dots)
    return draw_discs(dots.shape, centres, disc_radii(centres, min_radius, max_radius))


# ---------------------------------------------------------------- reading
def find_root(source: Path) -> Path:
    """The ``original_data`` folder: ``source`` itself or its child of that name."""
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"{source}: source folder not found")
    for root in (source / "original_data", source):
        if (root / "train_full").is_dir():
            return root
    raise DataError(
        f"{source}: no train_full/ folder here or in {source / 'original_data'} "
        "(expected original_data/{train_full,val,test}/{brightfield,alive,dead,pos})"
    )


def read_brightfield(path: Path) -> np.ndarray:
    """A brightfield file → ``H×W`` uint8 grey.

    Colour files are converted to grey; 16-bit files are reduced to 8 bits by
    dropping the low byte, as OpenCV's ``imread`` does in the reference (the data
    set records it, so ``predict`` reads new 16-bit images alike).
    """
    return read_image(path, 1, wide=BRIGHTFIELD_WIDE)[..., 0]


def read_binary(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A mask file → bool ``H×W`` (grey value > 10), checked against the brightfield size."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                arr = np.asarray(im) > MASK_THRESHOLD
            else:
                arr = np.asarray(im.convert("L")) > MASK_THRESHOLD
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read mask ({exc})") from exc
    if arr.shape != tuple(shape):
        raise DataError(
            f"{path}: size {arr.shape[1]}x{arr.shape[0]}, "
            f"the brightfield is {shape[1]}x{shape[0]}"
        )
    return arr


class _SourceSplit:
    """One folder of the download (train_full, val or test): files by stem."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found")
        self.folder = folder
        self.brightfield = list_images(folder / "brightfield")
        self.alive = list_images(folder / "alive")
        self.dead = list_images(folder / "dead")
        pos = next((folder / n for n in POSITION_FOLDERS if (folder / n).is_dir()), None)
        if pos is None:
            raise DataError(f"{folder}: no position folder ({', '.join(POSITION_FOLDERS)})")
        self.position_kind = pos.name
        self.position = list_images(pos)
        problems = Problems()
        for name, found in (("alive", self.alive), ("dead", self.dead), (pos.name, self.position)):
            for stem in sorted(set(self.brightfield) - set(found)):
                problems.add(f"{self.brightfield[stem]}: no {name} mask "
                             f"({folder / name / (stem + '.png')})")
        problems.raise_any()

    def load(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """``(image H×W uint8, label (3, H, W) uint8 0/1)`` of one source image."""
        image = read_brightfield(self.brightfield[stem])
        shape = image.shape
        alive = read_binary(self.alive[stem], shape)
        dead = read_binary(self.dead[stem], shape)
        position = read_binary(self.position[stem], shape)
        if self.position_kind != "mod_position":
            position = position_discs(position)
        return image, np.stack([alive, dead, position]).astype(np.uint8)


def _write_crops(
    out: Path, split: str, stem: str, image: np.ndarray, label: np.ndarray,
    crop: int, overlap: float, task: Task, source: Path,
) -> int:
    h, w = image.shape
    if h < crop or w < crop:
        raise DataError(f"{source}: {w}x{h} is smaller than the {crop} px crop")
    count = 0
    for name, piece, channels_last in cut_pair(stem, image, np.moveaxis(label, 0, -1),
                                               (crop, crop), 1.0, overlap):
        write_pair(out, split, name, piece, np.moveaxis(channels_last, -1, 0), task)
        count += 1
    return count


# ------------------------------------------------------------------ prepare
def prepare_hela(
    source: Path,
    out: Path,
    crop: int = 256,
    overlap: float = 0.6,
    labeled_fraction: float = 0.1,
    seed: int = 42,
) -> DatasetInfo:
    """Crop the HeLa download into ``out``; the labeled part is chosen by source image.

    ``labeled_fraction`` of the train_full images (``floor``, as the reference,
    but at least one) give the labeled crops, the rest the unlabeled ones.
    """
    if crop < 1:
        raise DataError(f"crop must be positive, not {crop}")
    if not 0.0 <= overlap < 1.0:
        raise DataError(f"overlap must lie in [0, 1), not {overlap}")
    if not 0.0 < labeled_fraction < 1.0:
        raise DataError(f"labeled fraction must lie in (0, 1), not {labeled_fraction}")
    root = find_root(source)
    parts = {name: _SourceSplit(root / name) for name in SOURCE_SPLITS}
    train = sorted(parts["train_full"].brightfield)
    n_labeled = max(1, int(len(train) * labeled_fraction))
    if n_labeled >= len(train):
        raise DataError(f"{root / 'train_full'}: {len(train)} images are too few to split")
    chosen = split_keys(train, {"train_labeled": n_labeled / len(train)}, seed, "train_unlabeled")
    plan = {
        "train_labeled": ("train_full", chosen["train_labeled"]),
        "train_unlabeled": ("train_full", chosen["train_unlabeled"]),
        "val": ("val", sorted(parts["val"].brightfield)),
        "test": ("test", sorted(parts["test"].brightfield)),
    }
    with fresh_layout(out) as root:  # the old set stays until the new one is whole
        task = Task("multilabel", len(CLASSES))
        crops: dict[str, int] = {}
        for split, (part_name, stems) in plan.items():
            part = parts[part_name]
            split_dirs(root, split)[0].mkdir(parents=True, exist_ok=True)
            crops[split] = 0
            for stem in tqdm(stems, desc=f"hela {split}", unit="img", disable=None):
                image, label = part.load(stem)
                crops[split] += _write_crops(root, split, stem, image, label, crop, overlap, task,
                                             part.brightfield[stem])
        info = DatasetInfo(
            task="multilabel",
            classes=list(CLASSES),
            image_size=(crop, crop),
            channels=1,
            colors=list(COLORS),
            seed=seed,
            source=str(Path(source).resolve()),
            rotate=True,
            headline_classes=["alive", "dead"],  # the paper's mIoU_ad
            test_metrics=["cell_count"],
            wide_images=BRIGHTFIELD_WIDE,
            tile_scale=1.0,  # crops of the brightfields' own pixels: predict cuts new ones alike
            extra={
                "dataset": "hela",
                "crop": crop,
                "overlap": overlap,
                "labeled_fraction": labeled_fraction,
                "labeled_by": "source image",
                "position": {
                    name: parts[name].position_kind for name in SOURCE_SPLITS
                },
                "disc_radius": f"floor(nearest-centre distance / 4) clipped to "
                               f"[{MIN_RADIUS}, {MAX_RADIUS}] (raw dots only)",
                "source_images": {split: stems for split, (_, stems) in plan.items()},
            },
        )
        return finalize_counts(root, info)


# ---------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``imseg prepare hela``."""
    parser = download_parser(
        subparsers, "hela",
        help="HeLa brightfield download → overlapping crops (alive, dead, position)",
        description=("Cut the HeLa download (original_data/{train_full,val,test}) into overlapping "
                     "crops; the labeled 10 % is drawn by source image."),
        source_help="the folder holding original_data/, or original_data/ itself",
        labeled_help="fraction of train_full images whose crops are labeled (0.1)",
    )
    parser.add_argument("--crop", type=int, default=256, help="crop side in px (256)")
    parser.add_argument("--overlap", type=float, default=0.6, help="crop overlap (0.6)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    info = prepare_hela(args.source, args.out, crop=args.crop, overlap=args.overlap,
                        labeled_fraction=args.labeled_fraction, seed=args.seed)
    print(summary("hela", args.out, info))
    images = {k: len(v) for k, v in info.extra["source_images"].items()}
    print("source images: " + ", ".join(f"{k} {v}" for k, v in images.items()))
    return 0
