"""Predict new images with the top models of a run's stage; their disagreement says which
images a person should label next.

Choices:

* The stage defaults to the run's best one: the (approach, generation) whose
  students have the highest mean *validation* IoU (the test split is never used
  to choose). Benchmarks count as generation 0.
* Images of any size are resized (bilinear) to dataset.yaml's ``image_size``,
  predicted in batches, and each model's *probabilities* are resized back
  (bilinear) to the original size before thresholding (argmax), so edges stay
  smooth at any scale.
* The written mask is the ensemble's mean probability thresholded (argmax);
  the inconsistency map marks pixels where the models' own labels differ
  (:func:`imseg.pseudo.inconsistency.agreement`); its share of the image is the
  image's uncertainty.

Per image ``<out>/masks/<stem>.png`` (binary 0/255, multiclass class ids,
multilabel one channel per label), ``<out>/overlays/<stem>.png`` (classes in
dataset.yaml colours, IM hatched grey) and ``<out>/inconsistency/<stem>.png``
(0/255), plus ``<out>/uncertainty.csv``, most uncertain first.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn
from tqdm import tqdm

from imseg.config import AmpMode
from imseg.data.imageio import list_images, open_image, resize_image
from imseg.data.layout import DatasetInfo, read_info
from imseg.errors import DataError
from imseg.evaluation.visualize import overlay
from imseg.experiment.results import ResultsTable, top_k
from imseg.pseudo.inconsistency import agreement
from imseg.runtime import resolve_device
from imseg.storage import atomic_write_text
from imseg.tasks import Task
from imseg.training.inference import predict_batches

DEFAULT_TEACHERS = 3


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


def run_info(run_dir: Path) -> DatasetInfo:
    """The run's dataset.yaml, found through run.yaml (input size, channels, classes, colours)."""
    meta_path = Path(run_dir) / "run.yaml"
    if not meta_path.is_file():
        raise DataError(f"{meta_path} not found: {run_dir} is not a run folder")
    data = (yaml.safe_load(meta_path.read_text()) or {}).get("data")
    if not data:
        raise DataError(f"{meta_path}: no data path recorded")
    return read_info(Path(data))


def read_image(path: Path, channels: int) -> np.ndarray:
    """An image file as ``H×W×channels`` uint8."""
    arr = np.asarray(open_image(path, "L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


@torch.no_grad()
def predict_images(models: list[nn.Module], task: Task, images: list[np.ndarray],
                   size: tuple[int, int], device: torch.device, amp: AmpMode | bool = True
                   ) -> list[ImagePrediction]:
    """Ensemble label and IM of each ``H×W×C`` image at its own size (one batch)."""
    batch = np.stack([np.moveaxis(resize_image(img, size), -1, 0) for img in images])
    _, probs = next(predict_batches(models, torch.from_numpy(batch), task, device,
                                    batch_size=len(images), amp=amp))
    out = []
    for b, img in enumerate(images):
        p = F.interpolate(probs[:, b], size=img.shape[:2], mode="bilinear", align_corners=False)
        votes = task.to_label(p)  # (T, L, H, W)
        im = agreement(task, votes[:, None]).mask[0, 0]
        label = task.to_label(p.mean(dim=0, keepdim=True))[0]
        out.append(ImagePrediction(label.cpu().numpy(), im.cpu().numpy()))
    return out


def predict_folder(run_dir: Path, images_dir: Path, out_dir: Path, approach: str | None = None,
                   generation: int | None = None, teachers: int = DEFAULT_TEACHERS,
                   batch_size: int = 8, device: str = "auto", progress: bool = True) -> dict:
    """Predict every image of ``images_dir``; write masks, overlays, IMs and uncertainty.csv.

    Returns ``{"stage": (approach, generation), "models": [...rows], "uncertainty": [...]}``.
    """
    from imseg.experiment.stages import load_model

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    results = run_dir / "results.csv"
    if not results.is_file():
        raise DataError(f"{results} not found: {run_dir} is not a run folder")
    rows = ResultsTable(results).rows
    info = run_info(run_dir)
    task = info.task_obj
    files = list_images(Path(images_dir))
    stage = best_stage(rows, approach, generation)
    chosen = stage_models(rows, *stage, max(1, teachers))
    dev = resolve_device(device)
    models = [load_model(run_dir / r["checkpoint"]).to(dev).eval() for r in chosen]
    for sub in ("masks", "overlays", "inconsistency"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    table = []
    items = list(files.items())
    with tqdm(total=len(items), desc="predict", unit="img", disable=not progress) as bar:
        for start in range(0, len(items), batch_size):
            part = items[start : start + batch_size]
            images = [read_image(path, info.channels) for _, path in part]
            for (stem, path), img, pred in zip(
                part, images, predict_images(models, task, images, info.image_size, dev),
                strict=True,
            ):
                mask = task.decode_mask(pred.label)
                Image.fromarray(mask).save(out_dir / "masks" / f"{stem}.png")
                Image.fromarray(overlay(img, mask, info, pred.im)).save(
                    out_dir / "overlays" / f"{stem}.png")
                Image.fromarray(pred.im.astype(np.uint8) * 255).save(
                    out_dir / "inconsistency" / f"{stem}.png")
                table.append({"file": path.name, "height": img.shape[0], "width": img.shape[1],
                              "im_fraction": pred.im_fraction})
            bar.update(len(part))
    table.sort(key=lambda r: (-r["im_fraction"], r["file"]))
    _write_uncertainty(out_dir / "uncertainty.csv", table)
    return {"stage": stage, "models": chosen, "uncertainty": table}


def _write_uncertainty(path: Path, table: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "height", "width", "im_fraction"])
    for r in table:
        writer.writerow([r["file"], r["height"], r["width"], f"{r['im_fraction']:.6f}"])
    atomic_write_text(path, buf.getvalue())
