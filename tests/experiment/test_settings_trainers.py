"""The settings check and the online trainers: a run folder's rows of the old
``mean_teacher`` (today's ``mean_teacher_cutmix``) are never resumed as the standard Mean
Teacher, and the trainers' global settings bind their stages."""

from __future__ import annotations

from pathlib import Path

import pytest

from imseg.config import build_config
from imseg.errors import ConfigError
from imseg.experiment.settings import (
    DATA_KEY,
    check_settings,
    config_values,
    previous_values,
    study_stages,
)

APPROACHES = ["mean_teacher_im", "mean_teacher_cutmix_im", "fixmatch_im"]


def _row(stage: str, approach: str, generation: int, settings: str) -> dict:
    return {"stage": stage, "approach": approach, "generation": generation, "settings": settings}


def _older_folder(run: Path) -> tuple[dict, list[dict]]:
    """Values recorded by an imseg without ``ssl.online`` and rows of every trainer's
    generations 0 and 1 under them; returns today's values and those rows."""
    run.mkdir()
    config = build_config(overrides={"ssl": {"approaches": APPROACHES}})
    today = {**config_values(config), DATA_KEY: "d0"}
    older = {k: v for k, v in today.items() if not k.startswith("ssl.online.")}
    old_id = check_settings(run, older, config, [])
    rows = [_row(stage, approach, g, old_id) for stage, approach, g in [
        ("ldt", "mean_teacher", 0), ("ssl", "mean_teacher_im", 1),
        ("ldt", "mean_teacher_cutmix", 0), ("ssl", "mean_teacher_cutmix_im", 1),
        ("ldt", "fixmatch", 0), ("ssl", "fixmatch_im", 1)]]
    return today, rows


def test_older_mean_teacher_rows_stop_the_standard_mean_teacher(tmp_path):
    today, rows = _older_folder(tmp_path / "run")
    config = build_config(overrides={"ssl": {"approaches": APPROACHES}})
    with pytest.raises(ConfigError) as err:
        check_settings(tmp_path / "run", today, config, rows, study_stages(config))
    text = str(err.value)
    assert "ssl.online.mean_teacher.noise_std: 0.0 → 0.1" in text
    assert "mean_teacher (ldt) g0" in text and "mean_teacher_im g1" in text
    assert "cutmix" not in text and "fixmatch" not in text  # their steps did not change
    assert "continue as before" not in text  # no --set gives the old method back


def test_the_other_trainers_older_rows_resume(tmp_path):
    today, rows = _older_folder(tmp_path / "run")
    config = build_config(overrides={"ssl": {"approaches": APPROACHES[1:]}})
    check_settings(tmp_path / "run", today, config, rows, study_stages(config))


def test_a_changed_global_weak_view_stops_the_stages_that_read_it(tmp_path):
    """The trainer's stage keeps its name under a config-wide view (a preset's), so the
    settings check, not a new stage beside the old one, meets the change."""
    today, rows = _older_folder(tmp_path / "run")
    config = build_config(overrides={"ssl": {"approaches": ["fixmatch_im"],
                                             "online": {"weak_view": "scale_crop"}}})
    values = {**config_values(config), DATA_KEY: "d0"}
    with pytest.raises(ConfigError, match=r"weak_view: flips_rotations → scale_crop   "
                                          r"\(fixmatch \(ldt\) g0, fixmatch_im g1\)"):
        check_settings(tmp_path / "run", values, config, rows, study_stages(config))


def test_an_older_config_yaml_gets_the_nested_old_values():
    raw = previous_values({"ssl": {"generations": 2}})
    assert raw["ssl"]["generations"] == 2
    assert raw["ssl"]["online"]["mean_teacher"]["noise_std"] == 0.0
    assert build_config(overrides=raw).ssl.online.mean_teacher.noise_std == 0.0
