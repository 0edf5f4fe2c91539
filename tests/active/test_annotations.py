"""Masks as polygons (exact by the pixel-centre rule), RLE where a polygon would fill a
hole, and COCO/LabelMe documents that imseg's own readers draw back to the same pixels."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from imseg.active.annotations import (
    UNCERTAIN,
    boundary_loops,
    coco_document,
    labelme_document,
    preannotation,
    regions,
    rle_counts,
)
from imseg.data.layout import DatasetInfo
from imseg.data.shapes import polygon_mask
from imseg.data.sources.coco import rle_mask, segmentation_mask
from imseg.data.sources.labelme import shape_mask


def test_every_region_comes_back_exactly_as_polygon_or_rle():
    rng = np.random.default_rng(0)
    kinds = set()
    for t in range(60):
        mask = rng.random((14, 17)) < 0.5
        mask = ndimage.binary_opening(mask) if t % 2 else mask
        found = regions("a", mask)
        assert np.array_equal(np.logical_or.reduce([r.mask for r in found] or [mask * 0]), mask)
        for region in found:
            kinds.add(region.polygon is not None)
            back = (polygon_mask(region.polygon, *mask.shape) if region.polygon is not None
                    else rle_mask(rle_counts(region.mask), *mask.shape))
            assert np.array_equal(back, region.mask)
    assert kinds == {True, False}  # both ways occur in random masks


def test_a_square_is_four_corners_and_a_ring_is_rle():
    square = np.zeros((6, 6), bool)
    square[1:4, 2:5] = True
    (region,) = regions("a", square)
    assert region.polygon == [2.0, 1.0, 5.0, 1.0, 5.0, 4.0, 2.0, 4.0]
    ring = square.copy()
    ring[2, 3] = False
    assert len(boundary_loops(ring)) == 2
    (region,) = regions("a", ring)
    assert region.polygon is None
    assert rle_counts(np.ones((2, 2), bool)) == [0, 4]


def test_coco_and_labelme_documents_draw_the_mask_and_mark_the_im():
    info = DatasetInfo(task="multiclass", classes=["background", "cat", "dog"],
                       image_size=(16, 16))
    mask = np.zeros((12, 16), np.uint8)
    mask[1:5, 1:6] = 1
    mask[6:11, 3:12] = 2
    mask[8, 6] = 0  # a hole: the dog is written as RLE / a mask shape
    im = np.zeros((12, 16), bool)
    im[0:3, 10:14] = True
    item = preannotation("x.png", mask, im, info)
    coco = coco_document([item], info)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert list(names.values()) == ["cat", "dog", UNCERTAIN]
    drawn = np.zeros_like(mask)
    uncertain = np.zeros_like(im)
    for ann in coco["annotations"]:
        region = segmentation_mask(ann["segmentation"], 12, 16)
        name = names[ann["category_id"]]
        if name == UNCERTAIN:
            uncertain |= region
        else:
            drawn[region] = info.classes.index(name)
        assert ann["iscrowd"] == (0 if isinstance(ann["segmentation"], list) else 1)
    assert np.array_equal(drawn, mask) and np.array_equal(uncertain, im)
    doc = labelme_document(item, "../images/x.png")
    assert [s["shape_type"] for s in doc["shapes"]] == ["polygon", "mask", "polygon"]
    assert doc["shapes"][-1]["label"] == UNCERTAIN  # drawn last, on top
    drawn = np.zeros_like(mask)
    for shape in doc["shapes"][:-1]:
        drawn[shape_mask(shape["shape_type"], shape, 12, 16)] = info.classes.index(shape["label"])
    assert np.array_equal(drawn, mask)
