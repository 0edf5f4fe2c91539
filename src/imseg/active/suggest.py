"""``imseg suggest``: which images to label next, with the models' masks to correct.

The run's best models (as ``imseg predict`` chooses them: the top teachers of the stage
with the best mean validation IoU) predict every candidate image: by default the
source images of the run's data set's unlabeled split (a tiled set's tiles stitched
back, :mod:`imseg.active.images`), else the images of a folder. Each gets the scores of
:mod:`imseg.active.scores`; the ranking by one of them, thinned by the diversity rule
or the cluster rule of :mod:`imseg.active.diversity`, gives the ``k`` picks.

``--out`` gets ``ranking.csv`` (every candidate: rank, image, pick number, the pick it
is a near-copy of, every score), ``contact_sheet.png`` (per pick: image, ensemble
mask, IM over the image), and for the picks: ``images/`` (the pixels the models saw,
as PNG: what to label), ``masks/`` (the ensemble's masks in the set's encoding),
``uncertain/`` (the IM, 0/255), ``coco.json`` and ``labelme/`` (pre-annotations,
:mod:`imseg.active.annotations`), and ``suggest.yaml`` (run, models, data version).
``--overwrite`` first removes exactly these (an earlier suggestion's stale picks would
otherwise be added with their uncorrected masks); other files in ``--out`` stay.
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from matplotlib.figure import Figure

from imseg.active.annotations import preannotation, write_coco, write_labelme
from imseg.active.diversity import (
    DEFAULT_MIN_DISTANCE,
    SPREADS,
    cluster_picks,
    diverse_picks,
    thumbnail,
)
from imseg.active.images import SourceImage, folder_sources, split_sources
from imseg.active.scores import (
    SCORES,
    ImageScores,
    class_columns,
    score_image,
    score_row,
)
from imseg.data.layout import DatasetInfo, read_info
from imseg.data.tiles import Tiling
from imseg.errors import ConfigError, DataError
from imseg.evaluation.visualize import DPI, colorize, overlay
from imseg.logs import bar_disable
from imseg.predict import ImagePrediction, ModelSet, ensemble_probabilities, tiling_for
from imseg.runtime import resolve_device
from imseg.storage import atomic_write_text, save_png

UNLABELED = "train_unlabeled"


@dataclass
class Candidate:
    """A scored image: its source, scores and thumbnail (for the diversity rule)."""

    source: SourceImage
    scores: ImageScores
    thumb: np.ndarray


@dataclass
class Suggestion:
    """The ranking (best first), the ranking positions picked, and the near-copies."""

    ranked: list[Candidate]
    picked: list[int]
    near: dict[int, int]

    @property
    def picks(self) -> list[Candidate]:
        return [self.ranked[i] for i in self.picked]


# -------------------------------------------------------------------------- sources
def run_data(run_dir: Path) -> Path:
    """The data folder a run was trained on (its run.yaml), which must still be there."""
    meta = Path(run_dir) / "run.yaml"
    data = (yaml.safe_load(meta.read_text()) or {}).get("data") if meta.is_file() else None
    if not data or not Path(data).is_dir():
        raise DataError(f"{run_dir}: its data folder ({data or 'not in run.yaml'}) is not "
                        "there; name the images to rank with --images")
    return Path(data)


def candidate_sources(run_dir: Path, models: ModelSet, images: Path | None
                      ) -> tuple[list[SourceImage], dict]:
    """The images to rank and a description of where they come from (for suggest.yaml)."""
    if images is not None:
        return folder_sources(images), {"images": str(Path(images).resolve())}
    data = run_data(run_dir)
    info = read_info(data)
    if (info.task, info.classes, info.channels) != (models.info.task, models.info.classes,
                                                    models.info.channels):
        raise DataError(f"{data}: no longer the data the run's models were trained on "
                        f"({info.task} {info.classes} vs {models.info.task} "
                        f"{models.info.classes}); name the images to rank with --images")
    sources = split_sources(data, UNLABELED)
    if not sources:
        raise DataError(f"{data}: its unlabeled split is empty; name images with --images")
    return sources, {"data": str(data.resolve()), "split": UNLABELED,
                     "data_version": int(info.extra.get("version", 1))}


def source_tiling(source: SourceImage, info: DatasetInfo) -> Tiling | None:
    """How the models see a source: a prepared set's stitched tiles at their own pixels
    (already at the set's scale), prepared whole images as they are, files as predict
    does."""
    if source.prepared:
        return Tiling(1.0) if source.tiled else None
    return tiling_for(info)


# -------------------------------------------------------------------------- scoring
def predict_sources(models: ModelSet, sources: list[SourceImage], device: torch.device,
                    batch_size: int, progress: bool = False
                    ) -> list[tuple[SourceImage, np.ndarray, ImageScores, ImagePrediction]]:
    """Each source's pixels, scores and prediction; ``batch_size`` images at a time."""
    from tqdm import tqdm

    nets = [m.to(device).eval() for m in models.models]
    out = []
    with tqdm(total=len(sources), desc="suggest", unit="img",
              disable=bar_disable(progress)) as bar:
        for start in range(0, len(sources), batch_size):
            chunk = sources[start : start + batch_size]
            for tiling in {source_tiling(s, models.info) for s in chunk}:
                part = [s for s in chunk if source_tiling(s, models.info) == tiling]
                images = [s.read(models.info) for s in part]
                with torch.no_grad():
                    probabilities = ensemble_probabilities(
                        nets, models.task, images, models.info.image_size, device,
                        tiling=tiling, batch_size=batch_size)
                    for source, image, p in zip(part, images, probabilities, strict=True):
                        scores, prediction = score_image(models.task, models.info.classes, p)
                        out.append((source, image, scores, prediction))
            bar.update(len(chunk))
    return out


def choose(candidates: list[Candidate], k: int, score: str = "im",
           class_name: str | None = None,
           min_distance: float = DEFAULT_MIN_DISTANCE, spread: str = SPREADS[0]
           ) -> Suggestion:
    """Rank by ``score`` (of one class with ``class_name``), highest first (ties by
    name), and pick ``k`` by the ``spread`` rule."""
    ranked = sorted(candidates, key=lambda c: (-c.scores.value(score, class_name),
                                               c.source.stem))
    thumbs = [c.thumb for c in ranked]
    picked, near = (cluster_picks(thumbs, k) if spread == "clusters" else
                    diverse_picks(thumbs, k, min_distance))
    return Suggestion(ranked, picked, near)


# -------------------------------------------------------------------------- command
def suggest(models: ModelSet, run_dir: Path, out: Path, k: int = 20,
            images: Path | None = None, score: str = "im", class_name: str | None = None,
            min_distance: float = DEFAULT_MIN_DISTANCE, device: str = "auto",
            batch_size: int = 8, progress: bool = False, overwrite: bool = False,
            spread: str = SPREADS[0]) -> Suggestion:
    """Rank, pick and write everything the module doc lists into ``out``."""
    _check_options(models, k, score, class_name, min_distance, spread, out, overwrite)
    sources, origin = candidate_sources(run_dir, models, images)
    dev = resolve_device(device)
    predicted = predict_sources(models, sources, dev, batch_size, progress)
    candidates = [Candidate(source, scores, thumbnail(image))
                  for source, image, scores, _ in predicted]
    found = choose(candidates, k, score, class_name, min_distance, spread)
    by_stem = {source.stem: (image, prediction) for source, image, _, prediction in predicted}
    if overwrite:
        remove_outputs(out)
    write_outputs(out, models, found, by_stem, {
        **origin, "run": str(Path(run_dir).resolve()), "score": score, "class": class_name,
        "k": k, "min_distance": min_distance, "spread": spread,
        "stage": list(models.stage) if models.stage else None,
        "models": [str(m.path) for m in models.metas]})
    return found


def _check_options(models: ModelSet, k: int, score: str, class_name: str | None,
                   min_distance: float, spread: str, out: Path, overwrite: bool) -> None:
    if k < 1:
        raise ConfigError("--k must be at least 1")
    if score not in SCORES:
        raise ConfigError(f"--score must be one of {SCORES}, not {score!r}")
    if len(models.models) < 2 and score == "im":
        raise ConfigError("one model has no inconsistency mask: use --teachers 2 or more, "
                          "or --score entropy")
    names = models.info.classes
    if class_name is not None and (score != "im" or class_name not in names):
        raise ConfigError(f"--class ranks by one class's IM share (--score im); choose one "
                          f"of {names}")
    if not 0 <= min_distance <= 1:
        raise ConfigError("--diversity must lie in 0..1 (0: off)")
    if spread not in SPREADS:
        raise ConfigError(f"--spread must be one of {SPREADS}, not {spread!r}")
    if Path(out).is_file() or (Path(out).is_dir() and any(Path(out).iterdir())
                               and not overwrite):
        raise DataError(f"{out}: --out is not an empty folder; choose a new one or pass "
                        "--overwrite")


OUTPUT_FOLDERS = ("images", "masks", "uncertain", "labelme")
OUTPUT_FILES = ("ranking.csv", "contact_sheet.png", "coco.json", "suggest.yaml")


def remove_outputs(out: Path) -> None:
    """What an earlier suggestion wrote into ``out`` (and only that: a user's own files
    stay), so ``prepare add --images OUT/images`` finds no stale picks."""
    for name in (*OUTPUT_FOLDERS, *OUTPUT_FILES):
        path = Path(out) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.is_symlink() or path.exists():
            path.unlink()


def write_outputs(out: Path, models: ModelSet, found: Suggestion,
                  by_stem: dict[str, tuple[np.ndarray, ImagePrediction]], record: dict) -> None:
    """ranking.csv, the picks' images, masks, IMs and pre-annotations, the contact sheet
    and suggest.yaml."""
    info, task = models.info, models.task
    out = Path(out)
    items, sheet = [], []
    for candidate in found.picks:
        stem = candidate.source.stem
        image, prediction = by_stem[stem]
        mask = task.decode_mask(prediction.label)
        save_png(out / "images" / f"{stem}.png", image[..., 0] if image.shape[-1] == 1 else image)
        save_png(out / "masks" / f"{stem}.png", mask)
        save_png(out / "uncertain" / f"{stem}.png", prediction.im.astype(np.uint8) * 255)
        items.append(preannotation(f"{stem}.png", mask, prediction.im, info))
        sheet.append((stem, candidate.scores, image, mask, prediction.im))
    write_coco(out / "coco.json", items, info)
    (out / "labelme").mkdir(parents=True, exist_ok=True)
    write_labelme(out / "labelme", items, info)
    write_ranking(out / "ranking.csv", found, info.classes)
    contact_sheet(sheet, info).savefig(out / "contact_sheet.png", dpi=DPI)
    atomic_write_text(out / "suggest.yaml", yaml.safe_dump(record, sort_keys=False))


def write_ranking(path: Path, found: Suggestion, classes: list[str]) -> None:
    """Every candidate, best first: rank, image, pick number, near-copy of, scores."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "image", "pick", "near_copy_of", *SCORES, *class_columns(classes)])
    pick_number = {i: n for n, i in enumerate(found.picked, start=1)}
    for i, candidate in enumerate(found.ranked):
        near = found.near.get(i)
        row = score_row(candidate.scores)
        writer.writerow([i + 1, candidate.source.stem, pick_number.get(i, ""),
                         "" if near is None else found.ranked[near].source.stem,
                         *(row[c] for c in (*SCORES, *class_columns(classes)))])
    atomic_write_text(path, buffer.getvalue())


def contact_sheet(rows: list[tuple[str, ImageScores, np.ndarray, np.ndarray, np.ndarray]],
                  info: DatasetInfo) -> Figure:
    """One row per pick: the image, the ensemble's mask, the IM over the image."""
    fig = Figure(figsize=(7.5, 2.5 * len(rows)))
    axes = fig.subplots(len(rows), 3, squeeze=False,
                        gridspec_kw={"left": 0.02, "right": 0.98, "bottom": 0.02, "top": 0.96,
                                     "wspace": 0.05, "hspace": 0.25})
    for (stem, scores, image, mask, im), row in zip(rows, axes, strict=True):
        shown = image[..., 0] if image.shape[-1] == 1 else image
        panels = [(shown, f"{stem}"), (colorize(mask, info), "ensemble mask"),
                  (overlay(image, mask, info, im),
                   f"IM {scores.im:.3f} · entropy {scores.entropy:.3f}")]
        for ax, (picture, title) in zip(row, panels, strict=True):
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None,
                      interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    return fig
