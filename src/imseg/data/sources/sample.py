"""`imseg prepare sample`: generated data sets for the demo and the tests.

Three small synthetic tasks, one per task kind, with enough structure that a
tiny U-Net has to learn shapes and context rather than a colour threshold, so
that few labels are clearly worse than many (room for semi-supervised
learning):

* ``binary``     skin-lesion-like blobs on unevenly lit, hairy, noisy skin;
* ``multiclass`` discs, squares and triangles with the same colour
  distribution, overlapping on a textured background (shape decides the class);
* ``multilabel`` brightfield-like cells: alive, dead, and a small position disc
  at each cell centre.

Generation (:func:`make_sample`, vectorised numpy) is separate from writing
(:func:`prepare_sample`). All sizes are proportional to the image size.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from imseg.data.layout import (
    SPLITS,
    DatasetInfo,
    count_split,
    finalize_counts,
    read_info,
    split_dirs,
    write_pair,
)
from imseg.errors import DataError
from imseg.storage import new_mode
from imseg.tasks import TASK_KINDS

GENERATOR_VERSION = 2
"""Bumped whenever the generated content changes, so old folders are not reused."""

CLASSES: dict[str, list[str]] = {
    "binary": ["lesion"],
    "multilabel": ["alive", "dead", "position"],
    "multiclass": ["background", "disc", "square", "triangle"],
}

COLORS: dict[str, list[tuple[int, int, int]]] = {
    "binary": [(0, 0, 0), (230, 25, 75)],
    "multilabel": [(60, 180, 75), (230, 25, 75), (0, 130, 200)],
    "multiclass": [(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200)],
}

F32 = np.float32

LESION_TINTS = np.array([[0.75, 1.0, 1.1], [0.3, 0.9, 0.8], [1.0, 0.9, 0.7], [1.0, 1.0, 1.0]], F32)
"""How a lesion darkens each RGB channel: brown, red, blue-grey, plain dark."""


# --------------------------------------------------------------------------- helpers
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(yy, xx)``, each ``(1, size, size)``."""
    c = np.arange(size, dtype=F32) + F32(0.5)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return yy[None], xx[None]


def _interp_matrix(size: int, cells: int) -> np.ndarray:
    """``(size, cells + 1)`` smoothstep interpolation weights from a coarse grid."""
    t = (np.arange(size, dtype=np.float64) + 0.5) / size * cells
    i0 = np.minimum(np.floor(t).astype(int), cells - 1)
    f = t - i0
    f = f * f * (3 - 2 * f)
    m = np.zeros((size, cells + 1), F32)
    rows = np.arange(size)
    m[rows, i0] = 1 - f
    m[rows, i0 + 1] += f
    return m


def _noise(rng: np.random.Generator, n: int, size: int, cells: tuple[int, ...]) -> np.ndarray:
    """Smooth value noise ``(n, size, size)``, zero mean, unit std per image.

    Octaves of coarse random grids, upsampled by two small matrix products
    (fast, and not periodic like a sum of sinusoids).
    """
    out = np.zeros((n, size, size), F32)
    for k, c in enumerate(cells):
        m = _interp_matrix(size, c)
        coarse = rng.standard_normal((n * (c + 1), c + 1), dtype=F32)
        half = (coarse @ m.T).reshape(n, c + 1, size).transpose(0, 2, 1)  # (C m^T)^T
        full = (half.reshape(n * size, c + 1) @ m.T).reshape(n, size, size)  # (m C m^T)^T
        out += F32(0.5**k) * full
    out -= out.mean(axis=(1, 2), keepdims=True)
    out /= out.std(axis=(1, 2), keepdims=True) + F32(1e-6)
    return out


def _u(rng: np.random.Generator, lo: float, hi: float, shape) -> np.ndarray:
    return rng.uniform(lo, hi, shape).astype(F32)


def _col(v: np.ndarray) -> np.ndarray:
    """Per-image values ``(n,)`` → broadcastable over ``(n, H, W)``."""
    return v[:, None, None]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return F32(0.5) * (np.tanh(F32(0.5) * x) + F32(1))


def _blob_sd(
    yy: np.ndarray,
    xx: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    r0: np.ndarray,
    aspect: np.ndarray,
    angle: np.ndarray,
    harm: np.ndarray,
    phase: np.ndarray,
) -> np.ndarray:
    """Signed distance-like field (px, > 0 inside) of irregular ellipses, ``(n, H, W)``.

    The radius varies with the polar angle by harmonics ``2, 3, ...`` with
    amplitudes ``harm`` (``(n, K)``, relative to ``r0``).
    """
    dx, dy = xx - _col(cx), yy - _col(cy)
    cos, sin = _col(np.cos(angle)), _col(np.sin(angle))
    u = dx * cos + dy * sin
    v = (dy * cos - dx * sin) / _col(aspect)
    r = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    rel = np.ones_like(r)
    for k in range(harm.shape[1]):
        rel += _col(harm[:, k]) * np.cos((k + 2) * theta + _col(phase[:, k]))
    return _col(r0) * rel - r


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """Float ``(n, 3, H, W)`` in [0, 1] → uint8 ``(n, H, W, 3)``."""
    out = np.clip(img * F32(255) + F32(0.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(out, 1, -1))


def _add_noise(rng: np.random.Generator, img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    sigma = _u(rng, lo, hi, img.shape[0])[:, None, None, None]
    return img + sigma * rng.standard_normal(img.shape, dtype=F32)


# --------------------------------------------------------------------------- binary
def _make_binary(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Lesion-like blobs with fuzzy borders on textured, unevenly lit, hairy skin (the
    parts draw from ``rng`` in this order: the images depend on it)."""
    yy, xx = _grid(size)
    skin, light, texture = _skin(rng, n, size, yy, xx)
    img = skin * (light * texture)[:, None]
    sd, r0 = _lesion_outline(rng, n, size, yy, xx)
    label = (sd > 0).astype(np.uint8)[:, None]
    img, tint = _paint_lesion(rng, n, size, img, skin, light, sd, r0)
    img = img * (1 - _freckles(rng, n, size, yy, xx)[:, None] * tint)
    img = img * _hairs(rng, n, size, yy, xx)[:, None]
    img = _add_noise(rng, img, 0.01, 0.045)
    return _to_uint8(img), label


def _skin(rng: np.random.Generator, n: int, size: int, yy: np.ndarray, xx: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skin colour ``(n, 3, 1, 1)``, its light ``(n, H, W)`` (a smooth illumination
    gradient with vignetting; the lesion shares it) and the skin's texture."""
    red = _u(rng, 0.62, 0.92, n)
    green = red * _u(rng, 0.66, 0.86, n)
    blue = green * _u(rng, 0.78, 0.98, n)
    skin = np.stack([red, green, blue], axis=1)[:, :, None, None]
    ang = _u(rng, 0, 2 * np.pi, n)
    ramp = ((xx - size / 2) * _col(np.cos(ang)) + (yy - size / 2) * _col(np.sin(ang))) / size
    vy, vx = _u(rng, 0.2, 0.8, n) * size, _u(rng, 0.2, 0.8, n) * size
    vign = ((yy - _col(vy)) ** 2 + (xx - _col(vx)) ** 2) / (size * size)
    light = 1 + _col(_u(rng, 0.1, 0.5, n)) * ramp - _col(_u(rng, 0.0, 0.5, n)) * vign
    texture = 1 + _col(_u(rng, 0.03, 0.08, n)) * _noise(rng, n, size, (4, 8, 16))
    return skin, light, texture


def _lesion_outline(rng: np.random.Generator, n: int, size: int, yy: np.ndarray,
                    xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lesion's signed distance ``(n, H, W)`` (inside > 0) and base radius: an
    irregular ellipse, sometimes with a satellite blob; large enough that a few briefly
    trained teachers mostly agree on it (the demo's IM needs that)."""
    r0 = _u(rng, 0.2, 0.35, n) * size
    cy, cx = _u(rng, 0.3, 0.7, n) * size, _u(rng, 0.3, 0.7, n) * size
    touch = rng.random(n) < 0.2  # centre close to (or past) one image edge
    side = rng.integers(0, 4, n)
    edge = _u(rng, -0.2, 0.6, n) * r0
    edge = np.where(side % 2 == 0, edge, size - edge)
    cy = np.where(touch & (side < 2), edge, cy)
    cx = np.where(touch & (side >= 2), edge, cx)
    harm = _u(rng, 0, 1, (n, 4)) * np.array([0.15, 0.1, 0.07, 0.05], F32)
    sd = _blob_sd(yy, xx, cy, cx, r0, _u(rng, 0.6, 1.0, n), _u(rng, 0, np.pi, n), harm,
                  _u(rng, 0, 2 * np.pi, (n, 4)))
    sat = rng.random(n) < 0.3
    sat_r = r0 * _u(rng, 0.3, 0.55, n)
    sat_a = _u(rng, 0, 2 * np.pi, n)
    sat_d = r0 * _u(rng, 0.7, 1.2, n)
    sd_sat = _blob_sd(yy, xx, cy + sat_d * np.sin(sat_a), cx + sat_d * np.cos(sat_a), sat_r,
                      _u(rng, 0.6, 1.0, n), _u(rng, 0, np.pi, n), harm * 0.5,
                      _u(rng, 0, 2 * np.pi, (n, 4)))
    sd = np.where(_col(sat), np.maximum(sd, sd_sat), sd)
    sd += _col(r0 * _u(rng, 0.03, 0.1, n)) * _noise(rng, n, size, (8, 16))
    return sd, r0


def _paint_lesion(rng: np.random.Generator, n: int, size: int, img: np.ndarray,
                  skin: np.ndarray, light: np.ndarray, sd: np.ndarray, r0: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``img`` with the lesion blended in, and its tint: darker than the skin (brown,
    red, blue-grey or plain dark), a darker or lighter core, mottled."""
    s = size / 64
    dark = _u(rng, 0.3, 0.6, n)
    tint = LESION_TINTS[rng.integers(0, len(LESION_TINTS), n)][:, :, None, None]
    lesion = skin * (1 - dark[:, None, None, None] * tint)
    core = _sigmoid((sd - _col(0.4 * r0)) / F32(2 * s))
    variegation = (
        1
        + _col(_u(rng, 0.04, 0.18, n)) * _noise(rng, n, size, (6, 12))
        - _col(_u(rng, -0.15, 0.3, n)) * core
    )
    lesion = lesion * (light * variegation)[:, None]
    alpha = _sigmoid(sd / _col(_u(rng, 0.4, 1.0, n) * s))[:, None]
    return img * (1 - alpha) + lesion * alpha, tint


def _freckles(rng: np.random.Generator, n: int, size: int, yy: np.ndarray, xx: np.ndarray
              ) -> np.ndarray:
    """Shading ``(n, H, W)`` of up to two small spots of the lesion's colour, too small
    to count (not labeled)."""
    s = size / 64
    freckles = rng.integers(0, 3, n)
    shading = np.zeros((n, size, size), F32)
    for j in range(2):
        fy, fx = _u(rng, 0, size, n), _u(rng, 0, size, n)
        radius = _col(_u(rng, 0.015, 0.045, n) * size)
        dist = np.sqrt((yy - _col(fy)) ** 2 + (xx - _col(fx)) ** 2)
        spot = _sigmoid((radius - dist) / F32(0.7 * s)) * _col((freckles > j).astype(F32))
        shading = np.maximum(shading, spot * _col(_u(rng, 0.15, 0.5, n)))
    return shading


def _hairs(rng: np.random.Generator, n: int, size: int, yy: np.ndarray, xx: np.ndarray
           ) -> np.ndarray:
    """Shadow ``(n, H, W)`` of up to two thin dark curves, over skin and lesion alike
    (not part of the label)."""
    s = size / 64
    hairs = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    shadow = np.ones((n, size, size), F32)
    for j in range(2):
        on = hairs > j
        py, px = _u(rng, 0, size, n), _u(rng, 0, size, n)
        a = _u(rng, 0, np.pi, n)
        dy, dx = yy - _col(py), xx - _col(px)
        along = dx * _col(np.cos(a)) + dy * _col(np.sin(a))
        across = dy * _col(np.cos(a)) - dx * _col(np.sin(a))
        dist = across + _col(_u(rng, -2.0, 2.0, n) / size) * along * along
        width = _col(_u(rng, 0.35, 0.8, n) * s)
        depth = _col(np.where(on, _u(rng, 0.3, 0.75, n), 0).astype(F32))
        shadow *= 1 - depth * np.exp(-((dist / width) ** 2))
    return shadow


# ----------------------------------------------------------------------- multiclass
def _make_multiclass(
    rng: np.random.Generator, n: int, size: int, max_shapes: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping discs, squares, triangles of equal area and shared colours."""
    s = size / 64
    yy, xx = _grid(size)
    bg = _u(rng, 0.15, 0.85, (n, 3))
    bg_tex = _noise(rng, n * 3, size, (3, 6, 12)).reshape(n, 3, size, size)
    img = bg[:, :, None, None] + _u(rng, 0.03, 0.1, n)[:, None, None, None] * bg_tex
    ang = _u(rng, 0, 2 * np.pi, n)
    ramp = ((xx - size / 2) * _col(np.cos(ang)) + (yy - size / 2) * _col(np.sin(ang))) / size
    img = img * (1 + _col(_u(rng, 0.0, 0.35, n)) * ramp)[:, None]
    fine = _noise(rng, n, size, (12, 24))
    label = np.ones((n, size, size), np.uint8)  # class 0 (background) is stored as 1

    count = rng.integers(2, max_shapes + 1, n)
    for k in range(max_shapes):
        on = count > k
        kind = rng.integers(0, 3, n)  # 0 disc, 1 square, 2 triangle
        r = _u(rng, 0.07, 0.16, n) * size  # radius of the disc of the same area
        cy, cx = _u(rng, 0.1, 0.9, n) * size, _u(rng, 0.1, 0.9, n) * size
        a = _u(rng, 0, 2 * np.pi, n)
        dy, dx = yy - _col(cy), xx - _col(cx)
        u = dx * _col(np.cos(a)) + dy * _col(np.sin(a))
        v = dy * _col(np.cos(a)) - dx * _col(np.sin(a))
        disc = _col(r) - np.sqrt(u * u + v * v)
        square = _col(r * F32(np.sqrt(np.pi) / 2)) - np.maximum(np.abs(u), np.abs(v))
        inradius = r * F32(np.sqrt(4 * np.pi / (3 * np.sqrt(3))) / 2)
        proj = np.maximum(
            np.maximum(u, -0.5 * u + F32(np.sqrt(3) / 2) * v), -0.5 * u - F32(np.sqrt(3) / 2) * v
        )
        triangle = _col(inradius) - proj
        kk = _col(kind)
        sd = np.where(kk == 0, disc, np.where(kk == 1, square, triangle))

        colour = _u(rng, 0.05, 0.95, (n, 3))
        diff = colour - bg
        norm = np.linalg.norm(diff, axis=1, keepdims=True)
        push = norm < 0.3  # keep some contrast to the background colour
        colour = np.where(push, bg + diff / np.maximum(norm, 1e-3) * 0.3, colour)
        colour = np.clip(colour, 0, 1)
        period = _u(rng, 3, 8, n) * s
        stripes = np.cos(2 * np.pi * u / _col(period) + _col(_u(rng, 0, 2 * np.pi, n)))
        striped = _col(rng.random(n) < 0.5)
        tex = 1 + _col(_u(rng, 0.0, 0.2, n)) * np.where(striped, stripes, fine)
        alpha = (np.clip(sd + 0.5, 0, 1) * _col(on.astype(F32)))[:, None]
        img = img * (1 - alpha) + colour[:, :, None, None] * tex[:, None] * alpha
        label = np.where((sd > 0) & _col(on), (kk + 2).astype(np.uint8), label)

    img = _add_noise(rng, img, 0.01, 0.04)
    return _to_uint8(img), label[:, None]


# ----------------------------------------------------------------------- multilabel
def _make_multilabel(
    rng: np.random.Generator, n: int, size: int, grid: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Brightfield-like cells: alive (round, bright, rimmed), dead (dark, small, irregular).

    One possible cell per slot of a ``grid × grid`` layout, drawn only inside a
    window of two slots around it (a padded canvas keeps every window whole),
    which is four times cheaper than drawing each cell over the full image.
    """
    s = size / 64
    cell = size // grid
    pad = cell // 2
    base = _u(rng, 0.45, 0.65, n)
    img = _col(base) * (1 + _col(_u(rng, 0.03, 0.08, n)) * _noise(rng, n, size, (2, 4)))
    grain = _noise(rng, n, size, (16, 32))
    img, grain = (np.pad(a, ((0, 0), (pad, pad), (pad, pad)), mode="edge") for a in (img, grain))
    owner = np.full(img.shape, -1, np.int8)
    position = np.zeros(img.shape, bool)
    rp = max(1.0, 0.03 * size)
    local = np.arange(2 * cell, dtype=F32) + F32(0.5 - pad)
    ly, lx = (a[None] for a in np.meshgrid(local, local, indexing="ij"))

    slots = grid * grid
    on = rng.random((n, slots)) < _u(rng, 0.25, 0.6, n)[:, None]
    dead_share = _u(rng, 0.2, 0.6, n)
    on[np.arange(n), rng.integers(0, slots, n)] = True  # at least one cell per image
    for k in range(slots):
        y0, x0 = (k // grid) * cell, (k % grid) * cell
        win = np.s_[:, y0 : y0 + 2 * cell, x0 : x0 + 2 * cell]
        yy, xx = ly + y0, lx + x0  # image coordinates of the window
        dead = rng.random(n) < dead_share
        rounded = ~dead & (rng.random(n) < 0.2)  # mitotic: small, bright, thick halo
        cy = y0 + _u(rng, 0.3, 0.7, n) * cell
        cx = x0 + _u(rng, 0.3, 0.7, n) * cell
        r0 = np.where(dead, _u(rng, 0.05, 0.08, n), _u(rng, 0.065, 0.105, n))
        r0 = np.where(rounded, _u(rng, 0.05, 0.065, n), r0) * size
        aspect = np.where(dead, _u(rng, 0.6, 0.95, n), _u(rng, 0.75, 1.0, n))
        amp = np.where(dead[:, None], F32(0.15), F32(0.04)) * _u(rng, 0, 1, (n, 4))
        sd = _blob_sd(
            yy, xx, cy, cx, r0, aspect, _u(rng, 0, np.pi, n), amp, _u(rng, 0, 2 * np.pi, (n, 4))
        )
        active = _col(on[:, k])
        inside = (sd > 0) & active
        alpha = _sigmoid(sd / F32(0.6 * s)) * active
        here, g = img[win], grain[win]
        # Alive: brighter, granular, with a dark rim and an off-centre nucleus.
        ny = cy + _u(rng, -0.3, 0.3, n) * r0
        nx = cx + _u(rng, -0.3, 0.3, n) * r0
        nuc = _sigmoid((_col(0.4 * r0) - np.sqrt((yy - _col(ny)) ** 2 + (xx - _col(nx)) ** 2)) / s)
        lift = np.where(dead, _u(rng, -0.3, -0.04, n), _u(rng, -0.03, 0.18, n))
        lift = _col(np.where(rounded, _u(rng, 0.15, 0.3, n), lift))
        nucleus = _col(np.where(dead, 0, _u(rng, 0.0, 0.1, n)).astype(F32))
        grainy = _col(np.where(dead, F32(0.02), F32(0.04)))
        # Dead: darker (sometimes only a little), faint rim, no nucleus.
        body = here + lift + grainy * g - nucleus * nuc
        rim = np.where(dead, _u(rng, 0.0, 0.15, n), _u(rng, 0.03, 0.3, n))
        rim = _col(np.where(rounded, -_u(rng, 0.1, 0.2, n), rim))  # negative: a bright halo
        rim_width = F32(0.8 * s) * _col(np.where(rounded, F32(2), F32(1)))
        ring = rim * np.exp(-((sd / rim_width) ** 2)) * active
        img[win] = here * (1 - alpha) + body * alpha - ring
        owner[win] = np.where(inside, _col(dead.astype(np.int8)), owner[win])
        centre = (yy - _col(cy)) ** 2 + (xx - _col(cx)) ** 2 < rp * rp
        position[win] |= centre & inside

    crop = np.s_[:, pad : pad + size, pad : pad + size]
    img, owner, position = img[crop], owner[crop], position[crop]
    # Debris: small dark or bright specks that are not cells (not labeled).
    yy, xx = _grid(size)
    debris = rng.integers(0, 9, n)
    for j in range(8):
        dy, dx = _u(rng, 0, size, n), _u(rng, 0, size, n)
        radius = _col(_u(rng, 0.012, 0.03, n) * size)
        dist = np.sqrt((yy - _col(dy)) ** 2 + (xx - _col(dx)) ** 2)
        speck = _sigmoid((radius - dist) / F32(0.5 * s)) * _col((debris > j).astype(F32))
        img = img + speck * _col(_u(rng, -0.25, 0.15, n))
    img = img[:, None] * (1 + _u(rng, -0.03, 0.03, (n, 3)))[:, :, None, None]
    img = _add_noise(rng, img, 0.015, 0.06)
    label = np.stack([owner == 0, owner == 1, position], axis=1).astype(np.uint8)
    return _to_uint8(img), label


_MAKERS = {"binary": _make_binary, "multiclass": _make_multiclass, "multilabel": _make_multilabel}


# ------------------------------------------------------------------------ public API
def sample_info(task: str, size: int, seed: int) -> DatasetInfo:
    """The dataset.yaml content of a sample data set (counts filled in when written)."""
    return DatasetInfo(
        task=task,
        classes=list(CLASSES[task]),
        image_size=(size, size),
        colors=list(COLORS[task]),
        seed=seed,
        source="sample",
        rotate=True,
    )


def _check(task: str, n: int, size: int, seed: int) -> None:
    if task not in TASK_KINDS:
        raise DataError(f"sample: unknown task {task!r}; choose one of {TASK_KINDS}")
    if n < 1:
        raise DataError(f"sample: n must be at least 1, not {n}")
    if size < 16 or size % 16:
        raise DataError(f"sample: size must be a positive multiple of 16, not {size}")
    if seed < 0:
        raise DataError(f"sample: seed must be non-negative, not {seed}")


def make_sample(
    task: str, n: int, size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    """Generate ``n`` images uint8 ``(n, size, size, 3)`` and labels uint8 ``(n, L, size, size)``.

    Labels use the in-memory encoding of :mod:`imseg.tasks`. The same
    arguments always give the same arrays.
    """
    _check(task, n, size, seed)
    images, labels = _MAKERS[task](np.random.default_rng(seed), n, size)
    return images, labels, sample_info(task, size, seed)


def split_seed(seed: int, index: int) -> int:
    """Generator seed of part ``index`` (0 train, 1 val, 2 test) of the data set of ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _params(n: int, labeled_fraction: float) -> dict:
    """What dataset.yaml's ``extra`` records, beyond task, size and seed, to recognise a rerun."""
    return {
        "generator": GENERATOR_VERSION,
        "n": n,
        "labeled_fraction": float(labeled_fraction),
    }


def _reuse(out: Path, task: str, size: int, seed: int, params: dict) -> DatasetInfo:
    """The info of an existing sample data set in ``out`` made with the same parameters."""
    wanted = (
        f"task={task} n={params['n']} size={size} seed={seed} "
        f"labeled_fraction={params['labeled_fraction']}"
    )
    try:
        info = read_info(out)
    except DataError:
        info = None
    same = (
        info is not None
        and info.source == "sample"
        and info.task == task
        and info.image_size == (size, size)
        and info.seed == seed
        and info.extra == params
    )
    if not same:
        raise DataError(
            f"{out} is not empty and does not hold a sample data set made with {wanted}; "
            "choose another output folder or remove it"
        )
    on_disk = {split: count_split(out, split) for split in SPLITS}
    if on_disk != info.counts:
        raise DataError(
            f"{out}: dataset.yaml counts {info.counts} do not match the files {on_disk}; "
            "remove the folder and prepare it again"
        )
    return info


def prepare_sample(
    task: str,
    out: Path,
    n: int = 200,
    size: int = 64,
    seed: int = 0,
    labeled_fraction: float = 0.1,
) -> DatasetInfo:
    """Generate a sample data set and write it in the prepared layout at ``out``.

    ``n`` train images, of which ``round(labeled_fraction * n)`` (at least one)
    are labeled; the unlabeled ones keep their masks as hidden truth. Val and
    test get ``max(8, n // 4)`` images each. A folder that already holds the
    same sample data set is returned as is (the demo calls this every time);
    any other non-empty folder raises :class:`DataError`. The data set is
    written to a temporary sibling and renamed, so an interrupted run leaves
    nothing half-written at ``out``.
    """
    _check(task, n, size, seed)
    if not 0.0 < labeled_fraction <= 1.0:
        raise DataError(f"sample: labeled fraction must lie in (0, 1], not {labeled_fraction}")
    out = Path(out)
    params = _params(n, labeled_fraction)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        return _reuse(out, task, size, seed, params)

    info = sample_info(task, size, seed)
    info.extra = params
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    tmp.chmod(new_mode(folder=True))  # not mkdtemp's private 0700
    try:
        _write(tmp, info, n, max(1, int(round(labeled_fraction * n))))
        try:
            if out.is_dir() and not any(out.iterdir()):
                out.rmdir()
            tmp.rename(out)
        except OSError:
            if out.is_dir() and any(out.iterdir()):  # another process finished first
                return _reuse(out, task, size, seed, params)
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return info


def _write(root: Path, info: DatasetInfo, n: int, n_labeled: int) -> None:
    """Generate and write train (labeled first), val and test, then dataset.yaml."""
    size, seed = info.image_size[0], info.seed
    n_eval = max(8, n // 4)
    width = max(4, len(str(max(n, n_eval))))
    task = info.task_obj
    for prefix, count, index in (("train", n, 0), ("val", n_eval, 1), ("test", n_eval, 2)):
        images, labels, _ = make_sample(info.task, count, size, split_seed(seed, index))
        for i in range(count):
            split = prefix
            if prefix == "train":
                split = "train_labeled" if i < n_labeled else "train_unlabeled"
            write_pair(root, split, f"{prefix}_{i:0{width}d}", images[i], labels[i], task)
    for split in SPLITS:  # every split exists, even an empty unlabeled one
        for folder in split_dirs(root, split):
            folder.mkdir(parents=True, exist_ok=True)
    finalize_counts(root, info)


# ----------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``imseg prepare sample`` to the sub-commands of ``imseg prepare``."""
    parser = subparsers.add_parser(
        "sample",
        help="generate a small synthetic data set (demo and tests)",
        description="Generate a synthetic data set in the prepared layout.",
    )
    parser.add_argument("--task", required=True, choices=TASK_KINDS)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--n", type=int, default=200, help="train images (default 200)")
    parser.add_argument("--size", type=int, default=64, help="image side, multiple of 16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--labeled-fraction", type=float, default=0.1, help="labeled share of train (0.1)"
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    info = prepare_sample(
        args.task,
        args.out,
        n=args.n,
        size=args.size,
        seed=args.seed,
        labeled_fraction=args.labeled_fraction,
    )
    c = info.counts
    print(
        f"sample {info.task}: {c['train_labeled']} labeled, {c['train_unlabeled']} unlabeled, "
        f"{c['val']} val, {c['test']} test images in {args.out}"
    )
    return 0
