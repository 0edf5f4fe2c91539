"""EvalNet selection: best candidate above the threshold, accumulating over generations."""

from __future__ import annotations

import torch
from torch import nn

from imseg.evalnet.select import (
    Selection,
    load_selection,
    save_selection,
    select,
    select_batch,
    selection_path,
)
from imseg.pseudo.labelers import LabelingInput
from imseg.tasks import Task

BINARY = Task("binary", 1)
CPU = torch.device("cpu")


def foreground_share(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """A fake EvalNet ensemble: a mask's score is its foreground share."""
    return (masks == 1).flatten(1).float().mean(1)


def _mask(share: float, size: int = 4) -> torch.Tensor:
    m = torch.zeros(1, size, size, dtype=torch.uint8)
    m.view(-1)[: round(share * size * size)] = 1
    return m


def test_select_batch_keeps_the_best_candidate_above_the_threshold():
    x = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    candidates = torch.stack([
        torch.stack([_mask(0.5), _mask(0.125), _mask(0.0)]),
        torch.stack([_mask(0.25), _mask(0.1875), _mask(0.0)]),
    ])  # (T=2, B=3, 1, 4, 4)
    previous = torch.stack([_mask(0.0), _mask(0.0), _mask(0.75)])
    ok = torch.tensor([False, False, True])
    chosen, best, keep = select_batch(x, candidates, previous, ok, foreground_share, 0.3)
    assert keep.tolist() == [True, False, True]
    assert best.tolist() == [0.5, 0.1875, 0.75]
    assert torch.equal(chosen[0], _mask(0.5)) and torch.equal(chosen[2], _mask(0.75))
    # without a previous selection the third image has nothing above the threshold
    _, _, keep = select_batch(x, candidates, None, torch.zeros(3, dtype=torch.bool),
                              foreground_share, 0.3)
    assert keep.tolist() == [True, False, False]


class Above(nn.Module):
    """A fake teacher: foreground where the first channel exceeds ``t``."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] - self.t) * 10


def _images(n: int = 6) -> torch.Tensor:
    """Image ``i`` row ``r`` has the value ``20 i + 25 r``: brighter images, more foreground."""
    rows = torch.arange(8).view(1, 8, 1) * 25 + torch.arange(n).view(n, 1, 1) * 20
    return rows.expand(n, 8, 8).unsqueeze(1).repeat(1, 3, 1, 1).to(torch.uint8)


def _input(teachers: list[nn.Module], images: torch.Tensor) -> LabelingInput:
    return LabelingInput(task=BINARY, teachers=teachers, images=images, device=CPU,
                         batch_size=4, generator=torch.Generator(),
                         amp=False, sample_index=[1])


def _share(images: torch.Tensor, t: float) -> torch.Tensor:
    return (images[:, 0] > t).flatten(1).float().mean(1)


def test_selection_accumulates_over_generations():
    images = _images()
    gen1 = select(_input([Above(150), Above(100)], images), foreground_share, 0.5, None)
    # each image's best teacher is the lower threshold; kept where its share >= 0.5
    share1 = _share(images, 100)
    assert gen1.source.tolist() == (share1 >= 0.5).nonzero().squeeze(1).tolist()
    assert torch.allclose(gen1.scores, share1[gen1.source])
    assert torch.equal(gen1.images, images[gen1.source])
    assert set(gen1.teacher_labels) == {1} and gen1.teacher_labels[1].shape == (2, 1, 8, 8)
    previous = Selection(gen1.source, gen1.labels, gen1.scores)
    # generation 2: stricter students; earlier selections stay with their better masks,
    # and an image only the new, looser student covers well joins
    gen2 = select(_input([Above(170), Above(60)], images), foreground_share, 0.5, previous)
    share2 = torch.maximum(_share(images, 170), _share(images, 60))
    expected = sorted(set(gen1.source.tolist()) | set((share2 >= 0.5).nonzero()
                                                         .squeeze(1).tolist()))
    assert gen2.source.tolist() == expected
    assert len(expected) > len(gen1.source)
    for j, i in enumerate(gen2.source.tolist()):
        before = float(share1[i]) if i in gen1.source.tolist() else 0.0
        assert float(gen2.scores[j]) == max(before, float(share2[i]))


def test_selection_round_trip(tmp_path):
    sel = Selection(torch.tensor([1, 4]), torch.ones(2, 1, 4, 4, dtype=torch.uint8),
                    torch.tensor([0.8, 0.9]))
    path = selection_path(tmp_path, "evalnet/r0_g1")
    assert path == tmp_path / "state" / "evalnet_select" / "evalnet" / "r0_g1.pt"
    save_selection(path, sel)
    back = load_selection(path)
    assert torch.equal(back.source, sel.source) and torch.equal(back.labels, sel.labels)
    assert torch.equal(back.scores, sel.scores)
    assert sel.lookup(6).tolist() == [-1, 0, -1, -1, 1, -1]
