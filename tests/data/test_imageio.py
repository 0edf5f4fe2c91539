"""The one image reader behind prepare, the data sets and predict: upright, 16-bit scaled,
hidden files skipped, a clear error for a folder whose images lie below it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imseg.data.imageio import list_images, orientation_hint, read_image
from imseg.errors import DataError


def test_exif_orientation_is_applied(tmp_path):
    shown = np.zeros((40, 24, 3), np.uint8)
    shown[:10] = 255  # a bright top band, as a viewer shows the photo
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated: turn 90° counter-clockwise to show
    Image.fromarray(np.ascontiguousarray(np.rot90(shown, k=-1))).save(
        tmp_path / "photo.jpg", exif=exif, quality=95)
    img = read_image(tmp_path / "photo.jpg", 3)
    assert img.shape == (40, 24, 3)
    assert img[:8].mean() > 240 and img[12:].mean() < 15


def test_wide_gray_images_are_scaled_by_their_maximum_in_both_channel_counts(tmp_path):
    ramp = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 16)  # max 4080
    Image.fromarray(ramp).save(tmp_path / "w.png")
    gray, rgb = read_image(tmp_path / "w.png", 1), read_image(tmp_path / "w.png", 3)
    assert gray.shape == (16, 16, 1) and rgb.shape == (16, 16, 3)
    assert gray.max() == 255 and gray[8, 0, 0] == round(128 * 16 * 255 / 4080)
    assert np.array_equal(rgb, np.repeat(gray, 3, axis=2))
    small = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) % 200)  # fits 0..255: kept
    Image.fromarray(small).save(tmp_path / "s.png")
    assert np.array_equal(read_image(tmp_path / "s.png", 1)[..., 0], small)


def test_listing_skips_hidden_files_and_takes_gif_and_webp(tmp_path):
    for name in ("a.gif", "b.webp", "c.png"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name)
    (tmp_path / "._c.png").write_bytes(b"AppleDouble")
    (tmp_path / "notes.txt").write_text("not an image")
    assert sorted(list_images(tmp_path)) == ["a", "b", "c"]


def test_a_folder_whose_images_lie_below_it_says_so(tmp_path):
    for sub in ("patient1", "patient2"):
        (tmp_path / sub).mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / sub / "x.png")
    with pytest.raises(DataError, match=r"no images .*; it has 2 subfolder\(s\), and images "
                                        r"are read from the folder itself"):
        list_images(tmp_path)


def test_high_byte_rule_and_float_images_in_zero_one(tmp_path):
    wide = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 16)  # max 4080
    Image.fromarray(wide).save(tmp_path / "w.png")
    kept = read_image(tmp_path / "w.png", 1, wide="high_byte")[..., 0]
    assert np.array_equal(kept, (wide >> 8).astype(np.uint8))  # as OpenCV reads it
    unit = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(unit, mode="F").save(tmp_path / "f.tif")
    read = read_image(tmp_path / "f.tif", 1)[..., 0]
    assert read.max() == 255 and read[4, 0] == round(32 / 63 * 255)
    with pytest.raises(DataError, match="wide_images 'other'"):
        read_image(tmp_path / "w.png", 1, wide="other")


def test_orientation_hint_says_when_a_size_is_the_stored_one(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((20, 36, 3), np.uint8)).save(tmp_path / "p.jpg", exif=exif)
    assert "stored 20×36 and turned upright" in orientation_hint(tmp_path / "p.jpg", (20, 36))
    assert orientation_hint(tmp_path / "p.jpg", (36, 20)) == ""  # the upright size: fine
    assert orientation_hint(tmp_path / "p.jpg", (5, 5)) == ""  # another problem entirely


def test_float_images_are_stretched_over_their_range(tmp_path):
    for name, values in (("over.tif", np.linspace(0, 1.02, 64)),
                         ("signed.tif", np.linspace(-1, 1, 64))):
        Image.fromarray(values.astype(np.float32).reshape(8, 8), mode="F").save(tmp_path / name)
        read = read_image(tmp_path / name, 1)[..., 0].ravel()
        assert read[0] == 0 and read[-1] == 255 and np.all(np.diff(read.astype(int)) >= 0)
