"""The generation loop end to end on tiny data, and its resume after a hard stop."""

from __future__ import annotations

import pytest
from conftest import TINY, kill_and_resume, read_rows, same_rows

from imseg.config import build_config
from imseg.errors import ConfigError
from imseg.experiment.context import RunContext
from imseg.experiment.loop import Chain, chains_of
from imseg.experiment.recipes import recipes_of, resolve_recipes
from imseg.experiment.runner import run_study

ALL_WITHOUT_EVALNET = ["model_ensemble", "input_ensemble", "consistency_loss", "noisy_student",
                       "im", "im_plus", "aim_plus"]


def test_every_approach_runs_and_writes_its_rows(binary_data, tmp_path):
    # one-epoch teachers find little foreground: without the binary filter pairs still flow
    ssl = {**TINY["ssl"], "approaches": ALL_WITHOUT_EVALNET, "generations": 2,
           "inconsistency": {"binary_filter": False}}
    cfg = build_config(overrides={**TINY, "ssl": ssl})
    ctx = RunContext.open(binary_data, tmp_path / "run", cfg, progress=False)
    run_study(ctx)
    rows = ctx.results.rows
    by = {}
    for r in rows:
        by.setdefault((r["approach"], r["generation"]), []).append(r)
    # benchmarks the chains start from, shared by all approaches
    assert len(by[("ldt", 0)]) == 2 and len(by[("aldt", 0)]) == 2
    assert ("fdt", 0) not in by
    for name in ALL_WITHOUT_EVALNET:
        gens = [1] if name == "consistency_loss" else [1, 2]
        for g in gens:
            assert len(by[(name, g)]) == 2, (name, g)
    im = by[("im", 1)][0]
    assert im["n_teachers"] == 2 and im["pseudo_iou"] is not None
    assert 0.0 <= im["im_fraction"] <= 1.0
    # noisy student does not depend on n; its rows carry no teacher count
    assert by[("noisy_student", 1)][0]["n_teachers"] is None
    # one noisy copy replaces each pair (labeled 2 + unlabeled 18 → 20 pairs)
    ds = ctx.dataset
    assert by[("noisy_student", 1)][0]["n_train_pairs"] == len(ds.labeled) + len(ds.unlabeled)
    # AIM+ trains on the augmented labeled set plus originals and copies of the IM pairs
    aim = by[("aim_plus", 1)][0]["n_train_pairs"]
    assert aim >= 2 * len(ds.labeled)
    # growing students
    assert by[("im_plus", 2)][0]["alpha"] > by[("im_plus", 1)][0]["alpha"]
    assert {r["model"] for r in rows} == {"tiny_unet"}
    # sample PNGs for inspection
    sample_dir = tmp_path / "run" / "samples" / "im" / "r0_n2_g1"
    assert len(list(sample_dir.glob("*_teacher1.png"))) == 2
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_multiclass_and_multilabel_run(multiclass_data, multilabel_data, tmp_path):
    for data in (multiclass_data, multilabel_data):
        cfg = build_config(overrides={**TINY, "ssl": {**TINY["ssl"], "approaches": ["im"]}})
        ctx = RunContext.open(data, tmp_path / data.parent.name, cfg, progress=False)
        run_study(ctx)
        im_rows = [r for r in ctx.results.rows if r["approach"] == "im"]
        assert len(im_rows) == 2
        assert im_rows[0]["pseudo_iou"] is not None


def test_chains_and_recipes():
    recipes = recipes_of(build_config())
    chains = chains_of({k: recipes[k] for k in ("im", "noisy_student")}, [2, 3], runs=2)
    assert Chain("im", 1, 3) in chains and Chain("noisy_student", 0, None) in chains
    assert len(chains) == 2 * (2 + 1)
    with pytest.raises(ConfigError, match="unknown approaches"):
        resolve_recipes(build_config(), ["imm"])
    custom = build_config(overrides={"recipes": {"my_im": {"labeler": "inconsistency",
                                                           "copies": "one"}}})
    assert resolve_recipes(custom, ["my_im"])["my_im"].copies == "one"
    with pytest.raises(ConfigError, match="unknown labeler"):
        resolve_recipes(build_config(overrides={"recipes": {"x": {"labeler": "magic"}}}), ["x"])


def test_killed_run_resumes_to_the_same_rows(binary_data, tmp_path):
    import yaml

    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({**TINY, "ssl": {**TINY["ssl"], "approaches": ["im"],
                                                       "generations": 2}}))
    expected, resumed = kill_and_resume(binary_data, config, tmp_path)
    assert same_rows(resumed, expected)


def test_a_second_process_on_the_same_run_folder_is_refused(binary_data, tmp_path, tiny_config):
    from imseg.errors import DataError

    first = RunContext.open(binary_data, tmp_path / "run", tiny_config, progress=False)
    with pytest.raises(DataError, match="in use by imseg process"):
        RunContext.open(binary_data, tmp_path / "run", tiny_config, progress=False)
    first.close()
    RunContext.open(binary_data, tmp_path / "run", tiny_config, progress=False).close()


def test_the_pseudo_set_is_freed_before_the_students_train(binary_data, tmp_path, monkeypatch):
    """Memory: on an ISIC-sized set the pseudo set is ~0.8 GB that the students never read."""
    import gc

    import imseg.experiment.loop as loop
    from imseg.pseudo.labelers import PseudoSet

    alive_while_training = []
    train_watched = loop.train_watched

    def spy(*args, **kwargs):
        gc.collect()
        alive_while_training.append(sum(type(o) is PseudoSet for o in gc.get_objects()))
        return train_watched(*args, **kwargs)

    monkeypatch.setattr(loop, "train_watched", spy)
    ssl = {**TINY["ssl"], "approaches": ["im"], "generations": 1,
           "inconsistency": {"binary_filter": False}}
    ctx = RunContext.open(binary_data, tmp_path / "run", build_config(overrides={**TINY, "ssl": ssl}),
                          progress=False)
    run_study(ctx)
    assert alive_while_training and alive_while_training[-1] == 0


def test_low_yield_note_says_how_many_and_why():
    from imseg.experiment.loop import low_yield_note

    assert low_yield_note(9, 180, 0.3) == ""  # 5 % kept: not flagged
    note = low_yield_note(4, 180, 0.31)
    assert "only 4 of 180 unlabeled images (2.2%)" in note and "disagree" in note
    assert "31.0%" in note
    assert "no pseudo pair of 180" in low_yield_note(0, 180, None)
    assert "disagree" not in low_yield_note(0, 180, None)
    assert low_yield_note(0, 180, 0.3).endswith("these pairs only")
    assert "unlabeled images through the unimatch trainer" in low_yield_note(0, 180, 0.3, "unimatch")


def test_a_generation_that_keeps_almost_nothing_is_reported_and_recorded(
        binary_data, tmp_path, monkeypatch, capsys):
    from imseg.cli import main
    from imseg.pseudo.labelers import InconsistencyLabeler

    real = InconsistencyLabeler.label

    def keep_one(self, inp):  # the real IM labeler, then all but one pair dropped
        out = real(self, inp)
        out.images, out.labels, out.source = out.images[:1], out.labels[:1], out.source[:1]
        out.mask = None if out.mask is None else out.mask[:1]
        return out

    monkeypatch.setattr(InconsistencyLabeler, "label", keep_one)
    ssl = {**TINY["ssl"], "inconsistency": {"binary_filter": False}}
    (tmp_path / "tiny.yaml").write_text(
        __import__("yaml").safe_dump({**TINY, "ssl": ssl}))
    assert main(["run", "--data", str(binary_data), "--out", str(tmp_path / "run"),
                 "--config", str(tmp_path / "tiny.yaml"), "--approaches", "im"]) == 0
    captured = capsys.readouterr()
    rows = [r for r in read_rows(tmp_path / "run" / "results.csv") if r["approach"] == "im"]
    assert len(rows) == 2
    for r in rows:
        assert "kept only 1 of" in r["note"] and "disagree" in r["note"]
    warned = [line for line in captured.err.splitlines() if "kept only 1 of" in line]
    assert len(warned) == 1 and "im r0 n2 g1" in warned[0]
    assert "note: im r0 n2 g1: the labeler kept only 1 of" in captured.out
