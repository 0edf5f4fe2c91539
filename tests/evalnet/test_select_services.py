"""The evalnet_select labeler: a part registered from the EvalNet layer, with its threshold
as a setting, its scorer, thresholds chosen on val and state store as services."""

from __future__ import annotations

import pytest
import torch
from test_evalnet_select import Above, _images, _input, foreground_share

from imseg.config import Config
from imseg.evalnet.select import EvalNetSelectLabeler, selection_path
from imseg.pseudo.labelers import LABELERS, PartServices
from imseg.pseudo.state import FileStateStore, MemoryStateStore

SELECT = EvalNetSelectLabeler(threshold=0.5)


def test_selection_is_saved_per_generation_and_reused(tmp_path):
    images = _images()
    store = FileStateStore(tmp_path / "state" / "evalnet_select",
                           lambda g: f"evalnet/r0_g{g}")
    inp = _input([Above(150), Above(100)], images)
    inp.services = PartServices(foreground_share, state=store)
    first = SELECT.label(inp)
    assert store.path(1) == selection_path(tmp_path, "evalnet/r0_g1") and store.path(1).is_file()

    def never(*_):
        raise AssertionError("a saved generation is not scored again")

    inp.services = PartServices(never, state=store)
    again = SELECT.label(inp)
    assert torch.equal(again.source, first.source) and torch.equal(again.labels, first.labels)
    # generation 2 starts from generation 1's selection
    later = _input([Above(250)], images)  # a teacher that finds nothing
    later.generation = 2
    later.services = PartServices(foreground_share, state=MemoryStateStore())
    later.services.state.save(1, store.load(1))
    kept = SELECT.label(later)
    assert kept.source.tolist() == first.source.tolist()


def test_evalnet_select_without_its_services_says_so():
    inp = _input([Above(100)], _images())
    with pytest.raises(ValueError, match="needs services"):
        SELECT.label(inp)


def test_evalnet_select_is_a_registered_labeler_taking_the_global_threshold():
    assert LABELERS.classes["evalnet_select"] is EvalNetSelectLabeler
    config = Config.model_validate({"evalnet": {"threshold": 0.3}})
    assert LABELERS.parse("evalnet_select", config, "recipe 'x'").threshold == 0.3
    assert LABELERS.parse({"name": "evalnet_select", "threshold": 0.6}, config,
                          "recipe 'x'").threshold == 0.6


def test_without_a_threshold_it_takes_the_one_chosen_on_val():
    chosen: list[str] = []

    def auto() -> dict[str, float]:
        chosen.append("read")
        return {"threshold": 0.5, "min_threshold": 0.1, "max_threshold": 0.2}

    services = PartServices(foreground_share, auto, MemoryStateStore())
    inp = _input([Above(150), Above(100)], _images())
    inp.services = services
    automatic = EvalNetSelectLabeler().label(inp)
    assert chosen == ["read"]
    inp.services = PartServices(foreground_share, state=MemoryStateStore())
    given = SELECT.label(inp)
    assert torch.equal(automatic.source, given.source)
    assert EvalNetSelectLabeler(threshold=0.25).threshold_in(services) == 0.25
    assert chosen == ["read"]  # a threshold of its own: nothing chosen on val is read
