"""Palette files and colour ↔ class-id mapping."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imseg.data.palette import (
    Palette,
    colors_to_ids,
    ids_to_colors,
    parse_palette,
    read_palette,
)
from imseg.errors import DataError

SUIM_LIKE = Palette(
    ("water", "diver", "plant", "reef"),
    ((0, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 255)),
)


def test_read_yaml_with_list_and_hex_colours(tmp_path):
    path = tmp_path / "pal.yaml"
    path.write_text(
        "- {name: water, color: [0, 0, 0]}\n"
        "- name: diver\n  color: [0, 0, 255]\n"
        "- {name: plant, color: '#00FF00'}\n"
        "- {name: reef, color: '#ff00ff'}\n"
    )
    assert read_palette(path) == SUIM_LIKE


def test_read_json(tmp_path):
    path = tmp_path / "pal.json"
    path.write_text(json.dumps([{"name": n, "color": list(c)}
                                for n, c in zip(SUIM_LIKE.names, SUIM_LIKE.colors, strict=True)]))
    pal = read_palette(path)
    assert pal == SUIM_LIKE
    assert len(pal) == 4


@pytest.mark.parametrize(
    "data, words",
    [
        ([], "non-empty list"),
        ({"name": "a", "color": [0, 0, 0]}, "non-empty list"),
        ([{"name": "a"}], "entry 1"),
        ([{"name": "a", "color": [0, 0, 0], "id": 3}], "entry 1"),
        ([{"name": "a", "color": [0, 0, 256]}], "entry 1: colour"),
        ([{"name": "a", "color": [0, 0]}], "entry 1: colour"),
        ([{"name": "a", "color": "#12345"}], "entry 1: colour"),
        ([{"name": "a", "color": [0, 0, 0]}, {"name": "a", "color": [1, 1, 1]}],
         "entry 2: class name 'a' appears twice"),
        ([{"name": "a", "color": [0, 0, 0]}, {"name": "b", "color": [0, 0, 0]}],
         "entry 2: colour [0, 0, 0] is already class 'a'"),
    ],
)
def test_bad_palettes_name_the_file_and_entry(data, words):
    with pytest.raises(DataError) as err:
        parse_palette(data, "my.yaml")
    assert "my.yaml" in str(err.value)
    assert words in str(err.value)


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(DataError, match="nope.yaml: palette file not found"):
        read_palette(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("[{name: no quotes}]")
    with pytest.raises(DataError, match="bad.json: cannot read palette"):
        read_palette(bad)


def test_colors_to_ids_hand_computed():
    rgb = np.array(
        [[[0, 0, 0], [0, 0, 255], [0, 255, 0]],
         [[255, 0, 255], [0, 0, 255], [0, 0, 0]]],
        dtype=np.uint8,
    )
    ids = colors_to_ids(rgb, SUIM_LIKE)
    assert ids.dtype == np.uint8
    assert ids.tolist() == [[0, 1, 2], [3, 1, 0]]
    # and back again
    assert np.array_equal(ids_to_colors(ids, SUIM_LIKE.colors), rgb)


def test_unknown_colour_is_reported_with_the_source():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[1, 1] = (10, 20, 30)
    with pytest.raises(DataError) as err:
        colors_to_ids(rgb, SUIM_LIKE, source="masks/a.bmp")
    assert "masks/a.bmp" in str(err.value)
    assert "1 pixels" in str(err.value)
    assert "[10, 20, 30]" in str(err.value)


def test_tolerance_snaps_noisy_colours_to_the_closest_class():
    rgb = np.array([[[3, 2, 250], [1, 252, 4], [128, 128, 128]]], dtype=np.uint8)
    assert colors_to_ids(rgb[:, :2], SUIM_LIKE, tolerance=5).tolist() == [[1, 2]]
    with pytest.raises(DataError, match=r"\[128, 128, 128\]"):
        colors_to_ids(rgb, SUIM_LIKE, tolerance=5)
    with pytest.raises(DataError):
        colors_to_ids(rgb[:, :2], SUIM_LIKE)  # exact by default


def test_non_rgb_input_is_refused():
    with pytest.raises(DataError, match="must be RGB"):
        colors_to_ids(np.zeros((4, 4), np.uint8), SUIM_LIKE, source="m.png")


def test_a_cvat_labelmap_is_a_palette(tmp_path):
    path = tmp_path / "labelmap.txt"
    path.write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\npolyp:250,50,83::\n"
                    "\ninstrument:61,245,61:tip,shaft:\n")
    pal = read_palette(path)
    assert pal.names == ("background", "polyp", "instrument")
    assert pal.colors == ((0, 0, 0), (250, 50, 83), (61, 245, 61))
    path.write_text("background:0,0,0::\npolyp:250,50::\n")
    with pytest.raises(DataError, match=r"labelmap.txt: line 2 'polyp:250,50::' is not"):
        read_palette(path)
