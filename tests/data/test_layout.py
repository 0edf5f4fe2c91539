"""The prepared layout: dataset.yaml's newer keys (headline classes, tile scale) are checked
and written only when set; a new set is swapped in whole, or not at all."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from imseg.data.layout import (
    INFO_FILE,
    PARTIAL,
    SPLITS,
    DatasetInfo,
    check_out,
    read_info,
    staged_layout,
    write_info,
)
from imseg.errors import DataError, StorageError


def _info(**changes) -> DatasetInfo:
    return DatasetInfo(**{"task": "multilabel", "classes": ["alive", "dead", "position"],
                          "image_size": (32, 32), **changes})


def test_headline_classes_round_trip_and_pick_the_task_headline(tmp_path):
    write_info(tmp_path, _info(headline_classes=["dead", "alive"]))
    info = read_info(tmp_path)
    assert info.headline_classes == ["dead", "alive"]
    assert info.task_obj.headline == (1, 0)
    assert info.task_obj.headline_positions == [1, 0]


def test_without_headline_classes_dataset_yaml_is_as_before(tmp_path):
    write_info(tmp_path, _info())
    assert "headline_classes" not in (tmp_path / "dataset.yaml").read_text()
    assert read_info(tmp_path).task_obj.headline == ()
    assert read_info(tmp_path).task_obj.headline_positions == [0, 1, 2]


def test_an_unknown_headline_class_names_dataset_yaml(tmp_path):
    (tmp_path / "dataset.yaml").write_text(
        "task: multilabel\nclasses: [alive, dead]\nimage_size: [32, 32]\n"
        "headline_classes: [alive, living]\n")
    with pytest.raises(DataError, match=r"dataset.yaml.*\['living'\]"):
        read_info(tmp_path)


def test_tile_scale_round_trips_is_left_out_when_zero_and_is_checked(tmp_path):
    write_info(tmp_path, _info())
    assert "tile_scale" not in (tmp_path / "dataset.yaml").read_text()  # reads in older imseg
    write_info(tmp_path, _info(tile_scale=0.5))
    assert read_info(tmp_path).tile_scale == 0.5
    for bad in ("-1", "big", ".nan"):
        (tmp_path / "dataset.yaml").write_text(
            f"task: binary\nclasses: [fg]\nimage_size: [32, 32]\ntile_scale: {bad}\n")
        with pytest.raises(DataError, match="dataset.yaml: tile_scale must be 0"):
            read_info(tmp_path)


def test_whole_image_scores_is_a_flag(tmp_path):
    write_info(tmp_path, _info())
    assert "whole_image_scores" not in (tmp_path / "dataset.yaml").read_text()
    write_info(tmp_path, _info(whole_image_scores=True))
    assert read_info(tmp_path).whole_image_scores is True
    (tmp_path / "dataset.yaml").write_text(
        "task: binary\nclasses: [fg]\nimage_size: [32, 32]\nwhole_image_scores: maybe\n")
    with pytest.raises(DataError, match="whole_image_scores must be true or false"):
        read_info(tmp_path)


# ------------------------------------------------------------- a set swapped in whole
def _set(root: Path, tag: str) -> None:
    """A stand-in prepared set: one file per split, and dataset.yaml, all saying ``tag``."""
    for split in SPLITS:
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "images" / "a.png").write_text(tag)
    (root / INFO_FILE).write_text(tag)


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_staged_set_replaces_only_the_old_set(tmp_path):
    out = tmp_path / "out"
    _set(out, "old")
    (out / "notes.txt").write_text("mine")
    with staged_layout(out) as staging:
        assert staging.parent == out and staging.name.startswith(PARTIAL)
        _set(staging, "new")
    assert _files(out) == {**{f"{s}/images/a.png": "new" for s in SPLITS},
                           INFO_FILE: "new", "notes.txt": "mine"}


@pytest.mark.parametrize("stop", [KeyboardInterrupt, DataError])
def test_a_block_that_stops_leaves_the_old_set_and_no_partial_folder(tmp_path, stop):
    out = tmp_path / "out"
    _set(out, "old")
    before = _files(out)
    with pytest.raises(stop), staged_layout(out) as staging:
        _set(staging, "new")
        raise stop("stopped")
    assert _files(out) == before and sorted(p.name for p in out.iterdir()) == sorted(
        [*SPLITS, INFO_FILE])


def test_a_swap_that_fails_half_way_is_undone(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _set(out, "old")
    before = _files(out)
    real, moves = os.replace, []

    def replace(source, target):
        moves.append(source)
        if len(moves) == 7:  # the old set is aside, two new splits are in
            raise OSError(errno.EIO, "Input/output error", str(source))
        real(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(StorageError, match=f"{out} is as it was"), \
            staged_layout(out) as staging:
        _set(staging, "new")
    assert _files(out) == before and not list(out.glob(f"{PARTIAL}*"))


def test_an_old_set_that_a_cut_short_swap_moved_aside_is_never_deleted(tmp_path):
    out = tmp_path / "out"
    _set(out / f"{PARTIAL}999999999-0bad" / "replaced", "old")  # no such process
    with pytest.raises(DataError, match="earlier data set"):
        check_out(out, overwrite=True)
    assert _files(out / f"{PARTIAL}999999999-0bad" / "replaced")[INFO_FILE] == "old"


def test_what_a_finished_swap_left_is_removed(tmp_path):
    """Killed after the new set moved in whole but before its partial folder went: only the
    replaced old set waits there, which --overwrite meant to drop."""
    out = tmp_path / "out"
    _set(out, "new")
    _set(out / f"{PARTIAL}999999999-0bad" / "replaced", "old")  # no such process
    check_out(out, overwrite=True)
    assert not list(out.glob(f"{PARTIAL}*")) and _files(out)[INFO_FILE] == "new"
