"""Any segmentation network of segmentation_models_pytorch (smp), encoders from timm included.

imseg's models take images in 0..255 ``(N, C, H, W)`` and return logits at the
input's size; :class:`EncoderNet` gives an smp model that interface, so every
stage, labeler, ``predict`` and ``export`` use it as they use the tiny U-Net:

* **normalisation**: ``(x - mean) / std`` with the encoder's pretrained
  statistics (ImageNet's for ``weights: none``), kept as buffers, so checkpoints
  and ONNX files carry them;
* **channels**: grey images are repeated to RGB (exact for RGB-pretrained
  encoders); other counts go to smp's ``in_channels``;
* **sizes**: the input is padded (zeros after normalisation, i.e. the mean
  colour) to a multiple of what the net needs (:func:`input_divisor`) and the
  logits are cropped back;
* **unused parts**: modules with weights that no forward reaches (the classifier-side
  ``conv_head``/``bn2`` smp keeps in EfficientNets, the stages an ``encoder_depth`` below
  5 leaves out) are removed (:func:`prune_unused`): they would hold BatchNorm layers
  without statistics and parameters without gradients (DDP refuses those).

Encoder weights from files and installed packages: :mod:`imseg.models.weights`.

smp and timm are imported only here and in :mod:`imseg.models.names` (the names a config
may give, checked while loading it), only when such a model is asked for; without them
the error names the extra to install.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imseg.errors import ConfigError, DataError
from imseg.models.names import (
    NO_WEIGHTS,
    PRETRAINED,
    canonical_arch,
    is_weight_file,
    require_smp,
)
from imseg.models.perturb import smp_forward_perturbed
from imseg.models.unet import check_image
from imseg.models.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PACKAGED,
    installed_weights,
    load_encoder_file,
)

log = logging.getLogger("imseg.models")


# ------------------------------------------------------------------------------ the net
class EncoderNet(nn.Module):
    """An smp model behind the tiny U-Net's interface: images in 0..255 → logits, any size."""

    def __init__(self, net: nn.Module, in_channels: int, out_channels: int,
                 mean: tuple[float, ...], std: tuple[float, ...], divisor: int,
                 weights: str = NO_WEIGHTS, pruned: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.net = net
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.divisor = divisor
        """Height and width are padded to a multiple of this before ``net`` sees them."""
        self.weights = weights
        """What the encoder started from (none, imagenet or a file), also when rebuilt
        from a checkpoint: fine-tuning settings apply to a pretrained encoder."""
        self.pruned = pruned
        """Modules removed as unused (``net.encoder.conv_head``, ...); their tensors in
        checkpoints written before they were removed are skipped on loading."""
        self.register_load_state_dict_pre_hook(_skip_pruned)
        stats = channel_stats(mean, std, net_channels(in_channels))
        # in 0..255 units, so forward needs one subtraction and one division
        self.register_buffer("mean", torch.tensor(stats[0]).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(stats[1]).view(1, -1, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor, feature_dropout: float | None = None) -> torch.Tensor:
        """Logits ``(N, out_channels, H, W)`` in float32 for images in 0..255; with
        ``feature_dropout``, ``2N`` of them (:mod:`imseg.models.perturb`)."""
        check_image(x, self.in_channels)
        h, w = x.shape[-2:]
        x = x.to(self.mean.dtype)
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        # always padded (maybe by 0): an ONNX trace then keeps the padding shape-dependent
        x = F.pad(x, (0, (-w) % self.divisor, 0, (-h) % self.divisor))
        logits = self.net(x) if feature_dropout is None else \
            smp_forward_perturbed(self.net, x, feature_dropout)
        if logits.shape[-2:] != x.shape[-2:]:  # a decoder that stops short of full size
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear",
                                   align_corners=False)
        return logits[..., :h, :w].float()

    @property
    def pretrained_encoder(self) -> nn.Module | None:
        """The encoder when it started from pretrained weights, else None."""
        return None if self.weights == NO_WEIGHTS else self.net.encoder


def _skip_pruned(module: EncoderNet, state_dict: dict, prefix: str, *_args: Any) -> None:
    """Drop a state dict's tensors of modules this net removed as unused."""
    dead = tuple(f"{prefix}{name}." for name in module.pruned)
    for key in [k for k in state_dict if k.startswith(dead)] if dead else []:
        del state_dict[key]


def net_channels(in_channels: int) -> int:
    """Channels the smp net gets: grey is repeated to RGB, other counts go as they are."""
    return 3 if in_channels == 1 else in_channels


def channel_stats(mean: tuple[float, ...], std: tuple[float, ...],
                  channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std for ``channels`` inputs, cycling the RGB values as smp
    cycles the RGB filters of a pretrained first convolution."""
    return ([float(mean[i % len(mean)]) for i in range(channels)],
            [float(std[i % len(std)]) for i in range(channels)])


def input_divisor(net: nn.Module) -> int:
    """What height and width must be a multiple of for ``net``.

    Convolutional encoders: their output stride (32 for five downsamplings). DPT
    rescales a ViT's patch grid to 1/4 ... 1/2**(k+1) of the image with integer
    (transposed) convolutions, so the image must be a multiple of 2**(k+1) and the
    patch size must divide it (16 does; DINOv2's 14 does not).
    """
    stride = int(net.encoder.output_stride)
    if type(net).__name__ != "DPT":
        return stride
    ladder = 2 ** (len(net.decoder.fusion_blocks) + 1)
    if ladder % stride:
        raise ConfigError(
            f"DPT needs a ViT whose patch size divides {ladder}; this encoder's is {stride}. "
            f"Add model.options: {{patch_size: 16}} (timm resamples pretrained patch "
            f"embeddings to it)")
    return ladder


def build_encoder_net(arch: str, encoder: str, weights: str, options: dict[str, Any],
                      in_channels: int, out_channels: int, pretrained: bool) -> EncoderNet:
    """The smp ``arch`` with ``encoder`` wrapped as an :class:`EncoderNet`.

    ``pretrained``: load the encoder weights ``weights`` names (a new model); False
    when a checkpoint's state dict follows, which holds them already (no download, no
    package). ``imagenet`` comes from an installed package where one ships the
    encoder's weights (:data:`imseg.models.weights.PACKAGED`), else from the Hub.
    """
    smp = require_smp()
    try:
        arch = canonical_arch(arch)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    kwargs = dict(options)
    if arch == "DPT":
        kwargs.setdefault("dynamic_img_size", True)  # a ViT at the data's size, not 224/518
    packaged = installed_weights(encoder) if pretrained and weights == PRETRAINED else None
    download = pretrained and weights == PRETRAINED and packaged is None

    def create(smp_weights: str | bool | None, channels: int, **extra: Any) -> nn.Module:
        try:
            return smp.create_model(arch, encoder_name=encoder, encoder_weights=smp_weights,
                                    in_channels=channels, classes=out_channels,
                                    **kwargs, **extra)
        except Exception as exc:  # noqa: BLE001 - smp, timm and the hub raise many kinds
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if download and _is_download_error(exc):
                raise ConfigError(
                    f"model.weights imagenet: cannot download the weights of {encoder} "
                    f"({first}). Copy the Hugging Face cache of a connected machine ($HF_HOME, "
                    f"by default ~/.cache/huggingface) here and set HF_HUB_OFFLINE=1, or give "
                    f"model.weights a local file") from None
            raise ConfigError(f"model {arch} with encoder {encoder} and options {options}: "
                              f"{first}") from None

    channels = net_channels(in_channels)
    if pretrained and is_weight_file(weights):
        net = _net_from_file(create, Path(weights), encoder, channels)
    elif packaged is not None:
        net = _net_from_file(create, packaged.file(), encoder, channels, packaged.label)
    elif download:
        net = create(True if encoder.startswith("tu-") else PRETRAINED, channels)
    else:
        net = create(None, channels)
    pruned = prune_unused(net, channels)
    mean, std = pixel_stats(encoder, weights)
    return EncoderNet(net, in_channels, out_channels, mean, std, input_divisor(net),
                      weights, pruned)


def _net_from_file(create, file: Path, encoder: str, channels: int,
                   label: str | None = None) -> nn.Module:
    """A net whose encoder starts from a local file: loaded here (:func:`load_encoder_file`;
    the file may lack the tensors of unused parts), or, for a ``tu-`` encoder whose file
    is its timm model's own, by timm (which renames to its feature extractor's names and
    adapts patch size and input channels)."""
    net = create(None, 3)
    unused = unused_modules(net, 3)[0]
    optional = frozenset(k for k in net.encoder.state_dict()
                         if k.startswith(tuple(f"{name.removeprefix('encoder.')}."
                                               for name in unused if name.startswith("encoder."))))
    try:
        load_encoder_file(net.encoder, file, encoder, optional, label)
    except DataError:
        if not encoder.startswith("tu-"):
            raise
        try:
            return create(True, channels, pretrained_cfg_overlay={"file": str(file)})
        except ConfigError:
            pass
        raise
    if channels != 3:  # as smp adapts RGB weights: summed for grey, cycled for more
        from segmentation_models_pytorch.encoders._utils import patch_first_conv

        patch_first_conv(net.encoder, channels, pretrained=True)
    return net


# ------------------------------------------------------------------------------ unused parts
def unused_modules(net: nn.Module, channels: int) -> tuple[list[str], torch.Tensor | None]:
    """The top-most modules holding tensors that a forward of a zero image (eval mode)
    never calls, and that forward's output; ``([], None)`` when the probe cannot run
    (an architecture that needs larger images: nothing is removed then)."""
    called: set[nn.Module] = set()
    hooks = [m.register_forward_pre_hook(lambda m, _args: called.add(m)) for m in net.modules()]
    try:
        output = _probe(net, channels)
    except Exception:  # noqa: BLE001 - any failure only means: remove nothing
        return [], None
    finally:
        for hook in hooks:
            hook.remove()
    dead = [name for name, module in net.named_modules()
            if name and _holds_tensors(module) and not any(m in called for m in module.modules())]
    return [n for n in dead if not any(n.startswith(f"{d}.") for d in dead)], output


def prune_unused(net: nn.Module, channels: int) -> tuple[str, ...]:
    """Replace the modules :func:`unused_modules` finds by ``nn.Identity``, kept only when
    the probe's output stays the same to the bit; returns their names under an
    :class:`EncoderNet` (``net.encoder.conv_head``, ...)."""
    dead, before = unused_modules(net, channels)
    if not dead:
        return ()
    removed = {name: _swap(net, name, nn.Identity()) for name in dead}
    try:
        same = torch.equal(_probe(net, channels), before)
    except Exception:  # noqa: BLE001 - a module used without being called: keep them all
        same = False
    if not same:
        for name, module in removed.items():
            _swap(net, name, module)
        return ()
    log.debug("removed unused modules: %s", ", ".join(dead))
    return tuple(f"net.{name}" for name in dead)


@torch.no_grad()
def _probe(net: nn.Module, channels: int) -> torch.Tensor:
    """``net``'s eval-mode output for one zero image of twice its input divisor; the
    modules' train/eval modes are restored after."""
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        size = 2 * input_divisor(net)
        return net(torch.zeros(1, channels, size, size))
    finally:
        for module, mode in modes:
            module.training = mode


def _holds_tensors(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _swap(net: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` in place of the submodule ``name``; returns the old one."""
    parent_name, _, leaf = name.rpartition(".")
    parent = net.get_submodule(parent_name)
    old = getattr(parent, leaf)
    setattr(parent, leaf, new)
    return old


def _is_download_error(exc: BaseException) -> bool:
    """Whether an exception comes from fetching weights (no network, no cache entry)."""
    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, OSError) or module in {"huggingface_hub", "httpx", "httpx2",
                                                  "httpcore", "requests", "urllib3"}


def pixel_stats(encoder: str, weights: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std (in 0..1) the encoder's pretrained weights expect; ImageNet's for
    ``weights: none``. Never downloads: a package's settings are listed with it, timm's
    ship with timm, smp's come with the weights into the Hugging Face cache (else those
    of the encoder's package entry, else ImageNet's)."""
    if weights == NO_WEIGHTS:
        return IMAGENET_MEAN, IMAGENET_STD
    packaged = installed_weights(encoder)
    if weights == PRETRAINED and packaged is not None:
        return packaged.mean, packaged.std
    if encoder.startswith("tu-"):
        import timm

        try:
            cfg = timm.models.get_pretrained_cfg(encoder[3:])
        except RuntimeError:
            cfg = None
        if cfg is not None and cfg.mean and cfg.std:
            return tuple(cfg.mean), tuple(cfg.std)
        return IMAGENET_MEAN, IMAGENET_STD
    known = PACKAGED.get(encoder)  # a file of the same weights: the package's settings
    return _cached_smp_stats(encoder) or ((known.mean, known.std) if known else None) or \
        (IMAGENET_MEAN, IMAGENET_STD)


def _cached_smp_stats(encoder: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    settings = require_smp().encoders.encoders.get(encoder, {}).get("pretrained_settings", {})
    source = settings.get(PRETRAINED)
    if not source:
        return None
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(source["repo_id"], "config.json", revision=source["revision"],
                               local_files_only=True)
        cfg = json.loads(Path(path).read_text())
    except Exception:  # noqa: BLE001 - not in the cache (weights from a file): ImageNet's
        return None
    scale = 1.0 / float(cfg.get("input_range", [0, 1])[1])  # settings in 0..255 → 0..1
    return (tuple(m * scale for m in cfg["mean"]), tuple(s * scale for s in cfg["std"]))
