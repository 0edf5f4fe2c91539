"""Approaches as recipes: each names the parts the one generation loop plugs in.

A part is a bare name or a mapping with settings (:mod:`imseg.parts`; the kinds:
:mod:`imseg.experiment.part_kinds`); settings a recipe gives override the config's
global ones for that recipe only: the parts carry them to the code that uses them.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from imseg.config import Config, Section
from imseg.errors import ConfigError
from imseg.experiment.part_kinds import (
    PART_KINDS,
    NoisePart,
    StartPart,
    StudentsPart,
    TeacherPart,
)
from imseg.parts import Needs, Part, with_values
from imseg.pseudo.copies import CopiesPart
from imseg.pseudo.labelers import LabelerPart
from imseg.training.trainers import TRAINERS, TrainerPart

BUILTIN_FILE = Path(__file__).with_name("recipes.yaml")


class Recipe(Section):
    """The parts of one approach (docs/architecture.md). Validate with
    ``context={"config": ..., "recipe": name}`` so parts take the config's global settings."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    description: str = ""
    teachers: TeacherPart = "top_n"  # type: ignore[assignment]
    labeler: LabelerPart = "inconsistency"  # type: ignore[assignment]
    copies: CopiesPart = "none"  # type: ignore[assignment]
    noise: NoisePart = "none"  # type: ignore[assignment]
    students: StudentsPart = "fixed"  # type: ignore[assignment]
    start: StartPart = "ldt"  # type: ignore[assignment]
    trainer: TrainerPart = "supervised"  # type: ignore[assignment]
    generations: int | None = Field(None, ge=1, description="at most this many generations "
                                    "(None: ssl.generations)")

    @model_validator(mode="before")
    @classmethod
    def _older_keys(cls, data: Any) -> Any:
        """Recipes written before parts had settings: ``mode: consistency`` is the
        consistency trainer without pseudo labels for one generation; ``keep_originals``
        is a setting of ``copies``; ``uses_evalnet`` follows from the parts."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        data.pop("uses_evalnet", None)
        mode = data.pop("mode", "generations")
        if mode not in ("generations", "consistency"):
            raise ValueError(f"mode must be generations or consistency, got {mode!r}")
        if mode == "consistency":
            data.setdefault("labeler", "none")
            data.setdefault("trainer", "consistency")
            data.setdefault("generations", 1)
        if "keep_originals" in data:
            copies = data.get("copies", "none")
            copies = {"name": copies} if isinstance(copies, str) else dict(copies)
            copies["keep_originals"] = data.pop("keep_originals")
            data["copies"] = copies
        return data

    @field_validator(*PART_KINDS, mode="before")
    @classmethod
    def _part(cls, value: Any, info: ValidationInfo) -> Part:
        context = info.context or {}
        return PART_KINDS[info.field_name].parse(value, context.get("config") or Config(),
                                                 f"recipe {context.get('recipe', '?')!r}")

    # ------------------------------------------------------------------ what it needs
    def parts(self) -> list[Part]:
        return [getattr(self, kind) for kind in PART_KINDS]

    @property
    def needs(self) -> Needs:
        """Everything the recipe's parts need prepared (EvalNet kinds, state, n)."""
        labeler = self.labeler.needs()
        out = Needs()
        for part in self.parts():
            if part is self.copies and labeler.scores_pairs:
                continue  # copies by score reuse the labeler's scores
            out = out | part.needs()
        return out

    @property
    def per_teacher_count(self) -> bool:
        """Whether the chain depends on n (teachers, or the input ensemble's views)."""
        return self.needs.per_teacher_count

    @property
    def uses_evalnet(self) -> bool:
        return bool(self.needs.evalnet_kinds)

    @property
    def start_trainer(self) -> TrainerPart:
        """How generation 0 trains: with the recipe's trainer, except a trainer that
        fine-tunes teachers starts from the supervised benchmark."""
        if self.trainer.FINE_TUNES:
            return TRAINERS.parse("supervised", Config(), "")  # type: ignore[return-value]
        return self.trainer

    @property
    def start_stage(self) -> str:
        """The approach name of generation 0's rows: ``ldt``/``aldt``, or the trainer's stage
        (``fixmatch``, ``aldt_fixmatch``)."""
        trainer = self.start_trainer
        return self.start.name if trainer.supervised else trainer.stage_name(self.start.name)

    def generation_count(self, config: Config) -> int:
        g = config.ssl.generations
        return min(g, self.generations) if self.generations else g

    def recorded_config(self, config: Config) -> Config:
        """What a chain's checkpoints record as their config: ``config`` with the recipe's
        part settings in their global sections (the same object when the recipe overrides
        nothing). Only a record: the chain's code reads the parts."""
        values: dict[str, Any] = {}
        for part in self.parts():
            values.update(part.global_values())
        return with_values(config, values)


@cache
def builtin_recipes() -> dict[str, dict]:
    return yaml.safe_load(BUILTIN_FILE.read_text())


def _merge(base: dict, update: dict) -> dict:
    """A config's recipe over a built-in one; a part given as settings without a name
    (``labeler: {dilate: 3}``) keeps the built-in part and changes those settings."""
    out = {**base, **update}
    for key, value in update.items():
        if key in PART_KINDS and isinstance(value, dict) and "name" not in value and key in base:
            before = base[key]
            out[key] = {**({"name": before} if isinstance(before, str) else before), **value}
    return out


def recipe_entries(config: Config) -> dict[str, dict]:
    """Every recipe as written: built-in ones, overridden or extended by ``recipes:``."""
    merged = {**builtin_recipes()}
    for name, parts in config.recipes.items():
        merged[name] = _merge(merged.get(name, {}), parts)
    return merged


def validate_recipe(name: str, parts: dict, config: Config) -> Recipe:
    try:
        return Recipe.model_validate(parts, context={"config": config, "recipe": name})
    except ConfigError:
        raise
    except Exception as exc:  # pydantic's message names the bad key
        raise ConfigError(f"recipe {name!r}: {exc}") from None


def recipes_of(config: Config) -> dict[str, Recipe]:
    """Every recipe the config knows, validated."""
    return {name: validate_recipe(name, parts, config)
            for name, parts in recipe_entries(config).items()}


def resolve_recipes(config: Config, names: list[str]) -> dict[str, Recipe]:
    """The recipes a run asks for (only those validated), with a clear error for unknown
    names, parts or settings."""
    entries = recipe_entries(config)
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise ConfigError(f"unknown approaches {unknown}; available: {sorted(entries)}")
    return {n: validate_recipe(n, entries[n], config) for n in names}
