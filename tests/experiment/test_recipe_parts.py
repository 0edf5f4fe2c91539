"""Recipe parts with settings: parsing, validation, per-recipe overrides, what they need."""

from __future__ import annotations

import pytest

from imseg.config import ModelConfig, build_config
from imseg.errors import ConfigError
from imseg.experiment.loop import chain_context, start_stages
from imseg.experiment.part_kinds import PART_KINDS
from imseg.experiment.recipes import Recipe, recipes_of, resolve_recipes


def _recipes(**recipes) -> dict[str, Recipe]:
    return recipes_of(build_config(overrides={"recipes": recipes}))


def test_a_bare_name_takes_defaults_and_a_mapping_sets_settings():
    r = _recipes(a={"labeler": "inconsistency"}, b={"labeler": {"name": "inconsistency",
                                                               "dilate": 3}},
                 c={"trainer": {"name": "unimatch", "threshold": 0.9}})
    assert r["a"].labeler.dilate == 0 and r["b"].labeler.dilate == 3
    assert r["a"].labeler == "inconsistency"  # a part compares equal to its name
    assert r["c"].trainer.threshold == 0.9 and r["c"].trainer.strong_weights == (0.25, 0.25)


def test_recipe_settings_override_the_global_section_for_that_recipe_only():
    config = build_config(overrides={
        "ssl": {"inconsistency": {"dilate": 5}},
        "recipes": {"wide": {"labeler": {"name": "inconsistency", "dilate": 7}},
                    "plain": {"labeler": "inconsistency"}}})
    recipes = recipes_of(config)
    assert recipes["plain"].labeler.dilate == 5  # the global value
    assert recipes["wide"].labeler.dilate == 7  # the part carries it to the labeler
    assert recipes["wide"].recorded_config(config).ssl.inconsistency.dilate == 7  # checkpoints
    assert recipes["plain"].recorded_config(config) is config
    assert config.ssl.inconsistency.dilate == 5  # the study's config is untouched
    # a built-in recipe changed by settings without a name keeps its part
    tuned = recipes_of(build_config(overrides={"recipes": {"im": {"labeler": {"erode": 3}}}}))
    assert tuned["im"].labeler == "inconsistency" and tuned["im"].labeler.erode == 3


def test_unknown_parts_and_settings_are_errors_naming_the_recipe():
    with pytest.raises(ConfigError, match=r"recipe 'x': labeler: unknown labeler 'magic'"):
        _recipes(x={"labeler": "magic"})
    with pytest.raises(ConfigError, match=r"recipe 'y': labeler inconsistency: unknown "
                                          r"setting 'dilation' \(settings: erode, dilate"):
        _recipes(y={"labeler": {"name": "inconsistency", "dilation": 3}})
    with pytest.raises(ConfigError, match=r"recipe 'z': trainer unimatch: threshold"):
        _recipes(z={"trainer": {"name": "unimatch", "threshold": 1.5}})
    with pytest.raises(ConfigError, match="recipe 'w': trainer: unknown trainer 'fixmath'"):
        _recipes(w={"trainer": "fixmath"})
    with pytest.raises(ConfigError, match="recipe 'v'"):
        _recipes(v={"mode_of_operation": "fast"})


def test_older_recipe_keys_still_read():
    r = _recipes(old_cl={"teachers": "top_1", "mode": "consistency"},
                 old_aim={"labeler": "inconsistency", "copies": "one", "keep_originals": True,
                          "uses_evalnet": False})
    assert r["old_cl"].trainer == "consistency" and r["old_cl"].labeler == "none"
    assert r["old_cl"].generations == 1
    assert r["old_aim"].copies == "one" and r["old_aim"].copies.keep_originals


def test_parts_state_what_they_need():
    r = recipes_of(build_config())
    assert r["evalnet"].needs.evalnet_kinds == ("evalnet",)
    assert r["evalnet"].needs.state == "evalnet_select"
    assert r["im_plus_plus"].needs.evalnet_kinds == ("im_plus_plus",)
    assert not r["im"].uses_evalnet and r["im"].per_teacher_count
    assert not r["noisy_student"].per_teacher_count and not r["consistency_loss"].per_teacher_count
    assert r["input_ensemble"].per_teacher_count  # 2n - 1 views
    # generation 0: the trainer's own stage; the consistency loss fine-tunes supervised LDT
    assert r["unimatch_im"].start_stage == "unimatch"
    assert r["consistency_loss"].start_stage == "ldt" and r["aim_plus"].start_stage == "aldt"
    stages = start_stages({k: r[k] for k in ("im", "aim_plus", "unimatch_im", "fixmatch_im")})
    assert [(name, t.name if t else None) for name, t in stages] == [
        ("ldt", None), ("aldt", "supervised"), ("ldt", "unimatch"), ("ldt", "fixmatch")]


def test_im_on_online_trainers_leaves_im_pixels_out_of_the_loss_by_default():
    config = build_config()
    for name in ("fixmatch_im", "unimatch_im", "mean_teacher_im"):
        labeler = resolve_recipes(config, [name])[name].labeler
        assert labeler.ignore_im and not labeler.block_input and labeler.block_output
    blocked = _recipes(my_im={"trainer": "unimatch",
                              "labeler": {"name": "inconsistency", "block_input": True}})
    assert blocked["my_im"].labeler.block_input


def test_chain_context_shares_the_run_and_records_the_recipes_settings(binary_data, tmp_path,
                                                                       tiny_config):
    from imseg.experiment.context import RunContext

    ctx = RunContext.open(binary_data, tmp_path / "run", tiny_config, progress=False)
    recipes = recipes_of(tiny_config)
    assert chain_context(ctx, recipes["im"]) is ctx
    chain_ctx = chain_context(ctx, recipes["unimatch_im"])
    assert chain_ctx.config.train.ignore_im and not ctx.config.train.ignore_im
    assert chain_ctx.results is ctx.results and chain_ctx.dataset is ctx.dataset
    ctx.close()


def test_ssl_keep_of_older_configs_is_read_and_dropped():
    config = build_config(overrides={"ssl": {"keep": 3}})
    assert "keep" not in config.ssl.model_dump()


def test_every_recipe_field_of_a_part_kind_has_its_registry():
    fields = [f for f in Recipe.model_fields if f not in ("description", "generations")]
    assert list(PART_KINDS) == fields
    for kind, registry in PART_KINDS.items():
        assert registry.names(), kind
        base = Recipe.model_fields[kind].annotation
        assert all(issubclass(cls, base) for cls in registry.classes.values()), kind


def test_noise_gives_the_copies_the_schedule_of_each_generation():
    r = _recipes(loud={"noise": {"name": "noisy_student", "max_blur": [1, 4],
                                 "alpha_ranges": [[0.9, 1.1], [0.5, 1.5]]}},
                 quiet={"noise": "none"})
    assert r["quiet"].noise.augment_changes(2) == {}
    second = r["loud"].noise.augment_changes(2)
    assert second["max_blur"] == 4 and second["alpha_range"] == (0.5, 1.5)
    assert r["loud"].noise.augment_changes(5)["max_blur"] == 4  # the last one repeats


def test_students_widen_by_their_own_alphas_or_encoders():
    r = _recipes(grow={"students": {"name": "growing", "alphas": [0.5, 0.75]}},
                 same={"students": "fixed"})
    tiny, smp = ModelConfig(), ModelConfig(arch="Unet", encoder="resnet18",
                                           student_encoders=["resnet34", "resnet50"])
    assert r["grow"].students.alpha(tiny, 1.0, 2) == 0.75
    assert r["grow"].students.alpha(tiny, 1.0, 9) == 0.75
    assert r["same"].students.alpha(tiny, 1.0, 2) == 1.0
    assert r["grow"].students.alpha(smp, 1.0, 2) == 1.0  # encoder models: no width multiplier
    assert r["grow"].students.encoder(smp, 1) == "resnet34"
    assert r["grow"].students.encoder(smp, 3) == "resnet50"
    assert r["grow"].students.encoder(ModelConfig(), 1) is None
    assert r["same"].students.encoder(smp, 1) is None
    assert r["grow"].students.READS == ("model.student_encoders",)


def test_the_start_says_whether_students_learn_from_the_augmented_labeled_set():
    r = recipes_of(build_config())
    assert r["aim_plus"].start.AUGMENTED_LABELED and not r["im_plus"].start.AUGMENTED_LABELED


def test_the_settings_check_covers_what_a_part_reads_besides_its_settings():
    from imseg.experiment.settings import Stage, dependencies_of

    config = build_config()
    growing = dependencies_of(Stage("ssl", "im_plus", 1), config)
    fixed = dependencies_of(Stage("ssl", "im", 1), config)
    assert growing.covers("model.student_encoders") and growing.covers("ssl.noise.student_alphas")
    assert not fixed.covers("model.student_encoders")
    assert fixed.covers("ssl.inconsistency.dilate") and fixed.covers("train.ignore_im")
