"""Export trained models as ONNX files plus a JSON that says how to use them.

Each model becomes ``<out>/model<rank>.onnx`` (rank 1 = best validation score)
whose graph ends in the task's activation: input ``image`` float32
``(batch, channels, height, width)`` with values 0..255 (RGB or grey, as
trained), output ``probabilities`` ``(batch, out_channels, height, width)``.
Batch, height and width are dynamic; for the tiny U-Net height and width must be
multiples of 16 (its four 2x2 pools), smp models pad inside and take any size.
``<out>/metadata.json`` holds the task, classes,
colours, training image size, channels, void value, model spec, the rule that
turns probabilities into a mask (the one ``imseg predict`` uses), and each
model's source checkpoint and validation/test scores.

Exporter: torch's TorchScript-based ``torch.onnx.export(..., dynamo=False)``.
The newer torch.export-based exporter needs the extra ``onnxscript`` package
and took about 40 s per tiny U-Net here (the TorchScript one: under 1 s) for
the same opset and the same numbers. Every exported file is checked: ONNX
Runtime must reproduce PyTorch's probabilities on a sample batch.
"""

from __future__ import annotations

import inspect
import json
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from imseg import __version__
from imseg.errors import ConfigError, DataError
from imseg.models.checkpoint import CheckpointMeta, mask_void
from imseg.models.encoders import EncoderNet
from imseg.models.unet import UNET_DIVISOR
from imseg.predict import ModelSet, tiling_for
from imseg.storage import atomic_write, atomic_write_text
from imseg.tasks import Task

OPSET = 20
"""The highest opset the TorchScript exporter writes; also the torch.export-based one's default."""

METADATA_FILE = "metadata.json"
INPUT, OUTPUT = "image", "probabilities"
MAX_RUNTIME_DIFF = 1e-3
"""Largest difference in probability allowed between ONNX Runtime and PyTorch."""

TO_MASK = {
    "binary": "mask = 255 where probabilities[0] > 0.5, else 0",
    "multilabel": "mask channel k = 255 where probabilities[k] > 0.5, else 0 "
                  "(classes[k] is label k)",
    "multiclass": "class id = argmax over channels 1..C of probabilities, minus 1 "
                  "(classes[id] names it; channel 0 is the inconsistency-mask class, never chosen)",
}


class _Probabilities(nn.Module):
    """A segmentation net followed by its task's activation."""

    def __init__(self, model: nn.Module, task: Task) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.task.activate(self.model(image))


def require_onnx():
    """The ``onnx`` and ``onnxruntime`` modules, or a ConfigError naming the extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(f"ONNX export needs the onnx and onnxruntime packages ({exc.name} is "
                          "missing): pip install 'imseg[onnx]'") from None
    return onnx, onnxruntime


def export_onnx(models: ModelSet, out_dir: Path) -> dict:
    """Write each model as ONNX and ``metadata.json`` into ``out_dir``; return the metadata."""
    onnx, onnxruntime = require_onnx()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sample = _sample_batch(models)
    entries = []
    for rank, (model, meta) in enumerate(zip(models.models, models.metas, strict=True), 1):
        path = out_dir / f"model{rank}.onnx"
        net = _Probabilities(model.cpu().float(), models.task).eval()  # export restores it
        atomic_write(path, lambda tmp, net=net, meta=meta: _trace(net, sample, tmp, meta))
        onnx.checker.check_model(str(path))
        diff = _runtime_difference(onnxruntime, path, net, sample)
        entries.append(_model_entry(path.name, meta, diff))
    metadata = export_metadata(models, entries)
    atomic_write_text(out_dir / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
    written = {e["file"] for e in entries}
    for stale in out_dir.glob("model*.onnx"):  # an earlier, larger export's leftovers
        if stale.name not in written:
            stale.unlink()
    return metadata


def export_metadata(models: ModelSet, entries: list[dict]) -> dict:
    """What a user of the exported files needs besides the graphs."""
    info, task = models.info, models.task
    axes = ["batch", info.channels, "height", "width"]
    tiling = tiling_for(info)
    if tiling is None:
        size = "resize (bilinear) to image_size (height, width), as in training; "
        back = "resized back to the image's own size"
    else:
        size = ("the models were trained on tiles: scale the image by tiles.scale, cut it "
                "into image_size tiles overlapping by tiles.overlap (as `imseg predict`); ")
        back = ("the tiles' outputs averaged with tiles.weights, cropped and scaled back "
                "to the image's own size as tiles.placement says")
    return {
        "format": "imseg-onnx",
        "imseg_version": __version__,
        "opset": OPSET,
        "task": info.task,
        "classes": info.classes,
        "colors": [list(c) for c in info.colors],
        "image_size": list(info.image_size),
        "channels": info.channels,
        "rotate": info.rotate,
        "mask_void": mask_void(task),
        "input": {
            "name": INPUT, "dtype": "float32", "shape": axes, "range": [0, 255],
            "color": "RGB" if info.channels == 3 else f"{info.channels} channels",
            "size": size + _sizes_that_run(models),
        },
        "tiles": None if tiling is None else {
            **asdict(tiling),
            "placement": "round() is Python's: halves to even. Scale the image (Pillow's "
                         "bilinear, which averages when shrinking) to round(H * scale) x "
                         "round(W * scale); "
                         "mirror it out (symmetric) at its bottom and right to at least one "
                         "tile; per axis of length L and tile side t: n = 1 if L == t, else "
                         "ceil((L - t) / (t * (1 - overlap))) + 1 tiles starting at "
                         "round(i * (L - t) / (n - 1)), i = 0..n-1; after blending, keep the "
                         "round(H * scale) x round(W * scale) top-left part (the mirrored "
                         "rows and columns go) and scale it (bilinear, half-pixel centres) "
                         "to H x W",
            "weights": "per axis min(i + 1, n - i) / max(1, n * overlap / 2), "
                       "clipped to [0.05, 1]; a tile's weight is the product of its two "
                       "axes' (imseg.data.tiles.blend_weights)",
        },
        "output": {"name": OUTPUT, "dtype": "float32",
                   "shape": ["batch", task.out_channels, "height", "width"]},
        "to_mask": TO_MASK[task.kind],
        "ensemble": f"average the models' probabilities ({back}), then apply to_mask; "
                    "where the models' own masks differ is the inconsistency mask",
        "stage": (None if models.stage is None
                  else {"approach": models.stage[0], "generation": models.stage[1]}),
        "models": entries,
    }


def _sizes_that_run(models: ModelSet) -> str:
    if all(isinstance(m, EncoderNet) for m in models.models):
        return "any height and width run (the models pad inside)"
    return f"any height and width that are multiples of {UNET_DIVISOR} run"


def _model_entry(file: str, meta: CheckpointMeta, diff: float) -> dict:
    return {"file": file, "checkpoint": str(meta.path.resolve()), "model": meta.spec.to_dict(),
            "place": meta.place, "val": meta.val, "test": meta.test,
            "runtime_max_abs_diff": diff}


def _sample_batch(models: ModelSet) -> torch.Tensor:
    """Two random images at the training size: the tracing input and the runtime check."""
    h, w = models.info.image_size
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, models.info.channels, h, w), generator=gen).float()


def _trace(net: nn.Module, sample: torch.Tensor, path: Path, meta: CheckpointMeta) -> None:
    dynamic = {0: "batch", 2: "height", 3: "width"}
    choice = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters \
        else {}
    with warnings.catch_warnings():  # shape checks become constants; the exporter is legacy
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            torch.onnx.export(net, (sample,), str(path), opset_version=OPSET,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: dynamic, OUTPUT: dynamic}, **choice)
        except (torch.onnx.errors.OnnxExporterError, RuntimeError) as exc:
            spec = meta.spec
            what = f"{spec.arch} with encoder {spec.encoder}" if spec.kind == "smp" else "model"
            raise DataError(f"{meta.path}: the ONNX exporter cannot export this {what} "
                            f"({str(exc).splitlines()[0]})") from None


@torch.no_grad()
def _runtime_difference(onnxruntime, path: Path, net: nn.Module, sample: torch.Tensor) -> float:
    """Largest |ONNX Runtime - PyTorch| probability on ``sample``; DataError beyond the limit."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run([OUTPUT], {INPUT: sample.numpy()})[0])
    diff = float((got - net(sample)).abs().max())
    if not diff <= MAX_RUNTIME_DIFF:
        raise DataError(f"{path}: ONNX Runtime's output differs from PyTorch's by {diff:.3g}")
    return diff
