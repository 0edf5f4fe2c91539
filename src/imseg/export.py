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
model's source checkpoint and validation/test scores. The checkpoint form
(:func:`export_checkpoints`) copies the checkpoints as ``<out>/model<rank>.pt``
instead (``imseg predict --checkpoint`` takes them). Either form gets a model
card, ``<out>/README.md`` (:func:`model_card`).

Exporter: torch's TorchScript-based ``torch.onnx.export(..., dynamo=False)``.
The newer torch.export-based exporter needs the extra ``onnxscript`` package
and took about 40 s per tiny U-Net here (the TorchScript one: under 1 s) for
the same opset and the same numbers. Every exported file is checked: ONNX
Runtime must reproduce PyTorch's probabilities on a sample batch.
"""

from __future__ import annotations

import inspect
import json
import platform
import re
import shlex
import statistics
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from imseg import __version__
from imseg.config import Config
from imseg.errors import ConfigError, DataError, ImsegError
from imseg.evaluation.visualize import class_palette
from imseg.experiment.recipes import recipes_of
from imseg.logs import place_name
from imseg.models.checkpoint import CheckpointMeta, mask_void
from imseg.models.encoders import EncoderNet
from imseg.models.unet import UNET_DIVISOR
from imseg.predict import ModelSet, tiling_for
from imseg.results import ResultsTable
from imseg.storage import atomic_write, atomic_write_bytes, atomic_write_text
from imseg.tasks import Task

OPSET = 20
"""The highest opset the TorchScript exporter writes; also the torch.export-based one's default."""

METADATA_FILE = "metadata.json"
CARD_FILE = "README.md"
FORMATS = ("onnx", "checkpoint")
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
    return _write_metadata(models, out_dir, entries, "onnx")


def export_checkpoints(models: ModelSet, out_dir: Path) -> dict:
    """Copy each model's checkpoint as ``out_dir/model<rank>.pt`` (weights, net, task and
    data metadata: ``imseg predict --checkpoint`` needs nothing else) plus
    ``metadata.json``; return the metadata."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for rank, meta in enumerate(models.metas, 1):
        path = out_dir / f"model{rank}.pt"
        atomic_write_bytes(path, meta.path.read_bytes())
        entries.append(_model_entry(path.name, meta, None))
    return _write_metadata(models, out_dir, entries, "checkpoint")


def _write_metadata(models: ModelSet, out_dir: Path, entries: list[dict], form: str) -> dict:
    """``metadata.json`` beside the written models; an earlier, larger export's leftover
    model files of that form go."""
    metadata = export_metadata(models, entries)
    metadata["format"] = f"imseg-{form}"
    atomic_write_text(out_dir / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
    written = {e["file"] for e in entries}
    sources = {Path(m.path).resolve() for m in models.metas}
    for stale in out_dir.glob(f"model*{_SUFFIX[form]}"):
        ours = re.fullmatch(rf"model\d+{re.escape(_SUFFIX[form])}", stale.name)
        if ours and stale.name not in written and stale.resolve() not in sources:
            stale.unlink()  # never a file of the user's own name, never a model exported
    return metadata


_SUFFIX = {"onnx": ".onnx", "checkpoint": ".pt"}


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


def _model_entry(file: str, meta: CheckpointMeta, diff: float | None) -> dict:
    entry = {"file": file, "checkpoint": str(meta.path.resolve()), "model": meta.spec.to_dict(),
             "place": meta.place, "val": meta.val, "test": meta.test}
    return entry if diff is None else {**entry, "runtime_max_abs_diff": diff}


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


# ---------------------------------------------------------------------------- model card
@dataclass
class CardSource:
    """Where the exported models came from, for their card."""

    command: str
    """The ``imseg export`` command line that wrote the folder."""
    run_dir: Path | None = None
    """The run folder (``--run``); None for given checkpoints."""


def write_model_card(models: ModelSet, out_dir: Path, metadata: dict, source: CardSource) -> Path:
    """``out_dir/README.md``: what the exported models do, how well, from what, and how
    to run them (smp calls it a model card)."""
    path = Path(out_dir) / CARD_FILE
    atomic_write_text(path, model_card(models, metadata, source))
    return path


def model_card(models: ModelSet, metadata: dict, source: CardSource) -> str:
    """The card's Markdown text."""
    rows = _run_rows(source.run_dir)
    config = _checkpoint_config(models.metas[0])
    sections = [_card_title(models, metadata), _card_task(models), _card_input(metadata),
                _card_data(models), _card_approach(models, rows, config),
                _card_scores(models, metadata, rows), _card_settings(config),
                _card_versions(metadata), _card_reproduce(source),
                _card_usage(metadata)]
    return "\n\n".join(s for s in sections if s) + "\n"


def _run_rows(run_dir: Path | None) -> list[dict]:
    path = None if run_dir is None else Path(run_dir) / "results.csv"
    return ResultsTable(path).rows if path is not None and path.is_file() else []


def _checkpoint_config(meta: CheckpointMeta) -> dict:
    """The config a checkpoint was trained under (its chain's: recipe settings included)."""
    ckpt = torch.load(meta.path, map_location="cpu", weights_only=True)
    return (ckpt.get("config") or {}) if isinstance(ckpt, dict) else {}


def _stage_label(models: ModelSet) -> str:
    if models.stage is None:
        return "given checkpoints"
    approach, generation = models.stage
    return f"{approach}, generation {generation}"


def _card_title(models: ModelSet, metadata: dict) -> str:
    n = len(metadata["models"])
    form = "ONNX" if metadata["format"] == "imseg-onnx" else "imseg checkpoint"
    return (f"# {models.info.task} segmentation: {_stage_label(models)}\n\n"
            f"{n} model{'s' if n > 1 else ''} ({form}) exported by imseg "
            f"{metadata['imseg_version']}; `metadata.json` holds the same facts for programs.")


def _card_task(models: ModelSet) -> str:
    info = models.info
    legend = class_palette(info)
    lines = ["## Task", "", f"{info.task} segmentation; classes and their colours in "
             "`imseg predict`'s overlays:", "", "| class | colour (RGB) |", "| --- | --- |"]
    lines += [f"| {name} | {tuple(color)} |"
              for name, color in zip(legend.names, legend.colors, strict=True)]
    if info.headline_classes:
        lines += ["", f"Scores (IoU) average the headline classes: {', '.join(info.headline_classes)}."]
    return "\n".join(lines)


def _card_input(metadata: dict) -> str:
    inp, out = metadata["input"], metadata["output"]
    h, w = metadata["image_size"]
    lines = ["## Input and output", "",
             f"- input `{inp['name']}`: float32 {' × '.join(map(str, inp['shape']))}, values "
             f"0..255, {inp['color']}; trained at {h} × {w} pixels",
             f"- scaling: {inp['size']}",
             f"- output `{out['name']}`: float32 {' × '.join(map(str, out['shape']))}",
             f"- to a mask: {metadata['to_mask']}",
             f"- several models: {metadata['ensemble']}"]
    tiles = metadata["tiles"]
    if tiles:
        lines.append(f"- tiles: scale {tiles['scale']:g}, overlap {tiles['overlap']:g} "
                     "(`metadata.json` → `tiles` says exactly how)")
    else:
        lines.append("- tiles: none (whole images, resized)")
    return "\n".join(lines)


def _card_data(models: ModelSet) -> str:
    info = models.info
    counts = info.counts
    lines = ["## Data set", "", f"Source: {info.source or 'not recorded'}."]
    if counts:
        lines += ["", "| split | images |", "| --- | --- |"]
        lines += [f"| {split} | {n} |" for split, n in counts.items()]
        labeled, unlabeled = counts.get("train_labeled", 0), counts.get("train_unlabeled", 0)
        if labeled + unlabeled:
            lines += ["", f"Labeled fraction of the training images: "
                          f"{labeled / (labeled + unlabeled):.1%} ({labeled} of "
                          f"{labeled + unlabeled})."]
    return "\n".join(lines)


def _card_approach(models: ModelSet, rows: list[dict], config: dict) -> str:
    lines = ["## Approach", ""]
    if models.stage is None:
        return "\n".join(lines + ["Models given as checkpoint files: " + ", ".join(
            _place_text(m.place) or str(m.path.name) for m in models.metas) + "."])
    approach, generation = models.stage
    lines.append(f"Approach `{approach}`, generation {generation} "
                 f"({'a benchmark stage' if generation == 0 else 'students of generation ' + str(generation)}).")
    teachers = _teachers(models, rows, config)
    if teachers:
        lines += ["", "Teachers (the models whose pseudo labels they learned from):", ""]
        lines += [f"- {_place_text(r)}: val IoU {_num(r.get('val_iou'))}, test IoU "
                  f"{_num(r.get('test_iou'))}" for r in teachers]
    return "\n".join(lines)


def _teachers(models: ModelSet, rows: list[dict], config: dict) -> list[dict]:
    """The teachers of the exported models' chains, chosen by the recipe's rule from the
    stage before (empty for benchmark stages or without the run's rows)."""
    if not rows or models.stage is None or models.stage[1] == 0:
        return []
    try:
        recipe = recipes_of(Config.model_validate(config))[models.stage[0]]
    except (ImsegError, KeyError, ValueError):
        return []
    chains = {(m.place.get("run"), m.place.get("n_teachers")) for m in models.metas}
    out = []
    for run, n in sorted(chains, key=str):
        before = [r for r in rows if r["run"] == run and _teacher_stage(r, recipe, models, n)]
        out += recipe.teachers.choose(before, n) if before else []
    return out


def _teacher_stage(row: dict, recipe, models: ModelSet, n: int | None) -> bool:
    approach, generation = models.stage  # type: ignore[misc]
    if generation == 1:
        return row["stage"] != "ssl" and row["approach"] == recipe.start_stage
    return (row["approach"] == approach and row["generation"] == generation - 1
            and row.get("n_teachers") == n)


def _card_scores(models: ModelSet, metadata: dict, rows: list[dict]) -> str:
    lines = ["## Scores", "", "| file | model | val IoU | test IoU | test Dice |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {e['file']} | {_place_text(e['place']) or '-'} | {_num(e['val'].get('iou'))} | "
              f"{_num(e['test'].get('iou'))} | {_num(e['test'].get('dice'))} |"
              for e in metadata["models"]]
    spread = _stage_spread(models, rows)
    if spread:
        lines += ["", spread]
    return "\n".join(lines)


def _stage_spread(models: ModelSet, rows: list[dict]) -> str:
    """Test IoU over every model of the stage (all candidates, runs and teacher counts)."""
    if models.stage is None:
        return ""
    approach, generation = models.stage
    test = [float(r["test_iou"]) for r in rows if r["approach"] == approach
            and int(r["generation"] or 0) == generation and r.get("test_iou") is not None]
    if not test:
        return ""
    std = statistics.stdev(test) if len(test) > 1 else 0.0
    return (f"Over all {len(test)} models of the stage: test IoU {statistics.fmean(test):.4f} "
            f"± {std:.4f} (standard deviation; min {min(test):.4f}, max {max(test):.4f}).")


def _card_settings(config: dict) -> str:
    if not config:
        return ""
    return ("## Settings\n\nThe config the first model trained under (its recipe's settings "
            "included):\n\n```yaml\n" + yaml.safe_dump(config, sort_keys=False).rstrip()
            + "\n```")


def _card_versions(metadata: dict) -> str:
    return ("## Versions\n\n"
            f"imseg {metadata['imseg_version']}, torch {torch.__version__}, "
            f"Python {platform.python_version()} (at export).")


def _card_reproduce(source: CardSource) -> str:
    lines = ["## Reproduce", ""]
    run_info = None if source.run_dir is None else Path(source.run_dir) / "run.yaml"
    if run_info is not None and run_info.is_file():
        recorded = yaml.safe_load(run_info.read_text()) or {}
        lines += [f"Trained by (data in `{recorded.get('data', '?')}`):", "", "```sh",
                  str(recorded.get("command") or "(no command recorded)"), "```", ""]
    lines += ["Exported by:", "", "```sh", source.command, "```"]
    return "\n".join(lines)


ONNX_USAGE = '''## Run it with ONNX Runtime

```python
import json
import numpy as np
import onnxruntime as ort
from PIL import Image

meta = json.load(open("metadata.json"))
h, w = meta["image_size"]
image = Image.open("image.png").convert("RGB" if meta["channels"] == 3 else "L")
x = np.asarray(image.resize((w, h), Image.BILINEAR), np.float32)
x = x.reshape(h, w, -1).transpose(2, 0, 1)[None]          # 1 x C x H x W, 0..255
probs = np.mean([ort.InferenceSession(m["file"]).run(None, {"image": x})[0]
                 for m in meta["models"]], axis=0)           # the ensemble
print(meta["to_mask"])                                      # then apply this rule
```

Models trained on tiles need the tiling `metadata.json` describes; `imseg predict`
does all of it.'''

CHECKPOINT_USAGE = '''## Run it

```sh
imseg predict --checkpoint THIS_FOLDER --images IMAGES --out PREDICTIONS
# or some of its models: {checkpoints}
```

(masks, overlays and, with two or more models, inconsistency maps; the checkpoints
hold the net, its weights and the data set's metadata).'''


def _card_usage(metadata: dict) -> str:
    if metadata["format"] == "imseg-onnx":
        return ONNX_USAGE
    files = " ".join(f"--checkpoint {e['file']}" for e in metadata["models"])
    return CHECKPOINT_USAGE.format(checkpoints=files)


def _place_text(place: dict | None) -> str:
    return place_name(place) if place else ""


def _num(value: object) -> str:
    return "-" if value is None else f"{float(value):.4f}"  # type: ignore[arg-type]


def export_command(argv: list[str]) -> str:
    """``imseg export ...`` as typed (for the card's Reproduce section)."""
    return shlex.join(["imseg", *argv])
