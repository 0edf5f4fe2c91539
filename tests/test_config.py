import importlib.util
from pathlib import Path

import pytest
import yaml

from imseg.config import CONFIG_DIR, build_config, parse_override
from imseg.errors import ConfigError


def test_defaults_are_the_reference_settings():
    cfg = build_config()
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.batch_size, cfg.train.epochs) == (
        0.003, 1e-4, 32, 50)
    assert (cfg.benchmark.candidates, cfg.benchmark.keep, cfg.benchmark.aldt_copies) == (10, 4, 9)
    assert cfg.ssl.noise.max_blur == [0, 1, 1, 2, 3]


def test_layers_yaml_then_flags_then_set(tmp_path: Path):
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  epochs: 7\n  lr: 0.01\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\ntrain:\n  epochs: 9\n")
    cfg = build_config([child], {"train": {"batch_size": 4}}, ["train.lr=0.5", "ssl.teachers=[2,3]"])
    assert cfg.train.epochs == 9          # child overrides base
    assert cfg.train.batch_size == 4      # flag
    assert cfg.train.lr == 0.5            # --set wins over the file
    assert cfg.ssl.teachers == [2, 3]


def test_unknown_key_is_rejected_with_its_path(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key"):
        build_config([bad])


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        build_config(sets=["train.epochs=many"])
    with pytest.raises(ConfigError, match="override"):
        parse_override("train.epochs")


def test_missing_file_and_base_cycle(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        build_config([tmp_path / "nope.yaml"])
    a = tmp_path / "a.yaml"
    a.write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        build_config([a])


def test_base_may_name_a_preset(tmp_path: Path):
    child = tmp_path / "mine.yaml"
    child.write_text("base: quick\ntrain:\n  epochs: 50\n")
    cfg = build_config([child])
    quick = build_config(["quick"])
    assert cfg.train.epochs == 50
    assert cfg.ssl.approaches == quick.ssl.approaches != build_config().ssl.approaches
    child.write_text("base: no_such_preset\n")
    with pytest.raises(ConfigError, match="no_such_preset"):
        build_config([child])


def test_every_preset_validates():
    presets = sorted(CONFIG_DIR.glob("*.yaml"))
    assert presets, "configs/ holds the presets"
    has_smp = importlib.util.find_spec("segmentation_models_pytorch") is not None
    for preset in presets:
        if "model" in yaml.safe_load(preset.read_text()) and not has_smp:
            continue  # names an encoder model: validated where the models extra is
        build_config([preset])


def test_noise_schedule_repeats_its_last_entry():
    s = build_config().ssl.noise
    assert s.at(1, "max_noise") == 5
    assert s.at(5, "max_noise") == 25
    assert s.at(9, "max_noise") == 25


def test_eval_batch_follows_the_training_batch_unless_set():
    assert build_config(overrides={"train": {"batch_size": 8}}).train.eval_batch == 8
    cfg = build_config(overrides={"train": {"batch_size": 8, "eval_batch_size": 3}})
    assert cfg.train.eval_batch == 3
    with pytest.raises(ConfigError):
        build_config(overrides={"train": {"eval_batch_size": 0}})


def test_each_set_changes_one_value_of_a_recipe(tmp_path: Path):
    """Two ``--set``s on one recipe both hold, and a ``--set`` keeps the rest of a recipe
    that a config file gave (a file's recipe still replaces an earlier one whole)."""
    path = tmp_path / "mine.yaml"
    path.write_text("recipes:\n  mine: {teachers: top_n, labeler: {name: inconsistency, dilate: 3}}\n")
    cfg = build_config([path], sets=["recipes.fixmatch_im.labeler.block_input=true",
                                     "recipes.fixmatch_im.trainer.threshold=0.9",
                                     "recipes.mine.labeler.block_input=false"])
    assert cfg.recipes["fixmatch_im"]["labeler"] == {"block_input": True}
    assert cfg.recipes["fixmatch_im"]["trainer"] == {"threshold": 0.9}
    assert cfg.recipes["mine"] == {"teachers": "top_n", "labeler": {
        "name": "inconsistency", "dilate": 3, "block_input": False}}
    later = tmp_path / "later.yaml"
    later.write_text("recipes:\n  mine: {teachers: top_1}\n")
    assert build_config([path, later]).recipes["mine"] == {"teachers": "top_1"}
