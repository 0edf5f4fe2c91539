"""The names a config may give ``model:`` (the tiny U-Net, smp architectures and encoders,
timm models as ``tu-<name>``, weight sources), checked against the installed libraries.

It sits at the bottom of the layers (with :mod:`imseg.config`, which checks a config's
names with it while loading), so it imports nothing of imseg but errors; smp and timm are
imported only when a name is checked. Building the nets: :mod:`imseg.models.encoders`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect

from imseg.errors import ConfigError

TINY_UNET = "tiny_unet"
"""``model.arch`` of the paper's tiny U-Net (imseg.models.unet), the default."""

INSTALL_HINT = 'pip install "imseg[models]"'

NO_WEIGHTS, PRETRAINED = "none", "imagenet"

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
"""A ``weights`` value with one of these endings (or a folder separator) is a file path."""


def models_installed() -> bool:
    """Whether segmentation_models_pytorch can be imported (without importing it)."""
    return importlib.util.find_spec("segmentation_models_pytorch") is not None


def require_smp():
    """The ``segmentation_models_pytorch`` module, or a ConfigError naming the extra."""
    try:
        return importlib.import_module("segmentation_models_pytorch")
    except ImportError as exc:
        raise ConfigError(f"model.arch other than {TINY_UNET} needs segmentation-models-pytorch "
                          f"and timm ({exc.name} is missing): {INSTALL_HINT}") from None


def architectures() -> dict[str, type]:
    """smp's architectures by their class name (Unet, UnetPlusPlus, FPN, DPT, ...)."""
    smp = require_smp()
    return {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}


def canonical_arch(name: str) -> str:
    """The class name of an smp architecture given in any letter case; ValueError with
    the close names when there is none."""
    known = architectures()
    by_lower = {k.lower(): k for k in known}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    names = [TINY_UNET, *known]
    raise ValueError(unknown_name("model.arch", name, names, f"known: {', '.join(names)}"))


def default_encoder(arch: str) -> str:
    """The encoder smp gives ``arch`` when none is named."""
    return inspect.signature(architectures()[arch]).parameters["encoder_name"].default


def check_encoder(name: str, field: str = "model.encoder") -> None:
    """ValueError with the close names unless ``name`` is an smp encoder or ``tu-<timm model>``."""
    import timm

    smp_encoders = require_smp().encoders
    if name.startswith("tu-"):
        if timm.is_model(name[3:]):
            return
        candidates = [f"tu-{m}" for m in timm.list_models()]
    else:
        candidates = smp_encoders.get_encoder_names()
        renamed = getattr(smp_encoders, "is_equivalent_to_timm_universal", lambda _: False)
        if name in candidates or renamed(name):  # smp's old timm-* names
            return
    raise ValueError(unknown_name(field, name, candidates,
                                  "smp's encoders: segmentation_models_pytorch.encoders."
                                  "get_encoder_names(); timm's as tu-<a timm.list_models() name>"))


def unknown_name(field: str, name: str, candidates: list[str], otherwise: str) -> str:
    """The error text for an unknown name: the close candidates, else ``otherwise``."""
    close = difflib.get_close_matches(name, candidates, n=6, cutoff=0.6) or \
        difflib.get_close_matches(name.lower(), [c.lower() for c in candidates], n=6, cutoff=0.6)
    hint = f"close names: {', '.join(close)}" if close else otherwise
    return f"{field}: unknown name {name!r}; {hint}"


def is_weight_file(value: str) -> bool:
    """Whether a ``model.weights`` value is a file path rather than none / imagenet."""
    return "/" in value or "\\" in value or value.lower().endswith(WEIGHT_SUFFIXES)
