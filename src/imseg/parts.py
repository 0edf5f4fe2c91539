"""Recipe parts as typed plug-ins with validated settings (docs/architecture.md, "Recipes").

A recipe names one part of each kind (teachers, labeler, copies, noise,
students, start, trainer). A part is written as a bare name, ``inconsistency``,
or as a mapping with settings, ``{name: inconsistency, dilate: 3}``. Each part
is a :class:`Part` subclass registered in its kind's :class:`PartRegistry`;
its fields are its settings, checked like any config section (unknown or
wrong ones are errors naming the recipe), and its methods are what the part
does (a labeler's ``label``, a trainer's ``epoch_factory``): the code that uses
a part gets the part itself.

Settings that exist globally as well (``ssl.inconsistency.dilate``) are listed
in the part's ``GLOBALS``: an omitted setting takes the global value, a given
one overrides it for that recipe only. A part also says what it needs prepared
before any chain starts (:class:`Needs`), so the runner can do that work in one
process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, PrivateAttr, ValidationError

from imseg.config import Config, Section
from imseg.errors import ConfigError


@dataclass(frozen=True)
class Needs:
    """What a part needs prepared before chains run (by the driver, under Ray too)."""

    evalnet_kinds: tuple[str, ...] = ()
    """EvalNet kinds whose ensembles (and thresholds) it reads."""
    per_teacher_count: bool = False
    """Whether its chain runs once per teacher count n."""
    state: str | None = None
    """A folder under ``RUN/state/`` where it keeps state across generations."""
    scores_pairs: bool = False
    """Whether it gives its pseudo pairs a predicted quality (copies by score reuse it)."""

    def __or__(self, other: Needs) -> Needs:
        return Needs(tuple(dict.fromkeys(self.evalnet_kinds + other.evalnet_kinds)),
                     self.per_teacher_count or other.per_teacher_count,
                     self.state or other.state, self.scores_pairs or other.scores_pairs)


class Part(Section):
    """Base of every recipe part: its ``name`` and, in subclasses, its settings.

    A part compares equal to its name (``recipe.copies == "evalnet"``: reading a recipe,
    tests); what a part does is its methods, so code that uses it never asks its name.
    """

    name: str
    GLOBALS: ClassVar[dict[str, str]] = {}
    """Setting → dotted config key it defaults from and overrides for its recipe."""
    READS: ClassVar[tuple[str, ...]] = ()
    """Other config keys its behaviour reads (a run's settings check covers them)."""
    _config_wide: dict[str, Any] = PrivateAttr(default_factory=dict)
    """Setting → the config-wide value it had when parsed (empty: built without a config)."""

    def recipe_settings(self) -> dict[str, Any]:
        """The settings that differ from the class's defaults and are not merely the
        config-wide value (the run's settings check guards those): what makes this part
        differ from another of its name in the same run."""
        defaults = type(self).model_validate({"name": self.name}).settings()
        missing = object()
        return {k: v for k, v in self.settings().items()
                if defaults.get(k) != v and self._config_wide.get(k, missing) != v}

    def needs(self) -> Needs:
        return Needs()

    def settings(self) -> dict[str, Any]:
        """The settings without the name, as plain values."""
        return self.model_dump(mode="json", exclude={"name"})

    def global_values(self) -> dict[str, Any]:
        """``{config key: value}`` of the settings that have a global counterpart."""
        return {key: getattr(self, field) for field, key in self.GLOBALS.items()}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.name == other
        if isinstance(other, Part):  # by settings: where a value came from does not count
            return type(self) is type(other) and self.model_dump() == other.model_dump()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name


class PartRegistry:
    """The parts of one kind by name (each a :class:`Part` class with its behaviour);
    parses a recipe's entry into a validated part."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.classes: dict[str, type[Part]] = {}

    def register(self, cls: type[Part]) -> type[Part]:
        """Class decorator: the class's ``name`` default is the part's name."""
        self.classes[cls.model_fields["name"].default] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(self.classes)

    def parse(self, value: Any, config: Config, owner: str) -> Part:
        """A bare name or ``{name: ..., setting: value}`` → the part, global settings filled
        in. ``owner`` starts error messages (``recipe 'im'``, ``--trainer``)."""
        if isinstance(value, Part):
            return value
        where = f"{owner}: {self.kind}"
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise ConfigError(f"{where}: give a name ({', '.join(self.names())}) or a mapping "
                              f"with a name and settings, got {value!r}")
        name = value["name"]
        cls = self.classes.get(name)
        if cls is None:
            raise ConfigError(f"{where}: unknown {self.kind} {name!r}; available: "
                              f"{', '.join(self.names())}")
        config_wide = {field: config_value(config, key) for field, key in cls.GLOBALS.items()}
        try:
            part = cls.model_validate({**config_wide, **value})
        except ValidationError as exc:
            raise ConfigError(f"{where} {name}: {_settings_error(exc, cls)}") from None
        part._config_wide = type(part).model_validate(
            {"name": name, **config_wide}).settings() if config_wide else {}
        return part


def _settings_error(exc: ValidationError, cls: type[Part]) -> str:
    known = [f for f in cls.model_fields if f != "name"]
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown setting {loc!r} (settings: {', '.join(known) or 'none'})")
        else:
            lines.append(f"{loc}: {err['msg']}")
    return "; ".join(lines)


# ------------------------------------------------------------------- config values
def config_value(config: BaseModel, key: str) -> Any:
    """The value at a dotted key, ``ssl.inconsistency.dilate``."""
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def with_values(config: Config, values: dict[str, Any]) -> Config:
    """``config`` with the dotted keys set (the same object when nothing changes): the
    config a chain's checkpoints record, its recipe's settings included.

    Values come from validated parts whose fields have the config fields' types.
    """
    changed = {k: v for k, v in values.items() if config_value(config, k) != v}
    for key, value in changed.items():
        config = _set(config, key.split("."), value)
    return config


def _set(node: BaseModel, path: list[str], value: Any) -> Any:
    head, *rest = path
    new = _set(getattr(node, head), rest, value) if rest else value
    return node.model_copy(update={head: new})
