"""Predict new images with the top models of a run's stage (or given checkpoints); their
disagreement says which images a person should label next.

Choices:

* The stage defaults to the run's best one: the (approach, generation) whose
  students have the highest mean *validation* IoU (the test split is never used
  to choose). Benchmarks count as generation 0.
* What the models need to know about the data (task, classes, colours, input
  size, channels) comes from their checkpoints, so a run folder works after
  its data folder has moved; checkpoints of older versions, which lack it, fall
  back to the run's ``dataset.yaml`` copy or the data folder run.yaml names.
* Images of any size are resized (bilinear) to the training ``image_size``,
  predicted in batches, and each model's *probabilities* are resized back
  (bilinear) to the original size before thresholding (argmax), so edges stay
  smooth at any scale. Models trained on tiles (dataset.yaml ``tile_scale``) see
  new images as they saw their training data instead: scaled alike and cut into
  overlapping ``image_size`` tiles, whose probabilities are blended, weighted down
  towards each tile's border where the net saw less context
  (:mod:`imseg.data.tiles`).
* The written mask is the ensemble's mean probability thresholded (argmax);
  the inconsistency map marks pixels where the models' own labels differ
  (:func:`imseg.pseudo.inconsistency.agreement`); its share of the image is the
  image's uncertainty. A single model has no such map: its maps and
  uncertainty.csv are left out rather than written empty (which would claim
  certainty).

Per image ``<out>/masks/<stem>.png`` (binary 0/255, multiclass class ids,
multilabel one channel per label), ``<out>/overlays/<stem>.png`` (classes in
dataset.yaml colours, IM hatched grey) and, with two or more models,
``<out>/inconsistency/<stem>.png`` (0/255), plus ``<out>/uncertainty.csv``,
most uncertain first.

**Resume.** Every file is written atomically, and ``<out>/predict.yaml`` names the
models (their checkpoints' SHA-256), the images folder and each image's size and time.
Predicting the same folder into it again with the same models skips every image whose
files are all there and that has not changed (its uncertainty is read back from its
inconsistency map), so a stopped prediction of a large folder continues where it
stopped; other models or another images folder are refused rather than mixed in.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn
from tqdm import tqdm

from imseg.config import AmpMode, AutoMode
from imseg.data.imageio import list_images, read_image, resize_image, upright_size
from imseg.data.layout import INFO_FILE, DatasetInfo, read_info
from imseg.data.tiles import (
    TileCanvas,
    Tiling,
    blend_weights,
    count_tiles,
    pad_to,
    scale_image,
    tile_origins,
)
from imseg.errors import DataError, Problems
from imseg.evaluation.visualize import overlay
from imseg.experiment.settings import mixed_settings_note
from imseg.experiment.stages import read_run_checkpoint
from imseg.logs import bar_disable, log
from imseg.models.checkpoint import CheckpointMeta, read_checkpoint
from imseg.pseudo.inconsistency import agreement
from imseg.results import ResultsTable, top_k
from imseg.runtime import resolve_device
from imseg.storage import atomic_write_text, file_digest, save_png
from imseg.tasks import Task
from imseg.training.inference import for_inference, predict_batches

DEFAULT_TEACHERS = 3
MANIFEST = "predict.yaml"
"""The models whose predictions an output folder holds (for a safe resume)."""


@dataclass
class ImagePrediction:
    """One image's ensemble label (in-memory encoding, original size) and its IM."""

    label: np.ndarray
    """uint8 ``(label_channels, H, W)``."""
    im: np.ndarray
    """bool ``(H, W)``: True where the models disagree."""

    @property
    def im_fraction(self) -> float:
        return float(self.im.mean())


def model_rows(rows: list[dict]) -> list[dict]:
    """Rows of trained segmentation models that have a validation score and a checkpoint."""
    return [r for r in rows if r.get("val_iou") is not None and r.get("checkpoint")
            and (r["stage"] == "ssl" or r["stage"] == r["approach"])]


def best_stage(rows: list[dict], approach: str | None = None,
               generation: int | None = None) -> tuple[str, int]:
    """The (approach, generation) with the highest mean val_iou, among those matching the
    given approach and/or generation."""
    groups: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in model_rows(rows):
        key = (r["approach"], int(r["generation"] or 0))
        if (approach is None or key[0] == approach) and (generation is None or key[1] == generation):
            groups[key].append(float(r["val_iou"]))
    if not groups:
        have = sorted({(r["approach"], int(r["generation"] or 0)) for r in model_rows(rows)})
        listed = ", ".join(f"{a} g{g}" for a, g in have) or "none"
        want = f"approach={approach or 'any'} generation={'any' if generation is None else generation}"
        raise DataError(f"no trained models for {want}; the run has: {listed}")
    return max(sorted(groups), key=lambda k: float(np.mean(groups[k])))


def stage_models(rows: list[dict], approach: str, generation: int, n: int) -> list[dict]:
    """The top-``n`` models of a stage by validation score (pooled over runs and teacher
    counts of that approach and generation)."""
    members = [r for r in model_rows(rows)
               if r["approach"] == approach and int(r["generation"] or 0) == generation]
    return top_k(members, n)


@dataclass
class ModelSet:
    """The models one prediction or export uses, with the data metadata they share."""

    models: list[nn.Module]
    metas: list[CheckpointMeta]
    info: DatasetInfo
    stage: tuple[str, int] | None = None
    """The run's (approach, generation) they come from; None for given checkpoints."""

    @property
    def task(self) -> Task:
        return self.info.task_obj


def run_models(run_dir: Path, approach: str | None = None, generation: int | None = None,
               teachers: int = DEFAULT_TEACHERS) -> ModelSet:
    """The top-``teachers`` models of a run's stage (the best by validation unless named)."""
    run_dir = Path(run_dir)
    results = run_dir / "results.csv"
    if not results.is_file():
        raise DataError(f"{results} not found: {run_dir} is not a run folder")
    rows = ResultsTable(results).rows
    stage = best_stage(rows, approach, generation)
    chosen = stage_models(rows, *stage, max(1, teachers))
    mixed = mixed_settings_note(run_dir, chosen)
    if mixed:
        log.warning(f"{run_dir} {stage[0]} g{stage[1]}: {mixed}")
    loaded = [read_run_checkpoint(run_dir / r["checkpoint"], r) for r in chosen]
    metas = [_scores_from_row(meta, row) for (_, meta), row in zip(loaded, chosen, strict=True)]
    info = shared_info(metas, lambda: run_info(run_dir))
    return ModelSet([model for model, _ in loaded], metas, info, stage)


def checkpoint_models(paths: list[Path]) -> ModelSet:
    """The models of the given checkpoint files, which must agree on their data; a folder
    stands for the ``.pt`` files in it (``imseg export --format checkpoint``'s)."""
    if not paths:
        raise DataError("no checkpoints given")
    loaded = [read_checkpoint(p) for p in checkpoint_files(paths)]
    metas = [meta for _, meta in loaded]
    info = shared_info(metas)
    return ModelSet([model for model, _ in loaded], metas, info)


def checkpoint_files(paths: list[Path]) -> list[Path]:
    """``paths`` with each folder replaced by its ``.pt`` files (by name); a folder without
    any is a DataError naming it."""
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(path.glob("*.pt"), key=_natural)  # model2.pt before model10.pt
        if not found:
            raise DataError(f"{path}: a folder without checkpoints (.pt files); name them, or "
                            "the folder imseg export --format checkpoint wrote")
        files.extend(found)
    return files


def _natural(path: Path) -> list:
    """A file name's sort key with its numbers compared as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def shared_info(metas: list[CheckpointMeta],
                fallback: Callable[[], DatasetInfo] | None = None) -> DatasetInfo:
    """The data metadata the checkpoints share; ``fallback()`` when none records it
    (versions before the checkpoint format had it). Raises DataError when they disagree
    or a model does not fit the data."""
    recorded = [(m.path, m.dataset) for m in metas if m.dataset is not None]
    if recorded:
        first, info = recorded[0]
    elif fallback is not None:
        first, info = None, fallback()
    else:
        raise DataError(f"{metas[0].path}: written by an older imseg without the data set's "
                        "metadata; use --run with its run folder instead")
    for m in metas:
        if m.dataset is not None and _interface(m.dataset) != _interface(info):
            raise DataError(f"{m.path}: trained on other data than {first} "
                            f"({_describe(m.dataset)} vs {_describe(info)})")
        kind = None if m.task is None else (m.task.kind, m.task.n_classes)
        if (kind not in (None, (info.task, len(info.classes)))  # headline may differ: scoring only
                or m.spec.in_channels != info.channels
                or m.spec.out_channels != info.task_obj.out_channels):
            raise DataError(f"{m.path}: the model ({m.spec.in_channels} in, "
                            f"{m.spec.out_channels} out channels) does not fit {_describe(info)}")
    return info


def run_info(run_dir: Path) -> DatasetInfo:
    """The run's data metadata when its checkpoints lack it: the run folder's own
    dataset.yaml copy, else the data folder's, found through run.yaml."""
    if (Path(run_dir) / INFO_FILE).is_file():
        return read_info(Path(run_dir))
    meta_path = Path(run_dir) / "run.yaml"
    if not meta_path.is_file():
        raise DataError(f"{meta_path} not found: {run_dir} is not a run folder")
    data = (yaml.safe_load(meta_path.read_text()) or {}).get("data")
    if not data:
        raise DataError(f"{meta_path}: no data path recorded")
    if not (Path(data) / INFO_FILE).is_file():
        raise DataError(f"{run_dir}: its checkpoints predate the data set's metadata and "
                        f"{Path(data) / INFO_FILE} is gone; put the data folder back or copy "
                        f"its {INFO_FILE} into {run_dir}")
    return read_info(Path(data))


def _interface(info: DatasetInfo) -> tuple:
    """What a model's input and output depend on."""
    return (info.task, tuple(info.classes), tuple(info.image_size), info.channels,
            info.wide_images or "stretch", info.tile_scale)


def _describe(info: DatasetInfo) -> str:
    h, w = info.image_size
    tiles = f", tiles at scale {info.tile_scale:g}" if info.tile_scale else ", resized images"
    wide = f", 16-bit read by {info.wide_images}" if info.wide_images else ""
    return f"{info.task} {info.classes} {w}x{h}x{info.channels}{tiles}{wide}"


def _scores_from_row(meta: CheckpointMeta, row: dict) -> CheckpointMeta:
    """Scores from the results row, for the oldest checkpoints, which did not record them."""
    if meta.val:
        return meta

    def scores(split: str) -> dict:
        return {m: row[f"{split}_{m}"] for m in ("iou", "dice")
                if row.get(f"{split}_{m}") is not None}

    return replace(meta, val=scores("val"), test=meta.test or scores("test"))


def tiling_for(info: DatasetInfo, setting: AutoMode = "auto") -> Tiling | None:
    """How new images meet models trained on ``info``'s data: cut into tiles as the data
    set was (``auto``), always (``always``: at the data set's scale, else their own
    pixels) or never (resized whole to ``image_size``)."""
    if setting == "never" or (setting == "auto" and not info.tile_scale):
        return None
    return Tiling(info.tile_scale or 1.0)


@torch.no_grad()
def predict_images(models: list[nn.Module], task: Task, images: list[np.ndarray],
                   size: tuple[int, int], device: torch.device, amp: AmpMode | bool = True,
                   tiling: Tiling | None = None, batch_size: int = 8
                   ) -> list[ImagePrediction]:
    """Ensemble label and IM of each ``H×W×C`` image at its own size: the images resized
    to ``size`` in one batch, or each cut into ``size`` tiles (``tiling``) predicted
    ``batch_size`` at a time."""
    return [prediction_of(task, p) for p in ensemble_probabilities(
        models, task, images, size, device, amp, tiling, batch_size)]


def ensemble_probabilities(models: list[nn.Module], task: Task, images: list[np.ndarray],
                           size: tuple[int, int], device: torch.device,
                           amp: AmpMode | bool = True, tiling: Tiling | None = None,
                           batch_size: int = 8) -> Iterator[torch.Tensor]:
    """Each image's ``(models, channels, H, W)`` probabilities at its own size, as
    :func:`predict_images` predicts them (for scores beyond the label and the IM)."""
    if tiling is None:
        return _resized_probabilities(models, task, images, size, device, amp)
    return (_tiled_probabilities(models, task, img, size, tiling, device, amp, batch_size)
            for img in images)


def prediction_of(task: Task, probabilities: torch.Tensor) -> ImagePrediction:
    """The ensemble label (mean probability) and the IM of one image's
    ``(models, channels, H, W)`` probabilities."""
    votes = task.to_label(probabilities)  # (T, L, H, W)
    im = agreement(task, votes[:, None]).mask[0, 0]
    label = task.to_label(probabilities.mean(dim=0, keepdim=True))[0]
    return ImagePrediction(label.cpu().numpy(), im.cpu().numpy())


def _resized_probabilities(models: list[nn.Module], task: Task, images: list[np.ndarray],
                           size: tuple[int, int], device: torch.device, amp: AmpMode | bool
                           ) -> Iterator[torch.Tensor]:
    """Each image's ``(models, channels, H, W)`` probabilities: predicted resized to
    ``size``, resized back (bilinear) to the image's own size."""
    batch = np.stack([np.moveaxis(resize_image(img, size), -1, 0) for img in images])
    _, probs = next(predict_batches(models, torch.from_numpy(batch), task, device,
                                    batch_size=len(images), amp=amp))
    for b, img in enumerate(images):
        yield F.interpolate(probs[:, b], size=img.shape[:2], mode="bilinear", align_corners=False)


def _tiled_probabilities(models: list[nn.Module], task: Task, image: np.ndarray,
                         size: tuple[int, int], tiling: Tiling, device: torch.device,
                         amp: AmpMode | bool, batch_size: int) -> torch.Tensor:
    """One image's ``(models, channels, H, W)`` probabilities from its overlapping tiles
    (scaled, mirrored out to one tile if smaller), blended and brought back to its size."""
    scaled = scale_image(image, tiling.scale)
    padded = pad_to(scaled, size)
    origins = tile_origins(padded.shape[:2], size, tiling.overlap)
    h, w = size
    tiles = torch.from_numpy(np.stack([np.moveaxis(padded[y : y + h, x : x + w], -1, 0)
                                       for y, x in origins]))
    canvas = TileCanvas(len(models), task.out_channels, padded.shape[:2],
                        blend_weights(size, tiling.overlap).to(device))
    for sl, probs in predict_batches(models, tiles, task, device, batch_size, amp):
        canvas.add(origins[sl], probs)
    p = canvas.result()[..., : scaled.shape[0], : scaled.shape[1]]
    if p.shape[-2:] != image.shape[:2]:
        p = F.interpolate(p, size=image.shape[:2], mode="bilinear", align_corners=False)
    return p


def _forward_count(files: list[Path], size: tuple[int, int], tiling: Tiling | None) -> int:
    """How many ``size`` inputs a pass over ``files`` feeds each model (tiles read from
    the files' headers)."""
    if tiling is None:
        return len(files)
    total = 0
    for path in files:
        try:
            total += count_tiles(upright_size(path), size, tiling.scale, tiling.overlap)
        except DataError:
            total += 1  # unreadable: reported when it is read
    return total


def predict_folder(model_set: ModelSet, images_dir: Path, out_dir: Path, batch_size: int = 8,
                   device: str = "auto", progress: bool = True,
                   compile_inference: AutoMode = "auto",
                   tiles: AutoMode = "auto") -> list[dict] | None:
    """Predict every image of ``images_dir``; write masks and overlays and, with two or
    more models, IMs and uncertainty.csv. ``compile_inference``: as the config key of
    that name (a large folder on a CPU runs its models compiled); ``tiles``: as
    :func:`tiling_for` (by default as the training data was made).

    Returns the uncertainty table (most uncertain first), or None for a single model.
    Unreadable images are skipped; after every other image is written, one DataError
    names them.
    """
    out_dir = Path(out_dir)
    info, task = model_set.info, model_set.task
    files = list_images(Path(images_dir))
    with_im = len(model_set.models) > 1
    subs = ["masks", "overlays"] + (["inconsistency"] if with_im else [])
    tiling = tiling_for(info, tiles)
    table = _resume(out_dir, model_set, Path(images_dir), files, subs, tiling)
    done = {row["stem"] for row in table}
    if done:
        log.info(f"resuming {out_dir}: {len(done)} of {len(files)} images predicted already")
    for sub in subs:
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    items = [(stem, path) for stem, path in files.items() if stem not in done]
    dev = resolve_device(device)
    models = for_inference([m.to(dev).eval() for m in model_set.models],
                           _forward_count([path for _, path in items], info.image_size, tiling),
                           (info.channels, *info.image_size), dev, compile_inference)
    unreadable = Problems()  # one bad file must not cost the rest of a large folder
    with tqdm(total=len(items), desc="predict", unit="img", disable=bar_disable(progress)) as bar:
        for start in range(0, len(items), batch_size):
            read = [(stem, path, unreadable.attempt(read_image, path, info.channels,
                                                    info.wide_images or "stretch"))
                    for stem, path in items[start : start + batch_size]]
            part = [(stem, path) for stem, path, img in read if img is not None]
            images = [img for _, _, img in read if img is not None]
            bar.update(len(read) - len(part))
            if not part:
                continue
            for (stem, path), img, pred in zip(
                part, images, predict_images(models, task, images, info.image_size, dev,
                                             tiling=tiling, batch_size=batch_size),
                strict=True,
            ):
                mask = task.decode_mask(pred.label)
                save_png(out_dir / "masks" / f"{stem}.png", mask)
                save_png(out_dir / "overlays" / f"{stem}.png",
                         overlay(img, mask, info, pred.im if with_im else None))
                if with_im:  # last: its presence says the image is done
                    save_png(out_dir / "inconsistency" / f"{stem}.png",
                             pred.im.astype(np.uint8) * 255)
                table.append({"stem": stem, "file": path.name, "height": img.shape[0],
                              "width": img.shape[1], "im_fraction": pred.im_fraction})
            bar.update(len(part))
    if with_im:
        table.sort(key=lambda r: (-r["im_fraction"], r["file"]))
        _write_uncertainty(out_dir / "uncertainty.csv", table)
    unreadable.raise_any(f"{len(unreadable.messages)} of {len(files)} images could not be "
                         f"read; the other {len(files) - len(unreadable.messages)} were "
                         f"predicted into {out_dir}:")
    return table if with_im else None


def _resume(out_dir: Path, model_set: ModelSet, images_dir: Path, files: dict[str, Path],
            subs: list[str], tiling: Tiling | None) -> list[dict]:
    """The uncertainty rows of the images ``out_dir`` holds every file of, predicted by
    these very models from this very folder the same way (resized or tiled), each image
    unchanged (size and time) since; records the models, the folder, the way and the
    images first (module doc, "Resume")."""
    models = [{"checkpoint": str(meta.path), "sha256": file_digest(meta.path)}
              for meta in model_set.metas]
    stamps = {}
    for path in files.values():
        stat = path.stat()
        stamps[path.name] = [stat.st_size, stat.st_mtime_ns]
    way = "resized" if tiling is None else asdict(tiling)
    record = {"images": str(Path(images_dir).resolve()), "models": models, "input": way,
              "files": stamps}
    before: dict = {}
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        before = yaml.safe_load(manifest.read_text()) or {}
        hashes = sorted(str(m.get("sha256")) for m in before.get("models", []))
        if hashes != sorted(m["sha256"] for m in models):
            listed = ", ".join(str(m.get("checkpoint")) for m in before.get("models", []))
            raise DataError(f"{out_dir} holds predictions of other models ({listed}); "
                            "choose another --out, or delete it to predict anew")
        if before.get("images") != record["images"]:
            raise DataError(f"{out_dir} holds predictions of the images in "
                            f"{before.get('images')}; choose another --out for {images_dir}")
        if before.get("input", "resized") != way:
            raise DataError(f"{out_dir} holds predictions of images "
                            f"{_way_in_words(before.get('input', 'resized'))}, not "
                            f"{_way_in_words(way)}; choose another --out")
    elif out_dir.is_dir() and any((out_dir / sub).is_dir() for sub in subs):
        raise DataError(f"{out_dir} holds predictions without {MANIFEST} (of an older imseg "
                        "or other models); choose another --out, or delete it")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(manifest, yaml.safe_dump(record, sort_keys=False))
    rows = []
    for stem, path in files.items():
        written = [out_dir / sub / f"{stem}.png" for sub in subs]
        unchanged = (before.get("files") or {}).get(path.name) == stamps[path.name]
        if not (unchanged and all(f.is_file() for f in written)):
            continue  # not predicted yet, stopped midway, or the image changed since
        row = {"stem": stem, "file": path.name, "im_fraction": 0.0}
        last = np.asarray(Image.open(written[-1]))
        row["height"], row["width"] = last.shape[:2]
        if "inconsistency" in subs:
            row["im_fraction"] = float((last > 0).mean())
        rows.append(row)
    return rows


def _way_in_words(way) -> str:
    return "resized whole" if way == "resized" else f"cut into tiles ({way})"


def _write_uncertainty(path: Path, table: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "height", "width", "im_fraction"])
    for r in table:
        writer.writerow([r["file"], r["height"], r["width"], f"{r['im_fraction']:.6f}"])
    atomic_write_text(path, buf.getvalue())
