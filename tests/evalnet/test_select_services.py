"""The evalnet_select labeler gets its scorer, threshold and state store as services."""

from __future__ import annotations

import pytest
import torch
from test_evalnet_select import Above, _images, _input, foreground_share

from imseg.evalnet.select import selection_path
from imseg.pseudo.labelers import LABELERS, LabelerServices
from imseg.pseudo.state import FileStateStore, MemoryStateStore


def test_selection_is_saved_per_generation_and_reused(tmp_path):
    images = _images()
    store = FileStateStore(tmp_path / "state" / "evalnet_select",
                           lambda g: f"evalnet/r0_g{g}")
    inp = _input([Above(150), Above(100)], images)
    inp.services = LabelerServices(foreground_share, 0.5, store)
    first = LABELERS["evalnet_select"](inp)
    assert store.path(1) == selection_path(tmp_path, "evalnet/r0_g1") and store.path(1).is_file()

    def never(*_):
        raise AssertionError("a saved generation is not scored again")

    inp.services = LabelerServices(never, 0.5, store)
    again = LABELERS["evalnet_select"](inp)
    assert torch.equal(again.source, first.source) and torch.equal(again.labels, first.labels)
    # generation 2 starts from generation 1's selection
    later = _input([Above(250)], images)  # a teacher that finds nothing
    later.generation = 2
    later.services = LabelerServices(foreground_share, 0.5, MemoryStateStore())
    later.services.state.save(1, store.load(1))
    kept = LABELERS["evalnet_select"](later)
    assert kept.source.tolist() == first.source.tolist()


def test_evalnet_select_without_its_services_says_so():
    inp = _input([Above(100)], _images())
    with pytest.raises(ValueError, match="needs services"):
        LABELERS["evalnet_select"](inp)
