"""What a run folder's numbers depend on, recorded once and checked on every later start.

A run folder resumes by skipping every model whose row is in results.csv. That is
only right while the settings that shape a model's numbers stay the same: a run
started with 2 epochs and resumed with 7 would otherwise put 2- and 7-epoch
models into one stage without a word. So the first start records a *fingerprint*
(every config value that changes numbers, plus a hash of the data) in
``RUN/settings.yaml``, and a later start with different values stops before any
work and lists them. ``--accept-new-settings`` continues under the new values on
purpose; every results row names the fingerprint it was trained under
(``settings`` column), and settings.yaml keeps each fingerprint's values.

Free settings (they select *which* models to train or where, not their numbers):
``device``, ``train.compile_inference`` (like the device, it moves the last bits of a
teacher's output), and the ``ssl`` keys that only widen or narrow the study.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import yaml

from imseg.config import Config
from imseg.data.dataset import Dataset
from imseg.errors import ConfigError
from imseg.storage import atomic_write_text

SETTINGS_FILE = "settings.yaml"

FREE_KEYS: frozenset[str] = frozenset({
    "device",  # numbers are reproducible per machine type anyway (see README)
    "train.compile_inference",  # compiled teachers differ from eager ones in the last bits only
    "ssl.approaches", "ssl.runs", "ssl.teachers", "ssl.generations",
    "ssl.samples_per_generation", "benchmark.keep",
})
"""Config keys a resumed run may change freely."""

BEFORE_IT_EXISTED: dict[str, object] = {"train.bn_stats": "running"}
"""What a setting amounted to in runs made before imseg had it, where that differs from
today's default (a missing key otherwise counts as the default)."""

DATA_KEY = "data"
"""The fingerprint's entry for the data set's content."""


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


def settings_of(config: Config, dataset: Dataset) -> dict[str, object]:
    """The values a model's numbers depend on, as flat ``key: value`` pairs."""
    flat = flatten(config.model_dump(mode="json"))
    values = {k: v for k, v in flat.items() if k not in FREE_KEYS}
    values[DATA_KEY] = data_hash(dataset)
    return values


def fingerprint(values: dict[str, object]) -> str:
    """A short id of a settings dict (the ``settings`` column of results.csv)."""
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def differences(old: dict[str, object], new: dict[str, object]) -> list[str]:
    """``key: old → new`` for every key whose value differs.

    A key the old record lacks (a setting added by a newer imseg) counts as what
    that imseg did: :data:`BEFORE_IT_EXISTED`, else the code default.
    """
    return [f"{key}: {_show(before)} → {_show(after)}" for key, before, after in _changed(old, new)]


def _changed(old: dict[str, object], new: dict[str, object]) -> list[tuple[str, object, object]]:
    """(key, old value, new value) of every differing key (see :func:`differences`)."""
    defaults = {**settings_of_defaults(), **BEFORE_IT_EXISTED}
    out = []
    for key in sorted(set(old) | set(new)):
        before = old.get(key, defaults.get(key, "(not set)"))
        after = new.get(key, defaults.get(key, "(not set)"))
        if _canonical(before) != _canonical(after):
            out.append((key, before, after))
    return out


def settings_of_defaults() -> dict[str, object]:
    return {k: v for k, v in flatten(Config().model_dump(mode="json")).items()
            if k not in FREE_KEYS}


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _show(value: object) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def check_settings(run_dir: Path, values: dict[str, object], command: str = "",
                   accept_new: bool = False, previous: Config | None = None) -> str:
    """Record or check the run folder's fingerprint; return the one in force.

    Raises ConfigError, before any work, when the folder holds results made
    under other settings and ``accept_new`` is False. ``previous``: the config.yaml
    of a folder made before fingerprints were recorded (its data assumed unchanged).
    """
    path = Path(run_dir) / SETTINGS_FILE
    record = _read(path)
    new_id = fingerprint(values)
    if record is None and previous is not None and _has_results(run_dir):
        old = {k: v for k, v in flatten(previous.model_dump(mode="json")).items()
               if k not in FREE_KEYS}
        old[DATA_KEY] = values[DATA_KEY]
        old_id = fingerprint(old)
        record = {"current": old_id, "history": {old_id: _entry(old, "(config.yaml of an "
                                                                  "earlier imseg)")}}
    if record is None or not _has_results(run_dir):
        history = {new_id: _entry(values, command)}
    else:
        current = record["current"]
        history = record["history"]
        if current == new_id or _same(history[current]["values"], values):
            return current
        changed = differences(history[current]["values"], values)
        if not accept_new:
            listed = "\n".join(f"  {line}" for line in changed)
            raise ConfigError(
                f"{run_dir} holds results trained under other settings; continuing would mix "
                f"them in one results table:\n{listed}\n"
                "Use a new --out for these settings, or pass --accept-new-settings to continue "
                f"in this folder under them (results.csv records each row's settings id, "
                f"{SETTINGS_FILE} the values of each id)"
                + _restoring(history[current]["values"], values) + ".")
        history.setdefault(new_id, _entry(values, command, changed))
    atomic_write_text(path, yaml.safe_dump({"current": new_id, "history": history},
                                           sort_keys=False, allow_unicode=True))
    return new_id


def _restoring(old: dict[str, object], new: dict[str, object]) -> str:
    """``, or continue as before with --set k=v ...`` when plain settings changed."""
    flags = []
    for key, before, _ in _changed(old, new):
        if key == DATA_KEY or not isinstance(before, (str, int, float, bool, type(None))):
            return ""  # the data or a list changed: no flags give the old run back
        flags.append(f"--set {key}={yaml.safe_dump(before).splitlines()[0]}")
    return f", or continue as before with {' '.join(flags)}" if flags else ""


def previous_values(raw: dict) -> dict:
    """An older run's config.yaml (``raw``), with what its imseg did for settings it lacked."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for dotted, value in BEFORE_IT_EXISTED.items():
        section, key = dotted.split(".")
        raw.setdefault(section, {}).setdefault(key, value)
    return raw


def _same(old: dict[str, object], new: dict[str, object]) -> bool:
    return not differences(old, new)


def _entry(values: dict[str, object], command: str, changed: list[str] | None = None) -> dict:
    entry = {"since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command, "values": values}
    if changed:
        entry["changed"] = changed
    return entry


def _read(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        record = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); restore it or use a new --out") from None
    if not isinstance(record, dict) or record.get("current") not in (record.get("history") or {}):
        raise ConfigError(f"{path}: not an imseg settings record; restore it or use a new --out")
    return record


def _has_results(run_dir: Path) -> bool:
    """Whether any model was trained in the folder (a fingerprint alone binds nothing)."""
    return (Path(run_dir) / "results.csv").is_file() or (Path(run_dir) / "models").is_dir()
