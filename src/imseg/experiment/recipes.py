"""Approaches as recipes: each names the parts the one generation loop plugs in."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import yaml

from imseg.config import Config, Section
from imseg.errors import ConfigError

BUILTIN_FILE = Path(__file__).with_name("recipes.yaml")


class Recipe(Section):
    """The parts of one approach (docs/architecture.md)."""

    description: str = ""
    teachers: Literal["top_1", "top_n", "all"] = "top_n"
    labeler: str = "inconsistency"
    noise: Literal["none", "noisy_student"] = "none"
    students: Literal["fixed", "growing"] = "fixed"
    copies: Literal["none", "one", "evalnet"] = "none"
    keep_originals: bool = False
    start: Literal["ldt", "aldt"] = "ldt"
    mode: Literal["generations", "consistency"] = "generations"
    uses_evalnet: bool = False

    @property
    def per_teacher_count(self) -> bool:
        """Whether the chain depends on n (teachers, or the input ensemble's views)."""
        return self.mode == "generations" and (
            self.teachers == "top_n" or self.labeler == "input_ensemble"
        )


@cache
def builtin_recipes() -> dict[str, dict]:
    return yaml.safe_load(BUILTIN_FILE.read_text())


def recipes_of(config: Config) -> dict[str, Recipe]:
    """Built-in recipes, overridden or extended by the config's ``recipes:`` section."""
    merged = {**builtin_recipes()}
    for name, parts in config.recipes.items():
        merged[name] = {**merged.get(name, {}), **parts}
    out = {}
    for name, parts in merged.items():
        try:
            out[name] = Recipe.model_validate(parts)
        except Exception as exc:  # pydantic's message names the bad part
            raise ConfigError(f"recipe {name!r}: {exc}") from None
    return out


def resolve_recipes(config: Config, names: list[str]) -> dict[str, Recipe]:
    """The recipes a run asks for, with a clear error for unknown names or labelers."""
    from imseg.pseudo.labelers import LABELERS

    available = recipes_of(config)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError(f"unknown approaches {unknown}; available: {sorted(available)}")
    chosen = {n: available[n] for n in names}
    for name, recipe in chosen.items():
        if recipe.mode == "generations" and recipe.labeler not in LABELERS:
            raise ConfigError(f"recipe {name!r}: unknown labeler {recipe.labeler!r}; "
                              f"available: {sorted(LABELERS)}")
    return chosen
