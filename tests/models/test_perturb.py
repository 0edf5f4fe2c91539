"""UniMatch's perturbed stream from real smp nets of each family the README offers (CNN,
ViT with DPT, MiT with Segformer), tiny and randomly initialised: the clean half is the
plain forward, the other half differs, and a UniMatch step trains through both."""

from __future__ import annotations

import pytest
import torch

from imseg.config import Config, TrainConfig
from imseg.data.augment import AugmentParams
from imseg.data.dataset import Split
from imseg.models.checkpoint import ModelSpec
from imseg.tasks import Task
from imseg.training.trainers import TRAINERS, TrainingSetup
from imseg.training.trainers.online import OnlineEpochs, forward_perturbed

FAMILIES = {
    "cnn": ("Unet", "resnet18", {}),
    "vit": ("DPT", "tu-vit_small_patch14_dinov2",
            {"patch_size": 16, "decoder_intermediate_channels": [32, 64, 128, 128],
             "decoder_fusion_channels": 32}),
    "mit": ("Segformer", "mit_b0", {}),
}


@pytest.fixture(params=sorted(FAMILIES))
def net(request):
    pytest.importorskip("timm")
    pytest.importorskip("segmentation_models_pytorch")
    arch, encoder, options = FAMILIES[request.param]
    torch.manual_seed(0)
    return ModelSpec(3, 2, kind="smp", arch=arch, encoder=encoder, options=options).build()


def test_the_clean_half_is_the_plain_forward_and_the_other_is_perturbed(net):
    net.eval()
    x = torch.randint(0, 256, (2, 3, 32, 32)).float()
    torch.manual_seed(0)
    clean, perturbed = forward_perturbed(net, x, 0.5)
    assert clean.shape == perturbed.shape == (2, 2, 32, 32)
    assert torch.allclose(clean, net(x), atol=1e-4)
    assert not torch.allclose(perturbed, clean, atol=1e-3)


def test_a_unimatch_step_trains_through_both_streams(net):
    task = Task("multilabel", 2)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 2, (2, 2, 32, 32), dtype=torch.uint8, generator=g)
    setup = TrainingSetup(task, Split(images, labels, ["a", "b"]), images.flip(0),
                          TrainConfig(batch_size=2, amp="never", channels_last=False),
                          torch.device("cpu"), AugmentParams())
    trainer = TRAINERS.parse({"name": "unimatch", "threshold": 0.0}, Config(), "test")
    epochs = OnlineEpochs(trainer, setup, torch.Generator().manual_seed(1))
    loss = epochs.loss(net, images, labels, images.flip(0))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    decoder_grads = [p.grad for p in net.net.decoder.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in decoder_grads)
