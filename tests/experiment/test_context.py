"""A run's labeled split: later runs draw a new one, whole images at a time."""

from __future__ import annotations

import numpy as np
from conftest import TINY
from PIL import Image

from imseg.config import build_config
from imseg.data.sources.folder import prepare_folder
from imseg.data.splitting import seeded_permutation
from imseg.data.tiles import tile_source
from imseg.experiment.context import RunContext


def _tiled_set(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(12):
        image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
        mask = (rng.random((64, 80)) > 0.5).astype(np.uint8) * 255
        for folder, arr in (("images", image), ("masks", mask)):
            (tmp_path / "src" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(tmp_path / "src" / folder / f"im{i:02d}.png")
    prepare_folder(images=tmp_path / "src" / "images", masks=tmp_path / "src" / "masks",
                   out=tmp_path / "data", size=(32, 32), tile_scale=1.0, labeled_fraction=0.3)
    return RunContext.open(tmp_path / "data", tmp_path / "run", build_config(overrides=TINY),
                           progress=False)


def _sources(split) -> set[str]:
    return {tile_source(s) for s in split.stems}


def test_later_runs_draw_whole_images_and_keep_scoring_them_whole(tmp_path):
    ctx = _tiled_set(tmp_path)
    first_labeled, _ = ctx.splits_for_run(0)
    drawn = []
    for run in (1, 2):
        labeled, unlabeled = ctx.splits_for_run(run)
        assert not _sources(labeled) & _sources(unlabeled)  # no image on both sides
        assert len(_sources(labeled)) == len(_sources(first_labeled))
        assert len(labeled) + len(unlabeled) == len(ctx.dataset.labeled) + len(ctx.dataset.unlabeled)
        for split in (labeled, unlabeled):  # one group per source image
            pairs = {(int(g), tile_source(s)) for g, s in zip(split.groups, split.stems,
                                                               strict=True)}
            assert len(pairs) == len(_sources(split)) == len({g for g, _ in pairs})
        drawn.append(_sources(labeled))
    assert drawn[0] != drawn[1] or drawn[0] != _sources(first_labeled)


def test_later_runs_of_whole_images_draw_as_before(binary_data, tmp_path):
    """Without tiles every image is its own source: the draw is the one earlier versions
    made, so runs already on disk resume on the same split."""
    ctx = RunContext.open(binary_data, tmp_path / "run", build_config(overrides=TINY),
                          progress=False)
    ds = ctx.dataset
    pool = ds.labeled.stems + ds.unlabeled.stems
    order = seeded_permutation(pool, ds.info.seed + 1)
    labeled, unlabeled = ctx.splits_for_run(1)
    assert labeled.stems == [s for s in pool if s in set(order[: len(ds.labeled)])]
    assert unlabeled.stems == [s for s in pool if s in set(order[len(ds.labeled):])]
    assert labeled.groups is None and unlabeled.groups is None
