"""Run folders of random (untrained) models over real prepared sets, and source images
with masks for ``prepare folder``: what the active-labeling tests share (tests/active,
tests/commands/test_suggest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from test_predict import save_model

from imseg.data.layout import read_info
from imseg.data.sources.folder import prepare_folder
from imseg.results import ResultsTable, checkpoint_name


def random_run(data: Path, run: Path, models: int = 3, noise: float = 0.05) -> Path:
    """A run folder on ``data`` whose LDT stage holds ``models`` random U-Nets (``noise``
    0.05: logits about 1, so they disagree on part of each image; 0.2: large logits,
    masks of several classes)."""
    info = read_info(data)
    run.mkdir(parents=True)
    (run / "run.yaml").write_text(yaml.safe_dump({"data": str(data)}))
    table = ResultsTable(run / "results.csv")
    for c in range(models):
        key = {"stage": "ldt", "approach": "ldt", "run": 0, "n_teachers": None,
               "generation": 0, "candidate": c}
        ckpt = checkpoint_name(key)
        save_model(run / ckpt, info, seed=c + 1, noise=noise, val={"iou": 0.5 - c / 10})
        table.add({**key, "val_iou": 0.5 - c / 10, "test_iou": 0.1, "checkpoint": ckpt})
    return run


def blob_sources(folder: Path, n: int, shape: tuple[int, int], seed: int = 0) -> None:
    """``folder/images/s<i>.png`` and ``folder/masks/s<i>.png`` (0/255 discs)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i in range(n):
        cy, cx, r = rng.uniform(8, shape[0] - 8), rng.uniform(8, shape[1] - 8), rng.uniform(4, 9)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        image = rng.integers(0, 120, (*shape, 3), dtype=np.uint8)
        image[disc] += 100
        Image.fromarray(image).save(folder / "images" / f"s{i}.png")
        Image.fromarray(disc.astype(np.uint8) * 255).save(folder / "masks" / f"s{i}.png")


def prepared_from_sources(tmp_path: Path, tile: bool) -> Path:
    """A binary set from 64×48 source images: resized to 32×32, or cut into 32×32 tiles."""
    blob_sources(tmp_path / "src", 12, (48, 64))
    out = tmp_path / ("tiled" if tile else "resized")
    prepare_folder(images=tmp_path / "src" / "images", masks=tmp_path / "src" / "masks",
                   out=out, size=(32, 32), labeled_fraction=0.25, val_fraction=0.2,
                   test_fraction=0.2, seed=1, tile_scale=1.0 if tile else 0.0,
                   progress=False)
    return out
