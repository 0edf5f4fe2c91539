"""Colouring masks, overlays and the method figures, on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from imseg.data.layout import DatasetInfo
from imseg.evaluation.visualize import (
    IM_GREY,
    StripColumn,
    class_palette,
    colorize,
    generation_strip,
    hatch,
    im_creation_figure,
    overlay,
    teacher_votes,
)

BIN = DatasetInfo(task="binary", classes=["lesion"], image_size=(4, 4),
                  colors=[(1, 2, 3), (200, 10, 20)])
MC = DatasetInfo(task="multiclass", classes=["bg", "a", "b"], image_size=(4, 4),
                 colors=[(0, 0, 0), (255, 0, 0), (0, 0, 255)])
ML = DatasetInfo(task="multilabel", classes=["x", "y"], image_size=(4, 4),
                 colors=[(200, 0, 0), (0, 100, 0)])


def test_binary_colours_void_and_im_grey():
    mask = np.array([[0, 255], [128, 255]], np.uint8)
    im = np.array([[0, 0], [0, 1]], bool)
    rgb = colorize(mask, BIN, im)
    assert rgb[0, 0].tolist() == [1, 2, 3]
    assert rgb[0, 1].tolist() == [200, 10, 20]
    assert rgb[1, 0].tolist() == list(IM_GREY)  # void
    assert rgb[1, 1].tolist() == list(IM_GREY)  # under the IM


def test_multiclass_ids_take_their_colours_and_255_is_grey():
    mask = np.array([[0, 1, 2, 255]], np.uint8)
    assert colorize(mask, MC).tolist() == [[[0, 0, 0], [255, 0, 0], [0, 0, 255], list(IM_GREY)]]


def test_multilabel_overlapping_channels_blend():
    mask = np.zeros((1, 3, 3), np.uint8)  # padded to RGB as Task.decode_mask writes two labels
    mask[0, 0, 0] = 255
    mask[0, 1, 1] = 255
    mask[0, 2, :2] = 255
    assert colorize(mask, ML).tolist() == [[[200, 0, 0], [0, 100, 0], [100, 50, 0]]]
    assert class_palette(ML).names == ["background", "x", "y"]


def test_overlay_blends_foreground_and_hatches_the_im():
    image = np.full((6, 6, 3), 100, np.uint8)
    mask = np.zeros((6, 6), np.uint8)
    mask[0, :] = 255
    im = np.zeros((6, 6), bool)
    im[3:, :] = True
    out = overlay(image, mask, BIN, im, alpha=0.5)
    assert out[0, 3].tolist() == [150, 55, 60]  # (100 + colour) / 2
    assert out[1, 1].tolist() == [100, 100, 100]  # background untouched
    stripes = hatch((6, 6))
    assert (out[im & stripes] == IM_GREY).all()
    assert (out[im & ~stripes] == 100).all()  # between stripes the image shows through


def test_teacher_votes_sum_and_top_class_count():
    task = BIN.task_obj
    a = np.array([[255, 0], [255, 0]], np.uint8)
    b = np.array([[255, 255], [0, 0]], np.uint8)
    assert teacher_votes([a, b], task).tolist() == [[2, 1], [1, 0]]
    x = np.array([[0, 1, 2]], np.uint8)
    y = np.array([[0, 2, 2]], np.uint8)
    z = np.array([[0, 1, 1]], np.uint8)
    assert teacher_votes([x, y, z], MC.task_obj).tolist() == [[3, 2, 2]]


@pytest.mark.parametrize("n_teachers", [2, 3])
def test_im_creation_figure_has_one_panel_per_step(n_teachers):
    image = np.zeros((8, 8, 3), np.uint8)
    teachers = [np.full((8, 8), 255 * (t % 2), np.uint8) for t in range(n_teachers)]
    fig = im_creation_figure(image, teachers, np.ones((8, 8), bool), teachers[0], BIN)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "image" and titles[-1].endswith("final")
    assert len(titles) == n_teachers + 4
    assert titles[n_teachers + 1].startswith(f"({'abcd'[n_teachers]}) sum")


def test_strip_marks_dropped_generations():
    img = np.zeros((8, 8, 3), np.uint8)
    cols = [StripColumn("G1", img, None), StripColumn("G2", img, np.zeros((8, 8, 3), np.uint8))]
    fig = generation_strip(cols, BIN, with_im=False)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["G1", "G2"]
    assert any(t.get_text() == "dropped" for t in fig.axes[2].texts)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["background", "lesion"]
