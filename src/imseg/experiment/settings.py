"""What a run folder's numbers depend on, recorded on every start and checked per stage.

A run folder resumes by skipping every model whose row is in results.csv. That is
only right while the settings that shape those models' numbers stay the same: a
run started with 2 epochs and resumed with 7 would otherwise put 2- and 7-epoch
models into one stage without a word. So every start records its settings (every
config value that changes numbers, plus a hash of the data) in ``RUN/settings.yaml``
under a short *fingerprint*, and every results row names the fingerprint it was
trained under (``settings`` column).

The check is per *stage* (:class:`Stage`: a benchmark, one generation of an
approach, an EvalNet kind): a stage the command would train into, reuse or extend
that already holds models is compared on the settings **that stage** depends on
(:func:`dependencies_of`): the training, augmentation, model and data settings for a
benchmark; for an SSL generation also its recipe's parts (the global settings they
read, the recipe's own entry under ``recipes:``), the teacher pool (candidates,
students), the Noisy Student schedule up to that generation, and the EvalNet
settings when the recipe uses one. A change no trained model depended on is
recorded and goes on; a change to a setting some stage's models depended on stops
the command before any work, naming those stages. ``--accept-new-settings``
continues anyway; a stage then holds models of both, and either settings resumes
it later without the flag (nothing is locked out by what was accepted, and
accepting on a finished run trains nothing and changes nothing). Summaries keep
rows of different stage settings apart (:func:`settings_groups`).

Free settings (they select *which* models to train or where, not their numbers):
``device``, ``train.compile_inference`` (like the device, it moves the last bits of a
teacher's output), and the ``ssl`` keys that only widen or narrow the study.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import yaml

from imseg.config import Config, TrainConfig, build_config
from imseg.data.dataset import Dataset
from imseg.errors import ConfigError, DataError
from imseg.experiment.part_kinds import PART_KINDS
from imseg.experiment.recipes import recipe_entries, resolve_recipes, validate_recipe
from imseg.results import BENCHMARKS
from imseg.storage import atomic_write_text
from imseg.training.trainers import TRAINERS

SETTINGS_FILE = "settings.yaml"

FREE_KEYS: frozenset[str] = frozenset({
    "device",  # numbers are reproducible per machine type anyway (see README)
    "log.tensorboard",  # where curves are written, not what they show
    "train.compile_inference",  # compiled teachers differ from eager ones in the last bits only
    "train.snapshot_minutes",  # when a model's state is saved, not what it learns
    "ssl.approaches", "ssl.runs", "ssl.teachers", "ssl.generations",
    "ssl.samples_per_generation", "benchmark.keep",
})
"""Config keys a resumed run may change freely."""

BEFORE_IT_EXISTED: dict[str, object] = {
    "train.bn_stats": "running",
    # pretrained encoders were fine-tuned like the rest of the net
    "train.encoder_lr_factor": 1.0, "train.encoder_bn": "train", "train.warmup_epochs": 0,
    # `mean_teacher` was today's mean_teacher_cutmix, without noise on the teacher's input:
    # older mean_teacher rows are not the standard Mean Teacher's
    "ssl.online.mean_teacher.noise_std": 0.0,
}
"""What a setting amounted to in runs made before imseg had it, where that differs from
today's default (a missing key otherwise counts as the default)."""

REDEFINED: frozenset[str] = frozenset({"ssl.online.mean_teacher.noise_std"})
"""Keys of :data:`BEFORE_IT_EXISTED` that mark a method whose name now means another one:
setting the old value back would not train the old method, so no ``--set`` is offered."""

DATA_KEY = "data"
"""The fingerprint's entry for the data set's content."""

EVALNET_STAGE = "evalnet"
"""The ``stage`` of an EvalNet kind (``approach``: the kind); its models are in
evalnet_results.csv, their settings in their checkpoints."""


def flatten(data: dict, prefix: str = "") -> dict[str, object]:
    """``{"train": {"epochs": 3}}`` → ``{"train.epochs": 3}`` (lists and user recipes kept whole)."""
    out: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and name != "recipes":
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def data_hash(dataset: Dataset) -> str:
    """A short hash of what the data set holds: its task, classes (and headline classes),
    size, scoring unit, splits and pixels."""
    h = hashlib.sha256()
    info = dataset.info
    described = [info.task, info.classes, list(info.image_size), info.channels]
    if info.headline_classes:  # only then: older runs' hashes stay as they were
        described.append(info.headline_classes)
    if info.whole_image_scores:  # scores differ: a resume must not mix them
        described.append("whole_image_scores")
    h.update(json.dumps(described, default=str).encode())
    for split in (dataset.labeled, dataset.unlabeled, dataset.val, dataset.test):
        h.update(json.dumps(split.stems).encode())
        h.update(np.ascontiguousarray(split.images.numpy()))  # no copy: hashed in place
        if split.labels is not None:
            h.update(np.ascontiguousarray(split.labels.numpy()))
    return h.hexdigest()[:16]


def config_values(config: Config) -> dict[str, object]:
    """A config's values that shape numbers, flat (the data's hash not included)."""
    return shaping_numbers(flatten(config.model_dump(mode="json")))


def shaping_numbers(flat: dict[str, object]) -> dict[str, object]:
    """The flat config values that shape numbers: not the free keys, and the fine-tuning
    settings only where the encoder starts from pretrained weights."""
    unread = FREE_KEYS
    if flat.get("model.weights", "none") == "none":
        unread = unread | {f"train.{key}" for key in TrainConfig.FINE_TUNING}
    return {k: v for k, v in flat.items() if k not in unread}


def settings_of(config: Config, dataset: Dataset) -> dict[str, object]:
    """The values a model's numbers depend on, as flat ``key: value`` pairs."""
    return {**config_values(config), DATA_KEY: data_hash(dataset)}


def fingerprint(values: dict[str, object]) -> str:
    """A short id of a settings dict (the ``settings`` column of results.csv)."""
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# ----------------------------------------------------------------------------- stages
@dataclass(frozen=True, order=True)
class Stage:
    """Models trained together: a benchmark, one generation of an approach, an EvalNet
    kind. As results rows name them (runs and teacher counts share the settings)."""

    stage: str
    approach: str
    generation: int = 0

    @classmethod
    def of(cls, row: dict) -> Stage:
        return cls(str(row["stage"]), str(row["approach"]), int(row.get("generation") or 0))

    def __str__(self) -> str:
        if self.stage == EVALNET_STAGE:
            return f"EvalNets {self.approach}"
        if self.stage in ("ssl", self.approach):
            return f"{self.approach} g{self.generation}"
        return f"{self.approach} ({self.stage}) g{self.generation}"


def benchmark_stage(name: str, trainer=None) -> Stage:
    """The stage ``imseg train --benchmark name [--trainer ...]`` trains."""
    supervised = trainer is None or trainer.supervised
    return Stage(name, name if supervised else trainer.stage_name(name))


def study_stages(config: Config) -> list[Stage]:
    """Every stage ``imseg run`` with this config may train, reuse or extend: LDT, each
    recipe's start stage, the EvalNet kinds (and the stages they learn from), and each
    recipe's generations."""
    stages = [Stage("ldt", "ldt")]
    for name, recipe in resolve_recipes(config, config.ssl.approaches).items():
        stages.append(Stage(recipe.start.name, recipe.start_stage))
        for kind in recipe.needs.evalnet_kinds:
            stages.append(Stage(EVALNET_STAGE, kind))
            if kind == "evalnet":  # it learns from the ALDT models' masks too
                stages.append(Stage("aldt", "aldt"))
        stages += [Stage("ssl", name, g) for g in range(1, recipe.generation_count(config) + 1)]
    return list(dict.fromkeys(stages))


@dataclass(frozen=True)
class Dependencies:
    """The settings a stage's models depend on: whole sections, single keys, the recipe's
    own entry, and schedules cut to the generation."""

    prefixes: tuple[str, ...] = ()
    keys: frozenset[str] = frozenset()
    excluded: frozenset[str] = frozenset()
    recipe: str | None = None
    generation: int | None = None

    def covers(self, key: str) -> bool:
        if key in self.keys:
            return True
        return key not in self.excluded and any(key.startswith(p) for p in self.prefixes)

    def select(self, values: dict[str, object]) -> dict[str, object]:
        """Those settings of ``values`` (a key it lacks counts as what its imseg did)."""
        defaults = known_defaults()
        out = {k: values.get(k, defaults.get(k)) for k in {*values, *defaults} if self.covers(k)}
        for key, value in out.items():
            if self.generation and key.startswith(SCHEDULES) and isinstance(value, list):
                out[key] = value[:self.generation]  # later entries: later generations only
        if self.recipe is not None:
            out[f"recipes.{self.recipe}"] = (values.get("recipes") or {}).get(self.recipe)
        return out

    def __or__(self, other: Dependencies) -> Dependencies:
        return Dependencies(self.prefixes + other.prefixes, self.keys | other.keys,
                            self.excluded | other.excluded, self.recipe or other.recipe,
                            self.generation or other.generation)


SCHEDULES = ("ssl.noise.", "model.student_encoders")
"""Lists with one entry per generation."""

EVERYTHING = Dependencies(prefixes=("",))
"""A stage this imseg does not know depends on every setting."""


def benchmark_dependencies(name: str) -> Dependencies:
    """A benchmark's models: training, augmentation, net, seed, data (ALDT: its copies).
    Not the candidate count: more candidates extend a stage without changing its models;
    nor what only pseudo labels and students read."""
    keys = {"seed", DATA_KEY} | ({"benchmark.aldt_copies"} if name == "aldt" else set())
    return Dependencies(("train.", "augment.", "model."), frozenset(keys),
                        frozenset({"model.student_encoders", "train.ignore_im"}))


def evalnet_dependencies(kind: str) -> Dependencies:
    """An EvalNet kind's nets: the stages whose masks they learn from (all candidates) and
    the EvalNet and IM-blocking settings."""
    learns_from = benchmark_dependencies("aldt" if kind == "evalnet" else "ldt")
    own = Dependencies(("evalnet.",), frozenset({
        "benchmark.candidates", "ssl.pseudo_batch_size", "ssl.inconsistency.block_input",
        "ssl.inconsistency.block_output", "train.ignore_im"}))
    return learns_from | own


def trainer_dependencies(stage: Stage) -> Dependencies:
    """A benchmark stage trained by an online trainer (approach ``mean_teacher``,
    ``aldt_fixmatch_1a2b3c``) depends on the global settings that trainer reads too."""
    name = stage.approach.removeprefix(f"{stage.stage}_")
    for trainer, part in TRAINERS.classes.items():
        if re.fullmatch(rf"{trainer}(_[0-9a-f]{{6}})?", name):
            return Dependencies(keys=frozenset(part.GLOBALS.values()))
    return Dependencies()


def dependencies_of(stage: Stage, config: Config) -> Dependencies | None:
    """What ``stage``'s models depend on, with ``config``'s recipes; None for the
    generation of a recipe the config does not know (it cannot train it)."""
    if stage.stage in BENCHMARKS:
        return benchmark_dependencies(stage.stage) | trainer_dependencies(stage)
    if stage.stage == EVALNET_STAGE:
        return evalnet_dependencies(stage.approach)
    if stage.stage != "ssl":
        return EVERYTHING
    entry = recipe_entries(config).get(stage.approach)
    if entry is None:
        return None
    try:
        recipe = validate_recipe(stage.approach, entry, config)
    except ConfigError:
        return None  # the command that trains it stops on the same error
    keys = {"benchmark.candidates", "ssl.pseudo_batch_size"}  # generation 1's teacher pool
    if stage.generation > 1:
        keys.add("ssl.students")  # the teacher pool of generation 2 on
    for kind in PART_KINDS:  # global settings its parts read (those the recipe does not set)
        written = entry.get(kind)
        given = set(written) if isinstance(written, dict) else set()
        part = getattr(recipe, kind)
        keys |= {key for name, key in part.GLOBALS.items() if name not in given}
        keys |= set(part.READS)
    own = Dependencies(keys=frozenset(keys), recipe=stage.approach, generation=stage.generation)
    deps = benchmark_dependencies(recipe.start.name) | own
    for kind in recipe.needs.evalnet_kinds:
        deps = deps | evalnet_dependencies(kind)
    return deps


# ---------------------------------------------------------------------- differences
def differences(old: dict[str, object], new: dict[str, object]) -> list[str]:
    """``key: old → new`` for every key whose value differs.

    A key the old record lacks (a setting added by a newer imseg) counts as what
    that imseg did: :data:`BEFORE_IT_EXISTED`, else the code default.
    """
    return [_line(change) for change in _changed(old, new)]


Change = tuple[str, object, object]
"""(key, old value, new value)."""


def _changed(old: dict[str, object], new: dict[str, object]) -> list[Change]:
    """Every differing key (see :func:`differences`) among those that shape numbers on
    both sides (a record made before a key stopped binding, e.g. fine-tuning settings
    of a net from scratch, still carries it)."""
    defaults = known_defaults()
    old, new = shaping_numbers(old), shaping_numbers(new)
    out = []
    for key in sorted(set(old) | set(new)):
        before = old.get(key, defaults.get(key, "(not set)"))
        after = new.get(key, defaults.get(key, "(not set)"))
        if _canonical(before) != _canonical(after):
            out.append((key, before, after))
    return out


@cache
def _defaults() -> tuple[tuple[str, object], ...]:
    values = {**config_values(Config()), **BEFORE_IT_EXISTED}
    return tuple(values.items())


def known_defaults() -> dict[str, object]:
    """What a key missing from a record amounted to (see :func:`differences`)."""
    return dict(_defaults())


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _show(value: object) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def _line(change: Change) -> str:
    key, before, after = change
    return f"{key}: {_show(before)} → {_show(after)}"


# ---------------------------------------------------------------------------- the check
@dataclass
class Record:
    """settings.yaml's ``history``: each id's values (and command), oldest first. Its
    ``current`` (the latest command's id) is written for people; the check reads rows' ids."""

    history: dict[str, dict] = field(default_factory=dict)

    def entry_of(self, settings_id: str | None) -> str | None:
        """The entry a row's id names; a row without a known id (made before ids were
        recorded) counts as trained under the oldest."""
        if settings_id in self.history:
            return settings_id
        return next(iter(self.history), None)

    def values_of(self, settings_id: str | None) -> dict | None:
        entry = self.entry_of(settings_id)
        return None if entry is None else self.history[entry]["values"]

    def id_of(self, values: dict[str, object]) -> str:
        """The id these values are recorded under (an older record of the same settings
        keeps its id), else their fingerprint."""
        return next((k for k, e in self.history.items() if not differences(e["values"], values)),
                    fingerprint(values))


def check_settings(run_dir: Path, values: dict[str, object], config: Config,
                   rows: list[dict], stages: list[Stage] | None = None, command: str = "",
                   accept_new: bool = False, previous: Config | None = None) -> str:
    """Check the stages the command would touch against the settings their models were
    trained under; record ``values``; return their id (the ``settings`` of new rows).

    ``rows``: results.csv's. ``stages``: those the command may train, reuse or extend
    (None: every stage with models). Raises ConfigError, before any work, when one of
    them holds models made under other settings it depends on and ``accept_new`` is
    False. ``previous``: the config.yaml of a folder made before settings were recorded
    (its data assumed unchanged).
    """
    run_dir = Path(run_dir)
    record = _read(run_dir / SETTINGS_FILE) or _from_config(previous, values)
    trained = trained_stages(run_dir, rows, record, values)
    touched = trained if stages is None else [s for s in dict.fromkeys(stages) if s in trained]
    conflicts = {}
    for stage in touched:
        changes = stage_changes(stage, trained[stage], values, config)
        if changes:
            conflicts[stage] = changes
    if conflicts and not accept_new:
        raise ConfigError(_refusal(run_dir, conflicts))
    new_id = record.id_of(values)
    used = {record.entry_of(r.get("settings")) for r in rows}  # the others bind nothing
    kept = {k: e for k, e in record.history.items() if k in used}
    changed = sorted({_line(c) for changes in conflicts.values() for c in changes})
    kept.setdefault(new_id, _entry(values, command, changed))
    atomic_write_text(run_dir / SETTINGS_FILE,
                      yaml.safe_dump({"current": new_id, "history": kept}, sort_keys=False,
                                     allow_unicode=True))
    return new_id


def stage_changes(stage: Stage, held: list[dict], values: dict[str, object],
                  config: Config) -> list[Change]:
    """What the stage depends on that differs from the settings of its models ([] when
    it already holds models made under ``values``' settings, or cannot be trained)."""
    deps = dependencies_of(stage, config)
    if deps is None:
        return []
    new = deps.select(values)
    changes = [_changed(deps.select(old), new) for old in held]
    return [] if any(not c for c in changes) else changes[0]


def trained_stages(run_dir: Path, rows: list[dict], record: Record,
                   values: dict[str, object]) -> dict[Stage, list[dict]]:
    """Each stage that holds models, with the distinct settings they were trained under."""
    out: dict[Stage, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        held = record.values_of(row.get("settings"))
        if held is not None:
            out[Stage.of(row)][fingerprint(held)] = held
    for kind, held in evalnet_settings(run_dir, values).items():
        out[Stage(EVALNET_STAGE, kind)].update({fingerprint(v): v for v in held})
    return {stage: list(held.values()) for stage, held in out.items()}


def evalnet_settings(run_dir: Path, values: dict[str, object]) -> dict[str, list[dict]]:
    """Per EvalNet kind, the settings its nets were trained under (from their checkpoints;
    their data is the LDT models', checked with those)."""
    from imseg.evalnet.table import EvalNetTable
    from imseg.storage import load_checkpoint

    path = Path(run_dir) / "evalnet_results.csv"
    if not path.is_file():
        return {}
    out: dict[str, list[dict]] = defaultdict(list)
    for row in EvalNetTable(path).rows:
        try:
            config = load_checkpoint(Path(run_dir) / str(row["checkpoint"])).get("config")
        except (DataError, OSError, RuntimeError, EOFError, ValueError):
            continue  # lost or unreadable: the EvalNet stage says so when it loads it
        if isinstance(config, dict):
            held = shaping_numbers(flatten(config))
            out[row["kind"]].append({**held, DATA_KEY: values.get(DATA_KEY)})
    return out


def _refusal(run_dir: Path, conflicts: dict[Stage, list[Change]]) -> str:
    """The error: each changed setting with the stages whose models depended on it."""
    where: dict[str, list[str]] = defaultdict(list)
    for stage, changes in sorted(conflicts.items()):
        for change in changes:
            where[_line(change)].append(str(stage))
    listed = "\n".join(f"  {line}   ({_stages_text(names)})" for line, names in sorted(where.items()))
    first = [c for changes in conflicts.values() for c in changes]
    return (f"{run_dir} holds models trained under other settings that this command would "
            f"reuse or extend; continuing would mix them in one stage:\n{listed}\n"
            "Use a new --out for these settings, or pass --accept-new-settings to continue "
            f"in this folder under them (results.csv records each row's settings id, "
            f"{SETTINGS_FILE} the values of each id)" + _restoring(first) + ".")


def _stages_text(names: list[str]) -> str:
    shown = ", ".join(names[:4])
    return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _restoring(changes: list[Change]) -> str:
    """``, or continue as before with --set k=v ...`` when plain settings changed."""
    flags = {}
    for key, before, _ in changes:
        if key in (DATA_KEY, *REDEFINED) or "recipes" in key or \
                not isinstance(before, (str, int, float, bool, type(None))):
            return ""  # the data, a recipe or a list changed: no flags give the old run back
        flags[key] = f"--set {key}={yaml.safe_dump(before).splitlines()[0]}"
    return f", or continue as before with {' '.join(flags.values())}" if flags else ""


def previous_values(raw: dict) -> dict:
    """An older run's config.yaml (``raw``), with what its imseg did for settings it lacked."""
    raw = copy.deepcopy(raw)
    for dotted, value in BEFORE_IT_EXISTED.items():
        *sections, key = dotted.split(".")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
        node.setdefault(key, value)
    return raw


def recorded_config(run_dir: Path) -> Config | None:
    """The config.yaml of a run folder (the latest command's; in a folder made before
    settings were recorded, the one its models were trained under); None if unreadable."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return build_config(overrides=previous_values(raw)) if isinstance(raw, dict) else None
    except (ConfigError, yaml.YAMLError):
        return None


def _from_config(previous: Config | None, values: dict[str, object]) -> Record:
    """The record of a folder from before settings.yaml: its config.yaml's values."""
    if previous is None:
        return Record()
    old = {**config_values(previous), DATA_KEY: values[DATA_KEY]}
    return Record({fingerprint(old): _entry(old, "(config.yaml of an earlier imseg)")})


def _entry(values: dict[str, object], command: str, changed: list[str] | None = None) -> dict:
    entry = {"since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command, "values": values}
    if changed:
        entry["changed"] = changed
    return entry


def _read(path: Path) -> Record | None:
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); restore it or use a new --out") from None
    if not isinstance(data, dict) or data.get("current") not in (data.get("history") or {}):
        raise ConfigError(f"{path}: not an imseg settings record; restore it or use a new --out")
    return Record(dict(data["history"]))


# ------------------------------------------------------------------------- summaries
def settings_groups(run_dir: Path, rows: list[dict], config: Config | None = None) -> list[str]:
    """Per row, an id of the settings its stage depends on, so that summaries pool only
    rows made under the same ones (rows of one stage from different commands whose
    changes did not touch that stage share a group). ``config``: whose recipes (default:
    the folder's config.yaml); a row whose settings are unknown keeps its own id."""
    try:
        record = _read(Path(run_dir) / SETTINGS_FILE) or Record()
    except ConfigError:
        record = Record()
    config = config or recorded_config(run_dir) or Config()
    deps_of: dict[Stage, Dependencies | None] = {}
    out = []
    for row in rows:
        stage = Stage.of(row)
        if stage not in deps_of:
            deps_of[stage] = dependencies_of(stage, config)
        held = record.values_of(row.get("settings")) if record.history else None
        deps = deps_of[stage]
        out.append(fingerprint(deps.select(held)) if held is not None and deps is not None
                   else str(row.get("settings") or ""))
    return out


def mixed_settings_note(run_dir: Path, rows: list[dict]) -> str:
    """A warning when ``rows`` (models used together) were trained under different
    settings of their stage; else ''."""
    groups = settings_groups(run_dir, rows)
    if len(set(groups)) < 2:
        return ""
    ids = sorted({str(r.get("settings") or "?") for r in rows})
    return (f"these models were trained under different settings ({', '.join(ids)}; "
            f"{Path(run_dir) / SETTINGS_FILE} lists their values)")
