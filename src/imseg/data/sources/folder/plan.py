"""Planning ``imseg prepare folder`` from the scanned files: the size images are written
at (or cut into tiles of), the task, classes and mapping of mask values decided once from
all masks, and the split of the images.

The rules: :mod:`imseg.data.sources.folder`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imseg.data.palette import Palette
from imseg.data.sources.folder.scan import Item
from imseg.data.splitting import split_keys
from imseg.data.tiles import scaled_shape
from imseg.errors import ConfigError, DataError, Problems
from imseg.tasks import DISK_BINARY_VOID, DISK_MULTICLASS_VOID, Task


@dataclass
class Plan:
    """How source mask values become disk mask values, decided once for the whole set."""

    task: Task
    classes: list[str]
    colors: list[tuple[int, int, int]] = field(default_factory=list)
    lut: np.ndarray = field(default_factory=lambda: np.zeros(256, np.uint8))
    allowed: np.ndarray = field(default_factory=lambda: np.zeros(256, bool))
    expect: str = ""  # the allowed values, in words, for error messages


# ----------------------------------------------------------------------------- sizes
def plan_size(items: list[Item], size: tuple[int, int] | None, tile_scale: float,
              problems: Problems) -> tuple[int, int] | None:
    """The size images are written at (``--size``, else theirs; with tiles: the tile
    size), or None when no image could be read; problems are recorded."""
    readable = [i for i in items if i.digest]
    target = problems.attempt(_target_size, readable, size) if readable else None
    if target is not None and tile_scale:
        _check_tiles(readable, target, tile_scale, problems)
    return target


def _target_size(items: list[Item], size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        target = (int(size[0]), int(size[1]))
        where = f"--size {target[0]} {target[1]}"
    else:
        ref = items[0]
        for item in items[1:]:
            if item.size != ref.size:
                raise DataError(
                    f"{item.image}: size {item.size[0]}×{item.size[1]} (H×W) differs from "
                    f"{ref.image.name} ({ref.size[0]}×{ref.size[1]}); pass --size H W to resize "
                    "all images to one size"
                )
        target = ref.size
        where = f"{ref.image}: images are {target[0]}×{target[1]} (H×W)"
    if target[0] % 16 or target[1] % 16:
        h, w = (max(16, int(round(v / 16)) * 16) for v in target)
        raise DataError(
            f"{where}: the U-Net needs sides that are multiples of 16; pass e.g. --size {h} {w}"
        )
    return target


def _check_tiles(items: list[Item], tile: tuple[int, int], scale: float,
                 problems: Problems) -> None:
    """Every image must hold at least one whole tile once scaled."""
    for item in items:
        h, w = scaled_shape(item.size, scale)
        if h < tile[0] or w < tile[1]:
            at = f" at --tile-scale {scale:g} ({h}×{w})" if scale != 1 else ""
            problems.add(f"{item.image}: {item.size[0]}×{item.size[1]} (H×W){at} is smaller "
                         f"than the {tile[0]}×{tile[1]} tile; pass a smaller --size")


# --------------------------------------------------------------------- the mask plan
def plan_values(
    items: list[Item],
    task: str | None,
    classes: list[str] | None,
    palette: Palette | None,
    ignore: int | None,
    threshold: int | None,
    masks: Path,
    problems: Problems,
) -> Plan | None:
    """The mask plan of the scanned items, and each mask that does not fit it recorded in
    ``problems`` (as is a set that a threshold would leave without foreground); None when
    there is no plan."""
    scanned = [i for i in items if i.present is not None]
    plan = (problems.attempt(_plan_masks, scanned, task, classes, palette, ignore)
            if scanned else None)
    for item in scanned if plan is not None else []:
        problem = _mask_problem(item.present, plan)  # type: ignore[arg-type]
        if problem:
            problems.add(f"{item.mask}: {problem}")
    if threshold is not None and scanned and not any(i.present[:, 1].any() for i in scanned):
        problems.add(f"{masks}: no mask has a value >= {threshold}, so every mask would be "
                     "empty; lower --mask-threshold (lossy JPEG masks are read so by default)")
    return plan


def _plan_masks(
    items: list[Item],
    task: str | None,
    classes: list[str] | None,
    palette: Palette | None,
    ignore: int | None,
) -> Plan:
    """Decide the task, classes and value mapping from all masks at once."""
    scanned = [i for i in items if i.present is not None]
    if task is None and palette is None and ignore is not None:
        _check_void_is_not_foreground(scanned, ignore)
    if palette is not None:
        kind = "multiclass"
    elif task is not None:
        kind = task
    else:
        for item in scanned:
            if item.present.shape[0] > 1:  # type: ignore[union-attr]
                raise DataError(
                    f"{item.mask}: a colour (RGB) mask; pass --palette FILE when colours code "
                    "classes, or --task multilabel when each channel is one label"
                )
        if classes is not None:
            kind = "binary" if len(classes) == 1 else "multiclass"
        else:
            seen = _union(scanned, 1, ignore)
            binary = seen <= {0, 1} or seen <= {0, 255}
            kind = "binary" if binary else "multiclass"
    if kind == "multiclass":
        return _multiclass_plan(scanned, classes, palette, ignore)
    return _binary_plan(scanned, kind, classes, ignore)


def _usual(fg: int, ignore: int | None) -> np.ndarray:
    """The values of a binary ``0/fg`` mask (and the void value), as a 256-long mask."""
    usual = np.zeros(256, bool)
    usual[[0, fg]] = True
    if ignore is not None:
        usual[ignore] = True
    return usual


def _binary_majority(items: list[Item], ignore: int | None) -> int | None:
    """The foreground value (255 or 1) of a set whose masks are mostly binary ``0/fg``
    (more than half of them, some with foreground), or None: then the masks with other
    values are the odd ones out, to be named, not a clean mask."""
    for fg in (255, 1):
        clean = [i for i in items if not _odd_values(i, fg, ignore).size]
        if 2 * len(clean) > len(items) and any(i.present[0, fg] for i in clean):  # type: ignore[index]
            return fg
    return None


def _odd_values(item: Item, fg: int, ignore: int | None) -> np.ndarray:
    """The values of a single-channel mask besides ``0/fg`` (and void)."""
    return np.flatnonzero(item.present[0] & ~_usual(fg, ignore))  # type: ignore[index]


def _raise_odd_masks(items: list[Item], fg: int, ignore: int | None, advice: str) -> None:
    """One error naming every mask with values besides ``0/fg`` (the odd ones out), and
    ``advice``: what they are not, and what to do."""
    problems = Problems()
    for item in items:
        extra = _odd_values(item, fg, ignore)
        if extra.size:
            problems.add(f"{item.mask}: values {extra[:8].tolist()} besides 0/{fg}")
    odd = len(problems.messages)
    problems.raise_any(f"{len(items) - odd} of the {len(items)} masks are binary 0/{fg}, but "
                       f"the {odd} below hold other values; {advice}:")


def _check_void_is_not_foreground(items: list[Item], ignore: int) -> None:
    """Refuse a void value that is the foreground of most masks (binary 0/255 masks with
    ``--ignore-index 255`` would be all void): a set is never ruined by a flag unsaid."""
    gray = [i for i in items if i.present.shape[0] == 1]  # type: ignore[union-attr]
    if not gray or _binary_majority(gray, None) != ignore:
        return
    odd = [str(i.mask) for i in gray if _odd_values(i, ignore, None).size]
    named = ", ".join(odd[:5]) + (f" and {len(odd) - 5} more" if len(odd) > 5 else "")
    raise DataError(
        f"--ignore-index {ignore} would make every object pixel void in {len(gray) - len(odd)} "
        f"of the {len(gray)} masks: they hold only 0 and {ignore}, binary masks whose "
        f"foreground is {ignore}; drop --ignore-index (or pass --task when {ignore} does mark "
        "void pixels)" + (f". The masks with other values: {named}" if odd else "")
    )


def _union(items: list[Item], n_channels: int, ignore: int | None) -> set[int]:
    seen = np.zeros(256, bool)
    for item in items:
        seen |= item.present[:n_channels].any(axis=0)  # type: ignore[index]
    if ignore is not None:
        seen[ignore] = False
    return set(np.flatnonzero(seen).tolist())


def _binary_plan(
    items: list[Item], kind: str, classes: list[str] | None, ignore: int | None
) -> Plan:
    if kind == "multilabel":
        n = len(classes) if classes else _channel_count(items)
        names = classes or [f"label{c}" for c in range(n)]
    else:
        n, names = 1, classes or ["foreground"]
    seen = _union(items, n, ignore)
    if 1 in seen and 255 in seen and kind == "binary":
        fg = _binary_majority(items, ignore)
        if fg is not None:
            _raise_odd_masks(items, fg, ignore, "masks must use one foreground value: fix "
                             "or remove them")
    if 1 in seen and 255 in seen:
        with1 = next(i for i in items if i.present[:n, 1].any())  # type: ignore[index]
        with255 = next(i for i in items if i.present[:n, 255].any())  # type: ignore[index]
        raise DataError(
            f"{with255.mask}: foreground value 255, but {with1.mask} uses 1: masks must use "
            "one foreground value (0/1 or 0/255); pass --ignore-index when one of them is void"
        )
    fg = 1 if 1 in seen else 255
    plan = Plan(Task(kind, n), names)  # type: ignore[arg-type]
    plan.lut[fg] = 255
    plan.allowed[[0, fg]] = True
    plan.expect = f"0/{fg}"
    return with_void(plan, ignore, DISK_BINARY_VOID)


def _channel_count(items: list[Item]) -> int:
    first = items[0]
    n = first.present.shape[0]  # type: ignore[union-attr]
    for item in items[1:]:
        if item.present.shape[0] != n:  # type: ignore[union-attr]
            raise DataError(
                f"{item.mask}: {item.present.shape[0]} channels, but {first.mask.name} "  # type: ignore[union-attr]
                f"has {n}; multilabel masks need one channel per label (or pass --classes)"
            )
    return n


def _multiclass_plan(
    items: list[Item], classes: list[str] | None, palette: Palette | None, ignore: int | None
) -> Plan:
    values = np.arange(256)
    rank = values - (values > ignore) if ignore is not None else values.copy()
    colors: list[tuple[int, int, int]] = []
    if palette is not None:
        keep = [i for i in range(len(palette)) if i != ignore]
        n = len(keep)
        names = [palette.names[i] for i in keep]
        colors = [palette.colors[i] for i in keep]
        if classes is not None:
            if len(classes) != n:
                raise ConfigError(
                    f"--classes names {len(classes)} classes, the palette has {n}"
                    + (" (void entry left out)" if ignore is not None else "")
                )
            names = list(classes)
        if n < 2:
            raise ConfigError("a palette needs at least two classes besides the void entry")
    elif classes is not None:
        n, names = len(classes), list(classes)
    else:
        seen = _union(items, 1, ignore)
        top = max(seen) if seen else 0
        n = max(int(rank[top]) + 1, 2)
        if n > 254:
            fg = _binary_majority(items, ignore)
            if fg is not None:
                void = f", pass --ignore-index {top} if it marks void pixels" if fg != top else ""
                _raise_odd_masks(items, fg, ignore, f"read as class ids, value {top} "
                                 f"would make {n} classes; fix or remove them{void}, or pass "
                                 "--mask-threshold T to read every mask as binary (values "
                                 "from T on are foreground, the others background)")
            where = next(i for i in items if i.present[0, top])  # type: ignore[index]
            raise DataError(
                f"{where.mask}: value {top} would make {n} classes (at most 254); pass "
                f"--ignore-index {top} if it marks void pixels, --task binary for 0/{top} "
                "masks, or --mask-threshold 1 for instance labels (any id is foreground)"
            )
        names = [f"class{c}" for c in range(n)]
    plan = Plan(Task("multiclass", n), names, colors)
    plan.allowed = rank < n
    plan.lut = np.where(plan.allowed, rank, DISK_MULTICLASS_VOID).astype(np.uint8)
    plan.expect = f"class ids of {n} classes"
    if palette is not None:
        plan.expect = f"palette entries of {n} classes"
    return with_void(plan, ignore, DISK_MULTICLASS_VOID)


def _mask_problem(present: np.ndarray, plan: Plan) -> str | None:
    """Why a scanned mask does not fit the plan, or None."""
    task = plan.task
    if task.kind != "multilabel":
        if present.shape[0] != 1:
            return f"a {present.shape[0]}-channel mask; {task.kind} masks are single-channel"
        n = 1
    else:
        n = task.n_classes
        if present.shape[0] < n:
            return f"{present.shape[0]} channel(s) for {n} labels"
        extra = present[n:, 1:].any(axis=1)
        if extra.any():
            c = int(np.flatnonzero(extra)[0]) + n
            return f"channel {c} has labels, but --classes names only {n}"
    bad = np.flatnonzero(present[:n].any(axis=0) & ~plan.allowed)
    if bad.size:
        return f"values {bad[:8].tolist()} outside {plan.expect}"
    return None


def to_disk(mask: np.ndarray, plan: Plan) -> np.ndarray:
    """Source mask → mask in the prepared layout's encoding (see imseg.tasks)."""
    if plan.task.kind != "multilabel":
        return plan.lut[mask]
    planes = mask[..., None] if mask.ndim == 2 else mask
    disk = plan.lut[planes[..., : plan.task.n_classes]]
    return disk[..., 0] if disk.shape[2] == 1 else disk


# ------------------------------------------------------------------------------ splits
def assign_splits(
    items: list[Item], labeled: float, val: float, test: float, seed: int
) -> dict[str, list[Item]]:
    by_stem = {i.stem: i for i in items}
    pool = [i.stem for i in items if i.origin == "pool"]
    # equal images of the pool move together: the first stem stands for its copies
    copies: dict[str, list[str]] = {}
    lead: dict[bytes, str] = {}
    for stem in sorted(pool):
        copies.setdefault(lead.setdefault(by_stem[stem].digest, stem), []).append(stem)
    first = split_keys(list(copies), {"test": test, "val": val}, seed, rest="train")
    train = split_keys(first["train"], {"train_labeled": labeled}, seed, rest="train_unlabeled")

    def with_copies(leads: list[str]) -> list[str]:
        return [stem for key in leads for stem in copies[key]]

    keys = {
        "train_labeled": with_copies(train["train_labeled"]),
        "train_unlabeled": with_copies(train["train_unlabeled"])
        + [i.stem for i in items if i.origin == "unlabeled"],
        "val": with_copies(first["val"]) + [i.stem for i in items if i.origin == "val"],
        "test": with_copies(first["test"]) + [i.stem for i in items if i.origin == "test"],
    }
    if not keys["train_labeled"]:
        raise ConfigError(
            f"no labeled training pairs left from {len(pool)} pairs after test "
            f"({len(first['test'])}) and val ({len(first['val'])}); add pairs or lower the "
            "fractions"
        )
    if not keys["val"]:
        raise ConfigError("no validation images: pass --val-fraction > 0 or --val-images")
    return {split: [by_stem[s] for s in sorted(stems)] for split, stems in keys.items()}


def with_void(plan: Plan, ignore: int | None, void: int) -> Plan:
    """``plan`` with the mask value ``ignore`` (if any) read as the void value ``void``."""
    if ignore is not None:
        plan.lut[ignore] = void
        plan.allowed[ignore] = True
        plan.expect += f" (void {ignore})"
    return plan
