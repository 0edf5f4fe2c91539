"""Shapes as pixel masks: a pixel is inside when its centre is (as pycocotools, LabelMe)."""

from __future__ import annotations

import numpy as np

from imseg.data.shapes import circle_mask, polygon_mask, rectangle_mask


def test_polygons_take_the_pixels_whose_centre_is_inside():
    want = np.zeros((7, 10), bool)
    want[1:5, 2:8] = True  # pycocotools' mask of this rectangle
    assert np.array_equal(polygon_mask([2, 1, 8, 1, 8, 5, 2, 5], 7, 10), want)
    assert np.array_equal(polygon_mask([2, 5, 8, 5, 8, 1, 2, 1], 7, 10), want)  # other turn
    tri = polygon_mask([0, 0, 6, 0, 0, 6], 6, 6)  # centres with x + y < 6 lie inside
    yy, xx = np.mgrid[:6, :6]
    assert np.array_equal(tri, (xx + 0.5) + (yy + 0.5) < 6)
    outside = polygon_mask([20, 20, 30, 20, 30, 30], 6, 6)
    assert not outside.any()


def test_a_self_crossing_polygon_follows_the_even_odd_rule():
    # a bow tie: two triangles meeting at (4, 4)
    tie = polygon_mask([0, 0, 8, 8, 8, 0, 0, 8], 8, 8)
    assert tie[4, 0] and tie[4, 7] and not tie[0, 4] and not tie[7, 4]


def test_rectangles_from_any_two_corners_and_circles():
    want = np.zeros((6, 8), bool)
    want[1:4, 2:7] = True
    assert np.array_equal(rectangle_mask((7, 4), (2, 1), 6, 8), want)
    disc = circle_mask((4.0, 4.0), (4.0, 7.0), 8, 8)  # radius 3
    yy, xx = np.mgrid[:8, :8]
    assert np.array_equal(disc, (xx + 0.5 - 4) ** 2 + (yy + 0.5 - 4) ** 2 < 9)
    assert disc.sum() == 32
