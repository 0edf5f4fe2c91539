"""Validated configuration: code defaults (the reference's), YAML presets, command-line overrides.

A config is built in three layers, later ones winning:

1. the defaults below (the paper's reference settings);
2. YAML files (``--config FILE``, may be given several times; a file may name
   ``base: other.yaml`` relative to itself, or a preset name such as ``base: quick``);
3. command-line flags and ``--set section.key=value`` overrides.

Unknown keys and wrong types are rejected with a message that names the key.
Every run writes its resolved config to ``RUN/config.yaml``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from imseg.errors import ConfigError
from imseg.models import names
from imseg.models.names import TINY_UNET

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The presets shipped inside the package (found the same way from a clone or a wheel)."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


MIN_ALPHA = 1 / 16
"""The narrowest width multiplier: the U-Nets' (and EvalNet's) first layer has 16·alpha
filters, truncated, and needs at least one."""


def _wide_enough(alpha: float) -> float:
    if not (math.isfinite(alpha) and alpha >= MIN_ALPHA):
        raise ValueError(f"must be a number of at least {MIN_ALPHA} (1/16): the first layer has "
                         f"16·alpha filters and needs at least one; got {alpha}")
    return alpha


Alpha = Annotated[float, AfterValidator(_wide_enough)]
"""A width multiplier (train.alpha, evalnet.alpha, ssl.noise.student_alphas)."""

AutoMode = Literal["auto", "always", "never"]
"""A speed option's modes: ``auto`` where it is measured to pay, ``always``, ``never``."""

AmpMode = AutoMode
"""bfloat16 mixed precision: ``auto`` on CUDA only, ``always`` on CPU too, ``never``."""


def amp_mode(amp: AmpMode | bool) -> AmpMode:
    """``True`` / ``False`` (older configs, function defaults) → ``auto`` / ``never``."""
    if isinstance(amp, bool):
        return "auto" if amp else "never"
    return amp


class TrainConfig(Section):
    """Training one model (docs/method.md §3)."""

    FINE_TUNING: ClassVar[tuple[str, ...]] = ("encoder_lr_factor", "encoder_bn", "warmup_epochs")
    """Settings read only for a net whose encoder starts from pretrained weights
    (``model.weights`` not none): a net from scratch does not depend on them."""

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.003, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    steps_per_epoch: int | None = Field(
        None, ge=1, description="None: N // batch_size (at least 1), as the reference"
    )
    alpha: Alpha = Field(1.0, description="U-Net width multiplier (16·alpha base filters)")
    bn_momentum: float = Field(
        0.01, gt=0, le=1,
        description="BatchNorm running-stat momentum (torch convention; Keras' 0.99 = 0.01)",
    )
    ignore_im: bool = Field(
        False, description="leave inconsistency-mask pixels out of the loss (reference: False)"
    )
    amp: AmpMode = Field(
        "auto",
        description="bfloat16 mixed precision: auto = on CUDA only; always = on CPU too (faster "
                    "where the CPU has AVX512-BF16 or AMX; numbers differ slightly from float32; "
                    "a CPU without bfloat16 kernels runs float32, with a warning); never. "
                    "true / false mean auto / never",
    )
    channels_last: bool = True
    compile: bool | Literal["reduce-overhead", "max-autotune"] = Field(
        False,
        description="torch.compile the model on CUDA: true (default mode), reduce-overhead "
                    "(CUDA graphs: one launch per step instead of one per kernel), "
                    "max-autotune; false",
    )
    compile_inference: AutoMode = Field(
        "auto",
        description="torch.compile the teachers of a pseudo-labeling pass (full batches; the "
                    "last, partial one runs eagerly): auto = on CPU when the pass holds at least "
                    "2 TFLOP of convolutions (1.2-1.6x faster there once compiled; the first "
                    "compile of an architecture costs 10-20 s, later ones hit torch's cache), "
                    "not on CUDA (the pass takes seconds); always; never. Compiled logits differ "
                    "from eager ones in the last bits",
    )
    eval_batch_size: int | None = Field(
        None, ge=1,
        description="inference batch for validation and test; None: batch_size (blocks of one "
                    "size keep the CPU heap from fragmenting: ~1 GB less at 256 px)",
    )
    sync_bn: bool = Field(False, description="DDP: BatchNorm statistics over the global batch")
    bn_stats: Literal["running", "precise"] = Field(
        "precise",
        description="BatchNorm statistics used in evaluation: precise = recomputed before each "
                    "validation over the model's training batches, right however few steps "
                    "it took (imseg.training.batchnorm; the default: README, issue 16); "
                    "running = the momentum averages kept in training (the reference; the "
                    "paper's presets)",
    )
    bn_stats_batches: int = Field(
        200, ge=1,
        description="precise: batches of batch_size the statistics pool at most (one pass "
                    "over the training set when that is shorter)",
    )
    # Defaults measured on dsb2018 (README, "Fine-tuning"): frozen statistics gained in
    # each of 3 paired LDT models; the rate factor and a warm-up made no difference there
    # (0.1 kept, as UniMatch's 10x for the head; no warm-up).
    encoder_lr_factor: float = Field(
        0.1, gt=0,
        description="fine-tuning (only where model.weights is not none): the pretrained "
                    "encoder's learning rate is lr times this, the new decoder and head keep lr "
                    "(UniMatch: 10x for the head)",
    )
    encoder_bn: Literal["train", "frozen"] = Field(
        "frozen",
        description="fine-tuning (only where model.weights is not none): the pretrained "
                    "encoder's BatchNorm layers: train = as the decoder's (batch statistics in "
                    "training, evaluation statistics per bn_stats: running or precise); frozen "
                    "= normalise with the pretrained statistics in training too and keep them "
                    "(for small batches; their scale and shift still learn)",
    )
    warmup_epochs: int = Field(
        0, ge=0,
        description="fine-tuning (only where model.weights is not none): the learning rates "
                    "rise linearly over this many epochs (epoch e of k at e/(k+1) of the rate); "
                    "0: none",
    )
    snapshot_minutes: float | None = Field(
        5.0, ge=0,
        description="save an unfinished model's training state after an epoch once this many "
                    "minutes have passed since the last save, so that a killed run resumes "
                    "inside that model (the same numbers as without a stop); 0: after every "
                    "epoch; null: never. Models done within this time write none",
    )
    fuse: AutoMode = Field(
        "auto",
        description="train a stage's models at once as one grouped network (same results as "
                    "one at a time; imseg.training.fused): auto = on CUDA only (on CPU it "
                    "measured no faster), always, never",
    )

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_from_bool(cls, value: Any) -> Any:
        return amp_mode(value)

    @property
    def eval_batch(self) -> int:
        """The inference batch size in effect."""
        return self.eval_batch_size or self.batch_size


class AugmentConfig(Section):
    """Augmentation of a pair (docs/method.md §4); geometry on image and mask, photometrics on the image."""

    flip_h: bool = True
    flip_v: bool = True
    rotate: bool | None = Field(None, description="None: from dataset.yaml's `rotate`")
    brightness_prob: float = Field(0.5, ge=0, le=1)
    alpha_range: tuple[float, float] = (0.5, 1.5)
    beta_range: tuple[float, float] = (-25.0, 25.0)
    max_blur: int = Field(3, ge=0, le=3)
    max_noise: int = Field(25, ge=0)


class BenchmarkConfig(Section):
    """FDT / LDT / ALDT stages (docs/method.md §4)."""

    candidates: int = Field(10, ge=1, description="models trained per benchmark stage")
    keep: int = Field(4, ge=1, description="top-K kept by validation score")
    aldt_copies: int = Field(9, ge=0, description="augmented copies per labeled pair in ALDT")


class NoiseSchedule(Section):
    """Per-generation noise and student width (Noisy Student, IM+, AIM+...; docs/method.md §6)."""

    max_blur: list[int] = [0, 1, 1, 2, 3]
    max_noise: list[int] = [5, 10, 15, 20, 25]
    alpha_ranges: list[tuple[float, float]] = [
        (0.9, 1.1), (0.8, 1.2), (0.7, 1.3), (0.6, 1.4), (0.5, 1.5)
    ]
    beta_ranges: list[tuple[float, float]] = [
        (-5, 5), (-10, 10), (-15, 15), (-20, 20), (-25, 25)
    ]
    student_alphas: list[Alpha] = Field(
        [1.0, 1.25, 1.5, 1.75, 2.0], description="growing students: alpha per generation"
    )

    @model_validator(mode="after")
    def _non_empty(self) -> NoiseSchedule:
        for name in ("max_blur", "max_noise", "alpha_ranges", "beta_ranges", "student_alphas"):
            if not getattr(self, name):
                raise ValueError(f"noise schedule {name} must not be empty")
        return self

    def at(self, generation: int, field: str) -> Any:
        """Value of a schedule list for a generation (1-based); the last entry repeats."""
        values = getattr(self, field)
        return values[min(generation - 1, len(values) - 1)]


class InconsistencyConfig(Section):
    """How the inconsistency mask is built and applied (docs/method.md §6)."""

    erode: int = Field(0, ge=0, description="erosion kernel size of the IM, 0 = off")
    dilate: int = Field(0, ge=0, description="dilation kernel size of the IM, 0 = off")
    block_input: bool = True
    block_output: bool = True
    binary_filter: bool = Field(
        True, description="binary: keep a pair only if agreed positive area > 0 and > IM area"
    )


WeakView = Literal["flips_rotations", "scale_crop"]
"""The online trainers' weak view: the data set's flips/rotations (UniMatch's medical view),
or a random rescale cropped back to size plus a horizontal flip (its natural-image view)."""


def _scale_range(value: tuple[float, float]) -> tuple[float, float]:
    low, high = value
    if not 0 < low <= high:
        raise ValueError(f"must be [low, high] with 0 < low <= high, got {list(value)}")
    return value


ScaleRange = Annotated[tuple[float, float], AfterValidator(_scale_range)]
"""The scale-crop weak view's factors (UniMatch's 0.5–2.0)."""


class MeanTeacherConfig(Section):
    """The standard Mean Teacher's consistency term; defaults are SSL4MIS's
    ``train_mean_teacher_2D``."""

    consistency_weight: float = Field(0.1, ge=0, description="weight of the student-teacher "
                                      "MSE once ramped up")
    rampup_epochs: float | None = Field(None, gt=0, description="epochs the weight ramps up "
                                        "over (sigmoid); None: all of train.epochs, as "
                                        "SSL4MIS ramps over its whole run")
    noise_std: float = Field(0.1, ge=0, description="Gaussian noise on the teacher's input, in "
                             "image ranges (1 = 0..255)")
    noise_clamp: float = Field(0.2, ge=0, description="the noise is clipped to ± this")


class OnlineConfig(Section):
    """What the online SSL trainers read globally (docs/method.md §6); a recipe's
    ``trainer:`` mapping overrides it for that recipe."""

    weak_view: WeakView = "flips_rotations"
    scale_range: ScaleRange = (0.5, 2.0)
    mean_teacher: MeanTeacherConfig = MeanTeacherConfig()


class SSLConfig(Section):
    """The generation loop (docs/method.md §5)."""

    approaches: list[str] = ["im"]
    generations: int = Field(5, ge=1)
    teachers: list[Annotated[int, Field(ge=1)]] = [2, 3, 4]
    runs: int = Field(3, ge=1)
    students: int = Field(5, ge=1)
    pseudo_batch_size: int = Field(64, ge=1)
    input_ensemble_views: int = Field(0, ge=0, description="0: use the teacher count n")
    soft_vote: bool = Field(False, description="model ensemble: argmax of the mean instead of all-agree")
    consistency_epochs: int = Field(100, ge=2)
    samples_per_generation: int = Field(4, ge=0, description="pseudo-label PNGs kept per generation")
    inconsistency: InconsistencyConfig = InconsistencyConfig()
    noise: NoiseSchedule = NoiseSchedule()
    online: OnlineConfig = OnlineConfig()

    @model_validator(mode="before")
    @classmethod
    def _drop_keep(cls, data: Any) -> Any:
        """``ssl.keep`` was never read (the loop keeps top-1/top-n; K is ``benchmark.keep``);
        older config files and run folders that have it still load."""
        if isinstance(data, dict) and "keep" in data:
            data = {k: v for k, v in data.items() if k != "keep"}
        return data


class EvalNetConfig(Section):
    """EvalNet (docs/method.md §2, §6)."""

    alpha: Alpha = 1.0
    count: int = Field(5, ge=1, description="EvalNets trained")
    keep: int = Field(3, ge=1)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.003, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    train_loops: int = Field(10, ge=1, description="IM++ data: IM masks per labeled image")
    val_loops: int = Field(3, ge=1, description="IM++ data: IM masks per val image")
    auto_min_fraction: float = Field(
        0.1, gt=0, le=1, description="automatic thresholds keep at least this share of val masks"
    )
    threshold: float | None = Field(None, description="evalnet_select: None = chosen on val")
    min_threshold: float | None = Field(None, description="IM++ copies: None = chosen on val")
    max_threshold: float | None = Field(None, description="IM++ copies: None = chosen on val")


class ModelConfig(Section):
    """The segmentation network (imseg.models.encoders); the EvalNet stays its own net."""

    arch: str = Field(
        TINY_UNET,
        description="tiny_unet (the paper's net: width train.alpha, growing students by "
                    "ssl.noise.student_alphas) or a segmentation_models_pytorch architecture: "
                    "Unet, UnetPlusPlus, FPN, DeepLabV3Plus, Segformer, UPerNet, DPT, ... "
                    "(needs pip install \"imseg[models]\")",
    )
    encoder: str | None = Field(
        None,
        description="smp encoder (resnet18, efficientnet-b0, mit_b0, ...) or a timm model as "
                    "tu-<name>; None: the architecture's default",
    )
    weights: str = Field(
        "none",
        description="what the encoder starts from: none (random), imagenet (its standard "
                    "pretrained weights: from an installed package where one ships them, "
                    "imseg[pretrained], else downloaded once into the Hugging Face cache) or a "
                    "local file (a state dict of the encoder, by name or mapped by order)",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="more keyword arguments of the smp architecture (decoder_channels, "
                    "encoder_depth, ...); those it does not know go on to timm (patch_size)",
    )
    student_encoders: list[str] = Field(
        default_factory=list,
        description="growing students of an smp model: the encoder per generation, the last "
                    "repeating (e.g. [resnet18, resnet34, resnet50]); empty: students keep "
                    "model.encoder",
    )

    @model_validator(mode="before")
    @classmethod
    def _check_names(cls, data: Any) -> Any:
        """Names checked against smp and timm (when installed; building the net says what to
        install otherwise); arch in smp's spelling, the default encoder filled in, a weight
        file's path made absolute."""
        if not isinstance(data, dict) or not isinstance(data.get("arch", TINY_UNET), str):
            return data
        data = dict(data)
        if data.get("weights") is None:
            data["weights"] = "none"
        if data.get("arch", TINY_UNET) == TINY_UNET:
            _tiny_unet_takes_no_encoder(data)
            return data
        weights = data["weights"]
        if isinstance(weights, str) and weights not in ("none", "imagenet"):
            if not names.is_weight_file(weights):
                raise ValueError(f"model.weights must be none, imagenet or a file path, "
                                 f"got {weights!r}")
            data["weights"] = str(Path(weights).expanduser().resolve())
        if names.models_installed():
            data["arch"] = names.canonical_arch(data["arch"])
            data["encoder"] = data.get("encoder") or names.default_encoder(data["arch"])
            names.check_encoder(data["encoder"])
            for name in data.get("student_encoders") or []:
                names.check_encoder(name, "model.student_encoders")
        others = set(data.get("student_encoders") or []) - {data.get("encoder")}
        if names.is_weight_file(data["weights"]) and others:
            raise ValueError(f"model.weights names a file for model.encoder; students with "
                             f"{sorted(others)} need weights none or imagenet")
        return data


def _tiny_unet_takes_no_encoder(data: dict) -> None:
    given = [k for k in ("encoder", "options", "student_encoders") if data.get(k)]
    given += ["weights"] if data["weights"] != "none" else []
    if given:
        raise ValueError(f"{', '.join('model.' + k for k in given)}: for smp architectures "
                         f"only; model.arch {TINY_UNET} takes its width from train.alpha "
                         "(growing students: ssl.noise.student_alphas)")


class LogConfig(Section):
    """What a run writes for watching it (changes no number)."""

    tensorboard: bool = Field(
        True, description="TensorBoard event files under RUN/tensorboard (needs "
                          "pip install \"imseg[tensorboard]\"; skipped with a note without it)")


class Config(Section):
    """Everything a run needs besides the data."""

    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    ssl: SSLConfig = SSLConfig()
    evalnet: EvalNetConfig = EvalNetConfig()
    model: ModelConfig = ModelConfig()
    log: LogConfig = LogConfig()
    recipes: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="extra or overriding approach recipes"
    )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------- loading
def _deep_merge(base: dict, update: dict, whole_recipes: bool = True) -> dict:
    """``update`` over ``base``, mappings merged key by key. A config file's recipe replaces
    one of the same name whole (``whole_recipes``); a ``--set`` changes one value in it."""
    out = dict(base)
    for key, value in update.items():
        if not (isinstance(value, dict) and isinstance(out.get(key), dict)):
            out[key] = value
        elif key == "recipes" and whole_recipes:
            out[key] = {**out[key], **value}
        else:
            out[key] = _deep_merge(out[key], value, whole_recipes)
    return out


def resolve_config_path(name: str | Path) -> Path:
    """A config file by path, or by preset name in ``configs/`` (``quick`` → configs/quick.yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / path, CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config file {name} not found (nor as a preset in {CONFIG_DIR})")


def read_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A YAML config file as a dict, following ``base:`` references."""
    path = resolve_config_path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: `base` references form a cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    base = data.pop("base", None)
    if base is not None:
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        if not base_path.is_file():
            base_path = Path(base)  # a preset name (``base: quick``)
        data = _deep_merge(read_yaml(base_path, (*_seen, path)), data)
    return data


def parse_override(text: str) -> dict:
    """``train.epochs=3`` → ``{"train": {"epochs": 3}}`` (the value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: bad value ({exc})") from exc
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _format_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix(
            "Value error, ")
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def build_config(
    files: list[str | Path] | None = None,
    overrides: dict | None = None,
    sets: list[str] | None = None,
) -> Config:
    """Defaults ← YAML files ← ``overrides`` (a nested dict, e.g. from CLI flags) ← ``--set``."""
    data: dict = {}
    sources = ["defaults"]
    for f in files or []:
        data = _deep_merge(data, read_yaml(Path(f)))
        sources.append(str(f))
    if overrides:
        data = _deep_merge(data, overrides)
        sources.append("command line")
    for text in sets or []:
        data = _deep_merge(data, parse_override(text), whole_recipes=False)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, " ← ".join(sources))) from None


def nested(**flat: Any) -> dict:
    """CLI flags → nested override dict, dropping flags that were not given.

    ``nested(**{"train.epochs": 3, "seed": None})`` → ``{"train": {"epochs": 3}}``.
    """
    out: dict = {}
    for key, value in flat.items():
        if value is None:
            continue
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out
