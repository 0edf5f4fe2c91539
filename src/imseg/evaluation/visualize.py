"""Colouring masks and drawing the method's figures (IM creation, pseudo labels over generations).

Masks here are in the on-disk encoding of :mod:`imseg.tasks` (what the run's
``samples/`` PNGs and ``imseg predict`` hold): binary ``H×W`` 0/255 (128 void),
multiclass ``H×W`` class ids (255 = void or IM), multilabel ``H×W×C`` 0/255.
Classes take the colours of dataset.yaml; the inconsistency mask is grey.
Figures are built as bare :class:`~matplotlib.figure.Figure` objects (Agg
canvas, no pyplot state), so they draw headless and never leak windows.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from imseg.data.layout import DatasetInfo, default_colors
from imseg.tasks import DISK_BINARY_VOID, DISK_MULTICLASS_VOID, Task

NAMES = {
    "fdt": "FDT", "aldt": "ALDT", "ldt": "LDT", "im": "IM", "im_plus": "IM+",
    "aim_plus": "AIM+", "im_plus_plus": "IM++", "aim_plus_plus": "AIM++",
    "noisy_student": "Noisy Student", "evalnet": "EvalNet", "model_ensemble": "Model Ensemble",
    "input_ensemble": "Input Ensemble", "consistency_loss": "Consistency Loss",
    "fixmatch": "FixMatch", "unimatch": "UniMatch", "mean_teacher": "Mean Teacher",
    "fixmatch_im": "FixMatch+IM", "unimatch_im": "UniMatch+IM", "mean_teacher_im": "Mean Teacher+IM",
}
IM_GREY = (150, 150, 150)
DPI = 150
Color = tuple[int, int, int]


def display_name(approach: str) -> str:
    return NAMES.get(approach, approach)


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """``stem.png`` (dpi 150) and ``stem.pdf``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=DPI)
    return paths


@dataclass(frozen=True)
class Legend:
    """What each colour of a coloured mask means."""

    names: list[str]
    colors: list[Color]


def class_palette(info: DatasetInfo) -> Legend:
    """Background (binary, multilabel) or every class (multiclass) with its colour.

    Binary dataset.yaml colours are ``[background, foreground]`` (a single colour
    is the foreground); multilabel colours are one per channel, background black.
    """
    colors = list(info.colors)
    if info.task == "binary":
        bg = colors[0] if len(colors) >= 2 else (0, 0, 0)
        fg = colors[-1] if colors else default_colors(2)[1]
        return Legend(["background", info.classes[0]], [bg, fg])
    n = len(info.classes)
    fill = default_colors(n + 1)
    if info.task == "multiclass":
        colors = colors + fill[len(colors):n]
        return Legend(list(info.classes), colors[:n])
    colors = colors + fill[1 + len(colors): n + 1]
    return Legend(["background", *info.classes], [(0, 0, 0), *colors[:n]])


def colorize(mask: np.ndarray, info: DatasetInfo, im: np.ndarray | None = None) -> np.ndarray:
    """A disk-encoded mask → ``H×W×3`` uint8 RGB; void and ``im`` pixels grey.

    Multilabel channels that overlap are blended (the mean of their colours).
    """
    legend = class_palette(info)
    table = np.asarray(legend.colors, dtype=np.float32)
    if info.task == "multiclass":
        ids = mask.astype(np.int64)
        void = ids == DISK_MULTICLASS_VOID
        out = table[np.clip(ids, 0, len(table) - 1)]
    elif info.task == "binary":
        planes = mask if mask.ndim == 2 else mask[..., 0]
        void = planes == DISK_BINARY_VOID
        out = table[((planes > 127) & ~void).astype(np.int64)]
    else:
        planes = mask[..., None] if mask.ndim == 2 else mask
        planes = planes[..., : len(info.classes)]
        void = (planes == DISK_BINARY_VOID).any(axis=-1)
        on = (planes > 127) & (planes != DISK_BINARY_VOID)
        count = on.sum(axis=-1, keepdims=True)
        blend = (on[..., None] * table[1 : 1 + planes.shape[-1]]).sum(axis=-2)
        out = np.where(count > 0, blend / np.maximum(count, 1), table[0])
    out = np.where(void[..., None], np.asarray(IM_GREY, np.float32), out)
    if im is not None:
        out = np.where(im.astype(bool)[..., None], np.asarray(IM_GREY, np.float32), out)
    return out.round().astype(np.uint8)


def foreground(mask: np.ndarray, task: Task) -> np.ndarray:
    """Bool ``H×W``: pixels of a disk-encoded mask that are not background."""
    if task.kind == "multiclass":
        return (mask != 0) & (mask != DISK_MULTICLASS_VOID)
    planes = mask[..., None] if mask.ndim == 2 else mask
    return ((planes > 127) & (planes != DISK_BINARY_VOID)).any(axis=-1)


def hatch(shape: tuple[int, int], period: int = 6, width: int = 2) -> np.ndarray:
    """Bool ``H×W`` diagonal stripes, to mark a region without hiding what is under it."""
    yy, xx = np.indices(shape)
    return (yy + xx) % period < width


def overlay(image: np.ndarray, mask: np.ndarray, info: DatasetInfo, im: np.ndarray | None = None,
            alpha: float = 0.5) -> np.ndarray:
    """The image blended with the class colours of ``mask``; ``im`` pixels hatched grey."""
    rgb = image if image.ndim == 3 and image.shape[-1] == 3 else np.repeat(
        image.reshape(image.shape[:2] + (1,)), 3, axis=-1)
    base = rgb.astype(np.float32)
    colored = colorize(mask, info).astype(np.float32)
    fg = foreground(mask, info.task_obj)[..., None]
    out = np.where(fg, (1 - alpha) * base + alpha * colored, base)
    if im is not None:
        stripes = im.astype(bool) & hatch(im.shape[:2])
        out = np.where(stripes[..., None], np.asarray(IM_GREY, np.float32), out)
    return out.round().astype(np.uint8)


def teacher_votes(teachers: list[np.ndarray], task: Task) -> np.ndarray:
    """The "sum" panel: per pixel, how many teachers say foreground (binary, multilabel:
    any label), or, multiclass, how many vote for the most voted class."""
    if task.kind != "multiclass":
        return sum(foreground(t, task).astype(np.int64) for t in teachers)
    stack = np.stack(teachers)
    return np.max([(stack == c).sum(axis=0) for c in np.unique(stack)], axis=0)


def _show(ax, picture: np.ndarray, title: str, **kw) -> None:
    ax.imshow(picture, interpolation="nearest", **kw)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(fig: Figure, info: DatasetInfo, with_im: bool = True) -> None:
    legend = class_palette(info)
    handles = [Patch(facecolor=np.asarray(c) / 255, edgecolor="0.5", label=n)
               for n, c in zip(legend.names, legend.colors, strict=True)]
    if with_im:
        handles.append(Patch(facecolor=np.asarray(IM_GREY) / 255, edgecolor="0.5",
                             label="inconsistency mask"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5),
               fontsize=8, frameon=False)


def im_creation_figure(image: np.ndarray, teachers: list[np.ndarray], im: np.ndarray,
                       label: np.ndarray, info: DatasetInfo, title: str = "") -> Figure:
    """The paper's IM figure: each teacher's mask, their sum, the IM, the final label
    (IM grey), after the image itself."""
    task = info.task_obj
    n = len(teachers)
    fig = Figure(figsize=(1.7 * (n + 4), 2.5), layout="constrained")
    axes = fig.subplots(1, n + 4)
    _show(axes[0], image.squeeze(), "image", cmap="gray")
    letters = "abcdefghijklmnopqrstuvwxyz"
    for t, mask in enumerate(teachers):
        _show(axes[1 + t], colorize(mask, info), f"({letters[t]}) teacher {t + 1}")
    votes = teacher_votes(teachers, task)
    kind = "votes, top class" if task.kind == "multiclass" else "sum"
    _show(axes[n + 1], votes, f"({letters[n]}) {kind} (0–{n})", cmap="gray", vmin=0, vmax=n)
    _show(axes[n + 2], im.astype(bool), f"({letters[n + 1]}) IM", cmap="gray", vmin=0, vmax=1)
    _show(axes[n + 3], colorize(label, info, im), f"({letters[n + 2]}) final")
    if title:
        fig.suptitle(title, fontsize=10)
    _legend(fig, info)
    return fig


@dataclass
class StripColumn:
    """One generation of a strip: the (blocked) input and its pseudo label, or None when the
    image was dropped that generation."""

    title: str
    top: np.ndarray
    bottom: np.ndarray | None


def generation_strip(columns: list[StripColumn], info: DatasetInfo, title: str = "",
                     rows: tuple[str, str] = ("input", "pseudo label"),
                     with_im: bool = True) -> Figure:
    """One column per generation: the input on top, the coloured label below."""
    k = len(columns)
    fig = Figure(figsize=(1.7 * k + 0.4, 4.0), layout="constrained")
    axes = fig.subplots(2, k, squeeze=False)
    for j, col in enumerate(columns):
        _show(axes[0, j], col.top.squeeze(), col.title, cmap="gray")
        if col.bottom is None:
            axes[1, j].imshow(np.full(col.top.shape[:2], 235, np.uint8), cmap="gray", vmin=0,
                              vmax=255)
            axes[1, j].text(0.5, 0.5, "dropped", ha="center", va="center",
                            transform=axes[1, j].transAxes, fontsize=9, color="0.3")
            axes[1, j].set_xticks([])
            axes[1, j].set_yticks([])
        else:
            _show(axes[1, j], col.bottom, "")
    axes[0, 0].set_ylabel(rows[0], fontsize=9)
    axes[1, 0].set_ylabel(rows[1], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    _legend(fig, info, with_im)
    return fig


# -------------------------------------------------------- figures from a run's samples/
SAMPLE_FOLDER = re.compile(r"^(?P<chain>r\d+(?:_n\d+)?)_g(?P<gen>\d+)$")


def sample_chains(run_dir: Path) -> dict[tuple[str, str], dict[int, Path]]:
    """``(approach, chain) -> {generation: folder}`` of a run's samples/."""
    out: dict[tuple[str, str], dict[int, Path]] = defaultdict(dict)
    root = Path(run_dir) / "samples"
    if not root.is_dir():
        return {}
    for folder in sorted(root.glob("*/*")):
        m = SAMPLE_FOLDER.match(folder.name)
        if m and folder.is_dir():
            out[(folder.parent.name, m["chain"])][int(m["gen"])] = folder
    return dict(out)


def _read(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    with Image.open(path) as im:
        return np.asarray(im)


def _teachers(folder: Path, stem: str) -> list[np.ndarray]:
    paths = sorted(folder.glob(f"{stem}_teacher*.png"),
                   key=lambda p: int(p.stem.rsplit("teacher", 1)[1]))
    return [np.asarray(Image.open(p)) for p in paths]


def _blocked_im(folder: Path, stem: str, blocked_input: np.ndarray | None) -> np.ndarray | None:
    """The sample's IM when it was removed from the input (IM approaches); a mere
    disagreement mask (Model Ensemble: recorded, not blocked) is not drawn on the label."""
    im = _read(folder / f"{stem}_im.png")
    if im is None or blocked_input is None or blocked_input[im > 0].any():
        return None
    return im > 0


def _pick_stem(folders: dict[int, Path]) -> str | None:
    """The sample with a pseudo label in the most generations (then by name)."""
    counts: dict[str, int] = defaultdict(int)
    for folder in folders.values():
        for p in folder.glob("*_image.png"):
            stem = p.name[: -len("_image.png")]
            counts[stem] += (folder / f"{stem}_label.png").is_file()
    return min(counts, key=lambda s: (-counts[s], s)) if counts else None


def sample_figures(run_dir: Path, out: Path, info: DatasetInfo, data_path: Path | None = None,
                   chains_per_approach: int = 1) -> list[Path]:
    """Per approach (first chain(s)): a strip over generations and, where the run kept
    an IM and several teachers' masks, the IM creation figure."""
    written: list[Path] = []
    chosen: dict[str, int] = defaultdict(int)
    for (approach, chain), folders in sample_chains(run_dir).items():
        if chosen[approach] >= chains_per_approach:
            continue
        stem = _pick_stem(folders)
        if stem is None:
            continue
        chosen[approach] += 1
        name = f"{approach}_{chain}_{stem}"
        label = f"{display_name(approach)} {chain}: {stem}"
        columns = _truth_column(data_path, stem, info)
        with_im = False
        for gen, folder in sorted(folders.items()):
            image = _read(folder / f"{stem}_image.png")
            if image is None:
                continue
            top = _read(folder / f"{stem}_input.png")
            mask = _read(folder / f"{stem}_label.png")
            im = _blocked_im(folder, stem, top)
            with_im = with_im or im is not None
            bottom = None if mask is None else colorize(mask, info, im)
            columns.append(StripColumn(f"G{gen}", image if top is None else top, bottom))
        if columns:
            written += save_figure(generation_strip(columns, info, label, with_im=with_im),
                                   out / f"{name}_strip")
        for gen, folder in sorted(folders.items()):
            teachers = _teachers(folder, stem)
            im, mask = _read(folder / f"{stem}_im.png"), _read(folder / f"{stem}_label.png")
            if len(teachers) >= 2 and im is not None and mask is not None:
                image = _read(folder / f"{stem}_image.png")
                fig = im_creation_figure(image, teachers, im > 0, mask, info,
                                         f"{label}, G{gen}")
                written += save_figure(fig, out / f"{name}_g{gen}_im")
                break
    return written


def _truth_column(data_path: Path | None, stem: str, info: DatasetInfo) -> list[StripColumn]:
    """The image and its hidden true mask, when the data set is still at its path."""
    if data_path is None:
        return []
    for split in ("train_unlabeled", "train_labeled"):
        image = _read(data_path / split / "images" / f"{stem}.png")
        mask = _read(data_path / split / "masks" / f"{stem}.png")
        if image is not None and mask is not None:
            return [StripColumn("image / truth", image, colorize(mask, info))]
    return []
