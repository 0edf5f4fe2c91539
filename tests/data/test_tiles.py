"""Tiles: offsets that cover an image, tiles cut in step with their masks, and a canvas
that puts overlapping outputs back together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imseg.data.tiles import (
    TileCanvas,
    blend_weights,
    count_tiles,
    crop_name,
    cut_pair,
    first_cover,
    pad_to,
    scaled_shape,
    source_groups,
    tile_name,
    tile_origin,
    tile_origins,
    tile_source,
    tile_starts,
)


def test_tile_starts_cover_and_end_flush():
    assert tile_starts(48, 32, 0.6) == [0, 8, 16]
    assert tile_starts(64, 32, 0.6) == [0, 11, 21, 32]
    assert tile_starts(32, 32, 0.6) == [0]
    assert tile_starts(100, 32, 0.5) == [0, 14, 27, 41, 54, 68]
    assert tile_starts(96, 32, 0.0) == [0, 32, 64]  # no overlap where the tiles fit exactly
    assert tile_starts(100, 32, 0.0) == [0, 23, 45, 68]  # as little as covering allows
    starts = tile_starts(1000, 256, 0.6)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert max(np.diff(starts)) <= 256 * 0.4
    with pytest.raises(ValueError):
        tile_starts(20, 32, 0.6)
    with pytest.raises(ValueError):
        tile_starts(64, 32, 1.0)


def test_tiles_cover_every_pixel_and_count_as_cut():
    shape, tile = (70, 100), (32, 48)
    covered = np.zeros(shape, int)
    origins = tile_origins(shape, tile, 0.25)
    for y, x in origins:
        covered[y : y + tile[0], x : x + tile[1]] += 1
    assert covered.min() >= 1
    assert count_tiles(shape, tile, 1.0, 0.25) == len(origins)
    assert count_tiles((20, 20), tile, 1.0, 0.25) == 1  # padded to one tile
    assert count_tiles((140, 200), tile, 0.5, 0.25) == len(origins)  # scaled to 70×100 first


def test_cut_pair_keeps_image_and_mask_in_step():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    mask = rng.integers(0, 2, (40, 56), dtype=np.uint8)
    pieces = list(cut_pair("a", image, mask, (32, 32), 1.0, 0.5))
    assert [name for name, _, _ in pieces] == [tile_name("a", y, x) for y, x in
                                              tile_origins((40, 56), (32, 32), 0.5)]
    for name, img, msk in pieces:
        y, x = (int(part[1:]) for part in name.split("__")[1].split("_"))
        assert np.array_equal(img, image[y : y + 32, x : x + 32])
        assert np.array_equal(msk, mask[y : y + 32, x : x + 32])
    half = list(cut_pair("a", np.repeat(np.repeat(image, 2, 0), 2, 1), None, (32, 32), 0.5, 0))
    assert len(half) == 4 and all(m is None and i.shape == (32, 32, 3) for _, i, m in half)
    assert scaled_shape((81, 81), 0.5) == (40, 40)


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_first_cover_counts_every_pixel_of_an_image_once(overlap):
    shapes = {"a": (40, 56), "b": (32, 80), "c": (70, 45)}
    stems = [tile_name(s, y, x) for s, shape in shapes.items()
             for y, x in tile_origins(shape, (32, 32), overlap)] + ["whole"]
    order = np.random.default_rng(0).permutation(len(stems))  # any listing order
    stems = [stems[i] for i in order]
    cover = first_cover(stems, (32, 32))
    counts = {s: np.zeros(shape, int) for s, shape in shapes.items()}
    for stem, mask in zip(stems, cover, strict=True):
        if stem == "whole":
            assert mask.all()
            continue
        source, pos = stem.rsplit("__", 1)
        y, x = (int(p[1:]) for p in pos.split("_"))
        counts[source][y : y + 32, x : x + 32] += mask
    assert all((c == 1).all() for c in counts.values())


def test_pad_to_mirrors_small_images_out_to_one_tile():
    image = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    padded = pad_to(image, (8, 4))
    assert padded.shape == (8, 4, 1)
    assert np.array_equal(padded[:3], image) and np.array_equal(padded[3:6], image[::-1])
    assert pad_to(image, (2, 2)) is image


def test_blend_weights_are_highest_inside_and_never_zero():
    w = blend_weights((32, 48), 0.5)
    assert w.shape == (32, 48) and w.min() > 0 and w.max() == 1
    assert w[16, 24] == 1 and w[0, 0] < w[4, 4] < w[8, 12]
    assert torch.equal(w, w.flip(0)) and torch.equal(w, w.flip(1))
    assert torch.all(blend_weights((32, 32), 0.0) == 1)  # no overlap: nothing to blend


def test_canvas_reassembles_an_image_from_its_overlapping_tiles():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.random((2, 3, 50, 70)).astype(np.float32))  # (models, C, H, W)
    origins = tile_origins((50, 70), (32, 32), 0.5)
    canvas = TileCanvas(2, 3, (50, 70), blend_weights((32, 32), 0.5))
    for start in range(0, len(origins), 4):  # in batches, as the predictor feeds it
        batch = origins[start : start + 4]
        canvas.add(batch, torch.stack([image[:, :, y : y + 32, x : x + 32] for y, x in batch], 1))
    torch.testing.assert_close(canvas.result(), image)


def test_pieces_name_their_source_image():
    assert tile_source(tile_name("2019_A1__x", 16, 11)) == "2019_A1__x"  # HeLa, prepare --tile
    assert tile_source(crop_name("d_r_1_", 1)) == "d_r_1_"  # SUIM's random crops
    for whole in ("plain", "a__b", "val-a__y1_x2", "a__c"):
        assert tile_source(whole) == whole
    stems = ["b__y00000_x00000", "a", "b__y00000_x00016", "c__c0", "a__y00000_x00000", "c__c1"]
    assert source_groups(stems) == [0, 1, 0, 2, 1, 2]


def test_a_tile_name_gives_back_its_source_and_origin():
    for stem, y, x in [("2019_A1__x", 16, 11), ("a", 0, 0), ("img_y00001_x00002", 99999, 7)]:
        assert tile_origin(tile_name(stem, y, x)) == (stem, (y, x))
    for whole in ("plain", crop_name("d_r_1_", 3), "val-a__y1_x2", "a__c"):
        assert tile_origin(whole) == (whole, None)  # crops and whole images stand alone
