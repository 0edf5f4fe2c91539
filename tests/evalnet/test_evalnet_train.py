"""Training one EvalNet: its loss, its batches, and that it learns to rank masks."""

from __future__ import annotations

import pytest
import torch

from imseg.config import EvalNetConfig
from imseg.data.sources.sample import make_sample
from imseg.evalnet.data import EvalNetData, targets_in_chunks
from imseg.evalnet.ensemble import build_evalnet, checkpoint_spec, load_evalnet, predict
from imseg.evalnet.stats import spearman
from imseg.evalnet.targets import Targets
from imseg.evalnet.train import epoch_indices, evalnet_loss, train_evalnet
from imseg.pseudo.inconsistency import dilate, erode
from imseg.storage import save_checkpoint
from imseg.tasks import Task

BINARY = Task("binary", 1)
CPU = torch.device("cpu")


def test_loss_is_mse_and_per_class_adds_bce():
    iou = torch.tensor([0.5, 1.0])
    assert float(evalnet_loss(iou, None, Targets(torch.tensor([0.0, 1.0])))) == pytest.approx(0.125)
    target = Targets(torch.zeros(1), torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    loss = evalnet_loss(torch.tensor([[0.5, 0.0]]), torch.tensor([[0.5, 0.5]]), target)
    expected = 0.125 + float(-torch.log(torch.tensor(0.5)))  # MSE + BCE of two 0.5s
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_epoch_indices_cover_every_row_before_repeating():
    idx = epoch_indices(5, 2, 4, torch.Generator().manual_seed(0))
    assert idx.shape == (4, 2)
    assert sorted(idx.flatten()[:5].tolist()) == [0, 1, 2, 3, 4]


def _candidates(images: torch.Tensor, truth: torch.Tensor, rows: torch.Tensor,
                generator: torch.Generator) -> EvalNetData:
    """Eight masks per image of graded quality: the truth; with 5, 15 and 30 % of its
    pixels flipped; eroded; dilated; empty; and another image's truth."""
    m = truth[rows].bool()
    flips = [torch.rand(m.shape, generator=generator) < p for p in (0.05, 0.15, 0.3)]
    variants = torch.stack([m, *(m ^ f for f in flips), erode(m, 5), dilate(m, 9),
                            torch.zeros_like(m), torch.roll(m, 1, 0)]).to(torch.uint8)
    masks = variants.flatten(0, 1)
    index = rows.repeat(variants.shape[0])
    return EvalNetData(images, index, masks, targets_in_chunks(BINARY, masks, truth, index, CPU))


def test_evalnet_learns_to_rank_masks_of_sample_data(tmp_path):
    # 64 training images x 8 masks, two epochs of 32 steps: about 20 s on two CPU cores
    images, labels, _ = make_sample("binary", 80, 64, 3)
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    truth = torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(1)
    train = _candidates(images, truth, torch.arange(64), generator)
    val = _candidates(images, truth, torch.arange(64, 80), generator)
    net = build_evalnet(BINARY, 3, alpha=1.0, bn_momentum=0.1, generator=generator)
    cfg = EvalNetConfig(epochs=2, batch_size=16)
    fit = train_evalnet(net, BINARY, train, val, cfg, CPU, generator, amp=False, progress=False)
    assert len(fit.history) == 2 and fit.val_mae == min(fit.history)
    assert fit.val_spearman > 0.3
    # the kept weights are the best epoch's, and they survive a checkpoint round trip
    path = tmp_path / "e0.pt"
    save_checkpoint(path, {"model": checkpoint_spec(net, 0.1), "state_dict": fit.state})
    again = predict([load_evalnet(path)], BINARY, val.images, val.masks, CPU, amp=False,
                    index=val.index)
    assert spearman(again.score, val.targets.score) == pytest.approx(fit.val_spearman, abs=1e-6)
