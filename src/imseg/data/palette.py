"""Palette files: the colour of each class in RGB colour-coded masks.

Many data sets (SUIM, CamVid, VOC exports) store masks as RGB images where
each class has one colour. A palette file names the classes in class-id order
and gives their colours, so such masks can be turned into class-id masks.

Format: a YAML (or JSON) list, one entry per class, in class-id order::

    # suim.yaml
    - {name: background, color: [0, 0, 0]}
    - {name: divers, color: [0, 0, 255]}
    - {name: plants, color: [0, 255, 0]}
    - {name: wrecks, color: "#00ffff"}

``color`` is ``[r, g, b]`` with values 0..255, or a ``"#rrggbb"`` string.
Names and colours must be unique. The same list in JSON
(``[{"name": "background", "color": [0, 0, 0]}, ...]``) is read when the file
ends in ``.json``.

A ``labelmap.txt`` as CVAT's "Segmentation mask" (Pascal VOC) export writes it
is read as it is (a ``.txt`` file): one ``name:r,g,b:parts:actions`` line per
class in class-id order, ``#`` lines are comments::

    # label:color_rgb:parts:actions
    background:0,0,0::
    polyp:250,50,83::
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from imseg.errors import DataError

Color = tuple[int, int, int]


@dataclass(frozen=True)
class Palette:
    """Class names and their RGB colours, both in class-id order."""

    names: tuple[str, ...]
    colors: tuple[Color, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise ValueError("a palette needs one colour per name")

    def __len__(self) -> int:
        return len(self.names)


def read_palette(path: Path) -> Palette:
    """Read and check a palette file; a DataError names the file and the bad entry."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: palette file not found")
    try:
        text = path.read_text()
        if path.suffix.lower() == ".txt":
            data = _labelmap_entries(text, str(path))
        else:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read palette ({exc})") from exc
    return parse_palette(data, str(path))


def _labelmap_entries(text: str, source: str) -> list[dict]:
    """CVAT/VOC ``labelmap.txt`` lines (``name:r,g,b:parts:actions``) → palette entries."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(":")
        rgb = fields[1].split(",") if len(fields) > 1 else []
        if len(rgb) != 3 or not all(v.strip().isdigit() for v in rgb):
            raise DataError(f"{source}: line {number} {line.strip()!r} is not "
                            "'name:r,g,b:parts:actions'")
        entries.append({"name": fields[0], "color": [int(v) for v in rgb]})
    return entries


def parse_palette(data: object, source: str = "palette") -> Palette:
    """A loaded palette list (see the module docstring) → :class:`Palette`."""
    if not isinstance(data, list) or not data:
        raise DataError(f"{source}: a palette is a non-empty list of {{name, color}} entries")
    if len(data) > 256:
        raise DataError(f"{source}: {len(data)} entries; at most 256 classes fit in a mask")
    names: list[str] = []
    colors: list[Color] = []
    for i, entry in enumerate(data):
        where = f"{source}: entry {i + 1}"
        if not isinstance(entry, dict) or set(entry) != {"name", "color"}:
            raise DataError(f"{where}: expected exactly the keys 'name' and 'color', got {entry!r}")
        name = str(entry["name"]).strip()
        if not name:
            raise DataError(f"{where}: empty class name")
        color = _parse_color(entry["color"], where)
        if name in names:
            raise DataError(f"{where}: class name {name!r} appears twice")
        if color in colors:
            raise DataError(
                f"{where}: colour {list(color)} is already class {names[colors.index(color)]!r}"
            )
        names.append(name)
        colors.append(color)
    return Palette(tuple(names), tuple(colors))


def _parse_color(value: object, where: str) -> Color:
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) == 6:
            try:
                return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
            except ValueError:
                pass
        raise DataError(f"{where}: colour {value!r} is not '#rrggbb'")
    if (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        return (int(value[0]), int(value[1]), int(value[2]))
    raise DataError(f"{where}: colour {value!r} is not [r, g, b] with values 0..255")


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colors_to_ids(
    rgb: np.ndarray, palette: Palette, source: str = "mask", tolerance: int = 0
) -> np.ndarray:
    """An ``H×W×3`` colour-coded mask → ``H×W`` uint8 class ids (palette order).

    A pixel matches a class when its colour equals the class colour, or, with
    ``tolerance > 0``, differs by at most ``tolerance`` in every channel (the
    closest colour wins; for masks saved with slight colour noise). A pixel
    that matches no class raises a DataError naming ``source`` and the colours.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"{source}: a colour-coded mask must be RGB, got shape {rgb.shape}")
    keys = _pack(np.asarray(rgb))
    table = _pack(np.asarray(palette.colors, dtype=np.uint8))
    order = np.argsort(table)
    sorted_table = table[order]
    pos = np.searchsorted(sorted_table, keys).clip(0, len(table) - 1)
    matched = sorted_table[pos] == keys
    ids = order[pos].astype(np.uint8)
    if tolerance > 0 and not matched.all():
        loose = rgb[~matched].astype(np.int16)  # (K, 3)
        diff = np.abs(loose[:, None, :] - np.asarray(palette.colors, np.int16)[None]).max(-1)
        best = diff.argmin(axis=1)
        ok = diff[np.arange(len(best)), best] <= tolerance
        ids[~matched] = best.astype(np.uint8)
        matched[~matched] = ok
    if not matched.all():
        bad = np.unique(rgb[~matched].reshape(-1, 3), axis=0)
        shown = ", ".join(str(c) for c in bad[:5].tolist())
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DataError(
            f"{source}: {int((~matched).sum())} pixels have colours not in the palette: "
            f"{shown}{more}"
        )
    return ids


def ids_to_colors(ids: np.ndarray, colors: list[Color] | tuple[Color, ...]) -> np.ndarray:
    """``H×W`` class ids → ``H×W×3`` uint8 RGB; ids without a colour are drawn black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(colors)] = np.asarray(colors, dtype=np.uint8)
    return table[ids.astype(np.uint8)]
