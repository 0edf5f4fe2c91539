"""dataset.yaml: the newer keys (headline classes, tile scale) are checked, written only when set."""

from __future__ import annotations

import pytest

from imseg.data.layout import DatasetInfo, read_info, write_info
from imseg.errors import DataError


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
