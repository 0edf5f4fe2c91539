"""The segmentation checkpoint format: one file that suffices to use a trained model.

A checkpoint holds the weights, the model spec that rebuilds the net, the task,
and the data set's metadata (classes, colours, image size, channels, rotate
flag) plus the void values of its mask encoding, so a run folder keeps working
after its data folder has moved. Layout of the dict saved with ``torch.save``::

    format: "imseg-segmentation"   version: 2
    model:   {kind: unet, in_channels, out_channels, alpha, bn_momentum}
          or {kind: smp, in_channels, out_channels, arch, encoder, weights, options}
    state_dict
    task:    {kind, n_classes}
    dataset: dataset.yaml's fields without ``extra``
    void:    {mask: on-disk void value, label: in-memory void value}
    ...      whatever the caller adds (place, seed, config, val, test scores)

Checkpoints of version 1 (no ``format`` key) lack ``dataset`` and ``void``
(and the oldest also ``task``); they still load, with those left ``None``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imseg.config import ModelConfig
from imseg.data.layout import DatasetInfo
from imseg.errors import DataError
from imseg.models.encoders import build_encoder_net
from imseg.models.names import TINY_UNET, default_encoder
from imseg.models.unet import KERAS_BN_MOMENTUM, build_unet
from imseg.models.weights import weights_source
from imseg.tasks import VOID, Task

FORMAT = "imseg-segmentation"
VERSION = 2


@dataclass(frozen=True)
class ModelSpec:
    """What rebuilds a segmentation net before its weights are loaded.

    ``kind`` ``unet``: the paper's tiny U-Net (``alpha``, ``bn_momentum``); ``smp``: a
    segmentation_models_pytorch ``arch`` with ``encoder`` (imseg.models.encoders),
    whose ``weights`` (none, imagenet or a file) a new model starts from.
    """

    in_channels: int
    out_channels: int
    alpha: float = 1.0
    bn_momentum: float = KERAS_BN_MOMENTUM
    kind: str = "unet"
    arch: str | None = None
    encoder: str | None = None
    weights: str = "none"
    options: dict = field(default_factory=dict, hash=False)
    weights_source: str = ""
    """Where ``weights`` came from (a file and its digest, a package), for the record."""

    @classmethod
    def from_config(cls, model: ModelConfig, in_channels: int, out_channels: int,
                    alpha: float, bn_momentum: float, encoder: str | None = None) -> ModelSpec:
        """The net a config's ``model`` section asks for; ``alpha`` is the tiny U-Net's
        width, ``encoder`` replaces the section's (a growing student's)."""
        if model.arch == TINY_UNET:
            return cls(in_channels, out_channels, alpha, bn_momentum)
        encoder = encoder or model.encoder or default_encoder(model.arch)
        return cls(in_channels, out_channels, kind=SMP, arch=model.arch, encoder=encoder,
                   weights=model.weights, options=dict(model.options),
                   weights_source=weights_source(encoder, model.weights))

    def build(self, pretrained: bool = False) -> nn.Module:
        """The net with fresh weights; ``pretrained`` loads the encoder weights ``weights``
        names (a new model), not wanted when a checkpoint's state dict follows."""
        if self.kind == SMP:
            return build_encoder_net(self.arch, self.encoder, self.weights, self.options,
                                     self.in_channels, self.out_channels, pretrained)
        return build_unet(self.in_channels, self.out_channels, self.alpha,
                          bn_momentum=self.bn_momentum)

    @property
    def name(self) -> str:
        """The net as results.csv names it: ``tiny_unet`` or ``arch/encoder``."""
        return f"{self.arch}/{self.encoder}" if self.kind == SMP else TINY_UNET

    def to_dict(self) -> dict:
        """The fields of its kind (a U-Net's spec reads as before encoders existed)."""
        return {k: v for k, v in asdict(self).items() if k in _FIELDS[self.kind]}


SMP = "smp"
_COMMON = ("kind", "in_channels", "out_channels")
_FIELDS = {"unet": (*_COMMON, "alpha", "bn_momentum"),
           SMP: (*_COMMON, "arch", "encoder", "weights", "options", "weights_source")}
_REQUIRED = {"unet": ("in_channels", "out_channels", "alpha"),
             SMP: ("in_channels", "out_channels", "arch", "encoder")}


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything a checkpoint says besides its weights."""

    path: Path
    spec: ModelSpec
    task: Task | None
    """None only in the oldest checkpoints, which did not record it."""
    dataset: DatasetInfo | None
    """None in checkpoints written before version 2."""
    val: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    place: dict = field(default_factory=dict)

    @property
    def mask_void(self) -> int | None:
        return None if self.task is None else mask_void(self.task)


def mask_void(task: Task) -> int:
    """The value that means "void" in the task's masks on disk: what an in-memory void
    label decodes to."""
    return int(task.decode_mask(np.full((task.label_channels, 1, 1), VOID, np.uint8)).flat[0])


def dataset_record(info: DatasetInfo) -> dict:
    """dataset.yaml's fields as plain values, without the source's free-form ``extra``."""
    record = info.plain()
    record.pop("extra")
    return record


def checkpoint_payload(spec: ModelSpec, state_dict: dict, info: DatasetInfo, **extra) -> dict:
    """The dict to save for a model trained on the data set ``info`` describes; ``extra``
    adds keys such as ``place``, ``seed``, ``config``, ``val`` and ``test``."""
    task = info.task_obj
    if spec.out_channels != task.out_channels:
        raise ValueError(f"a {task.kind} task with {task.n_classes} classes needs "
                         f"{task.out_channels} output channels, the model has {spec.out_channels}")
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": spec.to_dict(),
        "state_dict": state_dict,
        "task": {"kind": task.kind, "n_classes": task.n_classes,
                 **({"headline": list(task.headline)} if task.headline else {}),
                 **({"test_metrics": list(task.test_metrics)} if task.test_metrics else {})},
        "dataset": dataset_record(info),
        "void": {"mask": mask_void(task), "label": VOID},
        **extra,
    }


def read_checkpoint(path: Path) -> tuple[nn.Module, CheckpointMeta]:
    """The model (weights loaded, train mode, CPU) and the metadata of a checkpoint file."""
    path = Path(path)
    ckpt = _load(path)
    meta = _meta(path, ckpt)
    model = meta.spec.build()
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise DataError(f"{path}: weights do not fit the recorded model spec "
                        f"({str(exc).splitlines()[0]})") from None
    return model, meta


def load_model(path: Path) -> nn.Module:
    """The model of a checkpoint file (see :func:`read_checkpoint`)."""
    return read_checkpoint(path)[0]


def _load(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:  # plain data only: a checkpoint given on the command line cannot run code
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a foreign file
        raise DataError(f"{path}: not an imseg checkpoint (cannot be read: "
                        f"{type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) \
            or "state_dict" not in ckpt:
        raise DataError(f"{path}: not an imseg checkpoint (no model spec and weights)")
    return ckpt


def _meta(path: Path, ckpt: dict) -> CheckpointMeta:
    version = ckpt.get("version", 1)
    if "format" in ckpt and (ckpt["format"] != FORMAT or not isinstance(version, int)):
        raise DataError(f"{path}: not an imseg segmentation checkpoint "
                        f"(format {ckpt['format']!r})")
    if version > VERSION:
        raise DataError(f"{path}: checkpoint version {version} is newer than this imseg "
                        f"reads ({VERSION}); upgrade imseg")
    spec_data = dict(ckpt["model"])
    kind = spec_data.setdefault("kind", "unet")
    if kind not in _FIELDS:
        raise DataError(f"{path}: a {kind!r} checkpoint, not a segmentation model")
    try:
        missing = [k for k in _REQUIRED[kind] if k not in spec_data]
        if missing:
            raise KeyError(f"model spec without {', '.join(missing)}")
        spec = ModelSpec(**spec_data)
        task_data = ckpt.get("task")
        task = Task(task_data["kind"], int(task_data["n_classes"]),
                    tuple(task_data.get("headline", ())),
                    tuple(task_data.get("test_metrics", ()))) if task_data else None
        dataset = DatasetInfo(**ckpt["dataset"]) if ckpt.get("dataset") else None
    except (TypeError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: damaged checkpoint metadata ({exc})") from None
    if dataset is not None and task is not None and dataset.task_obj != task:
        raise DataError(f"{path}: damaged checkpoint metadata (task {task} but data set "
                        f"{dataset.task_obj})")
    return CheckpointMeta(path, spec, task, dataset, dict(ckpt.get("val") or {}),
                          dict(ckpt.get("test") or {}), dict(ckpt.get("place") or {}))
