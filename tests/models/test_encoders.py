"""smp models behind imseg's interface: config names checked with close matches, input
handling (normalisation, grey input, any size), local encoder weights, checkpoints that
rebuild the net alone, a DINOv2-style ViT with DPT, and one clear error without the extra."""

from __future__ import annotations

import importlib
import importlib.util

import pytest
import torch

from imseg.config import build_config
from imseg.data.layout import DatasetInfo
from imseg.errors import ConfigError, DataError
from imseg.models import encoders
from imseg.models.checkpoint import ModelSpec, checkpoint_payload, read_checkpoint
from imseg.storage import save_checkpoint

INFO = DatasetInfo(task="binary", classes=["fg"], image_size=(64, 64), channels=1,
                   colors=[(255, 0, 0)], rotate=False, extra={})


def unet(in_channels: int = 3, out_channels: int = 1, weights: str = "none",
         encoder: str = "resnet18", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    spec = ModelSpec(in_channels, out_channels, kind="smp", arch="Unet", encoder=encoder,
                     weights=weights)
    return spec.build(pretrained=True)


# ------------------------------------------------------------------------------ config
def test_the_command_line_names_an_smp_model(smp):
    cfg = build_config(sets=["model.arch=unet", "model.encoder=resnet18", "model.weights=none"])
    assert (cfg.model.arch, cfg.model.encoder, cfg.model.weights) == ("Unet", "resnet18", "none")
    assert build_config(sets=["model.arch=FPN"]).model.encoder == "resnet34"  # smp's default
    tu = build_config(sets=["model.arch=Unet", "model.encoder=tu-resnet10t"])
    assert tu.model.encoder == "tu-resnet10t"


@pytest.mark.parametrize("sets, close", [
    (["model.arch=Unte"], "close names: Unet"),
    (["model.arch=Unet", "model.encoder=resnet19"], "close names: resnet18"),
    (["model.arch=Unet", "model.encoder=tu-convnxt_tiny"], "tu-convnext_tiny"),
    (["model.arch=Unet", "model.student_encoders=[resnet34, resnt50]"], "resnet50"),
])
def test_unknown_names_are_one_error_with_close_names(smp, sets, close):
    with pytest.raises(ConfigError, match="unknown name") as caught:
        build_config(sets=sets)
    assert close in str(caught.value)


def test_tiny_unet_takes_no_encoder_settings():
    with pytest.raises(ConfigError, match="model.encoder, model.weights: for smp"):
        build_config(sets=["model.encoder=resnet18", "model.weights=imagenet"])
    assert build_config().model.arch == "tiny_unet"  # the default stays the paper's net


def test_a_weight_file_is_made_absolute_and_students_need_another_source(smp, tmp_path,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = build_config(sets=["model.arch=Unet", "model.weights=enc.pt"])
    assert cfg.model.weights == str(tmp_path / "enc.pt")
    with pytest.raises(ConfigError, match="must be none, imagenet or a file path"):
        build_config(sets=["model.arch=Unet", "model.weights=imagnet"])
    with pytest.raises(ConfigError, match="students with \\['resnet34'\\]"):
        build_config(sets=["model.arch=Unet", "model.encoder=resnet18", "model.weights=enc.pt",
                           "model.student_encoders=[resnet34]"])


def test_without_the_extra_the_error_names_it(monkeypatch):
    real = importlib.import_module

    def no_smp(name, *args):
        if name == "segmentation_models_pytorch":
            raise ModuleNotFoundError("No module named 'segmentation_models_pytorch'",
                                      name=name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_smp)
    with pytest.raises(ConfigError, match=r'pip install "imseg\[models\]"'):
        ModelSpec(3, 1, kind="smp", arch="Unet", encoder="resnet18").build()


# ------------------------------------------------------------------------------ input handling
def test_the_net_normalises_grey_images_and_takes_any_size(smp):
    model = unet(in_channels=1, out_channels=2).eval()
    seen = []
    model.net.encoder.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    grey = torch.full((2, 1, 50, 70), 0.485 * 255)  # ImageNet's red mean
    with torch.no_grad():
        logits = model(grey)
    assert logits.shape == (2, 2, 50, 70) and logits.dtype == torch.float32
    x = seen[0]
    assert x.shape == (2, 3, 64, 96)  # grey → RGB, padded to multiples of the stride 32
    assert model.divisor == 32
    assert torch.allclose(x[:, 0, :50, :70], torch.zeros(()), atol=1e-6)  # (v - mean) / std
    expected_green = (0.485 - 0.456) / 0.224
    assert torch.allclose(x[:, 1, :50, :70], torch.tensor(expected_green), atol=1e-5)
    assert (x[..., 50:, :] == 0).all() and (x[..., 70:] == 0).all()  # padding: the mean


def test_output_channels_follow_the_task_and_a_wrong_input_is_refused(smp):
    model = unet(in_channels=3, out_channels=4).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4, 32, 32)
    with pytest.raises(ValueError, match="expects 3"):
        model(torch.zeros(1, 1, 32, 32))


# ------------------------------------------------------------------------------ weights
def test_weights_from_a_file_are_the_saved_encoders(smp, tmp_path):
    saved = unet(seed=1).net.encoder.state_dict()
    torch.save(saved, tmp_path / "encoder.pt")
    model = unet(weights=str(tmp_path / "encoder.pt"), seed=2)
    got = model.net.encoder.state_dict()
    assert got.keys() == saved.keys()
    assert all(torch.equal(got[k], saved[k]) for k in saved)
    # the decoder starts fresh: it is not the saving model's
    other = unet(seed=1).net.decoder.state_dict()
    k = next(iter(other))
    assert not torch.equal(model.net.decoder.state_dict()[k], other[k])


def test_weights_from_a_whole_model_file_and_a_wrong_file(smp, tmp_path):
    whole = unet(seed=3).state_dict()  # an imseg EncoderNet: net.encoder.* names
    torch.save({"state_dict": whole}, tmp_path / "whole.pt")
    model = unet(weights=str(tmp_path / "whole.pt"), seed=4)
    assert torch.equal(model.net.encoder.conv1.weight, whole["net.encoder.conv1.weight"])
    torch.save(unet(encoder="resnet34").net.encoder.state_dict(), tmp_path / "r34.pt")
    with pytest.raises(DataError, match="not weights of encoder resnet18"):
        unet(weights=str(tmp_path / "r34.pt"))
    with pytest.raises(DataError, match="not found"):
        unet(weights=str(tmp_path / "missing.pt"))


def test_a_timm_models_own_file_loads_into_its_tu_encoder(smp, tmp_path):
    import timm

    full = timm.create_model("convnext_atto").state_dict()  # names as timm saves them
    torch.save(full, tmp_path / "convnext_atto.pth")
    model = unet(encoder="tu-convnext_atto", weights=str(tmp_path / "convnext_atto.pth"))
    got = model.net.encoder.state_dict()  # a feature extractor: stages.1 → stages_1
    assert torch.equal(got["model.stages_1.blocks.0.conv_dw.weight"],
                       full["stages.1.blocks.0.conv_dw.weight"])


def test_a_checkpoint_rebuilds_the_net_without_its_weight_file(smp, tmp_path):
    weights = tmp_path / "encoder.pt"
    torch.save(unet(in_channels=1, seed=5).net.encoder.state_dict(), weights)
    spec = ModelSpec(1, 1, kind="smp", arch="Unet", encoder="resnet18", weights=str(weights))
    model = spec.build(pretrained=True).eval()
    save_checkpoint(tmp_path / "c0.pt", checkpoint_payload(spec, model.state_dict(), INFO))
    weights.unlink()  # a checkpoint holds every weight: the file is needed no more
    loaded, meta = read_checkpoint(tmp_path / "c0.pt")
    assert meta.spec == spec
    raw = torch.load(tmp_path / "c0.pt", weights_only=True)["model"]
    assert raw["kind"] == "smp" and "alpha" not in raw
    x = torch.randint(0, 256, (2, 1, 64, 64)).float()
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))


def test_an_exported_smp_model_runs_at_other_sizes(smp, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from imseg.export import export_onnx
    from imseg.predict import checkpoint_models

    spec = ModelSpec(1, 1, kind="smp", arch="Unet", encoder="resnet18")
    model = unet(in_channels=1).eval()
    save_checkpoint(tmp_path / "c0.pt", checkpoint_payload(spec, model.state_dict(), INFO))
    meta = export_onnx(checkpoint_models([tmp_path / "c0.pt"]), tmp_path / "onnx")
    assert "any height and width run" in meta["input"]["size"]
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model1.onnx"),
                                   providers=["CPUExecutionProvider"])
    for h, w in [(64, 64), (40, 72)]:  # the padding follows the size: not fixed by the trace
        images = torch.randint(0, 256, (2, 1, h, w)).float()
        got = torch.from_numpy(session.run(["probabilities"], {"image": images.numpy()})[0])
        with torch.no_grad():
            expected = torch.sigmoid(model(images))
        assert got.shape == (2, 1, h, w) and torch.allclose(got, expected, atol=1e-4)


# ------------------------------------------------------------------------------ a ViT
def test_a_dinov2_style_vit_with_dpt_trains_a_step(smp):
    name = "tu-vit_small_patch14_dinov2"
    with pytest.raises(ConfigError, match="patch_size: 16"):  # smp's DPT needs patch 16
        ModelSpec(3, 1, kind="smp", arch="DPT", encoder=name).build()
    torch.manual_seed(0)
    small_decoder = {"patch_size": 16, "decoder_intermediate_channels": [32, 64, 128, 128],
                     "decoder_fusion_channels": 32}
    model = ModelSpec(3, 2, kind="smp", arch="DPT", encoder=name,
                      options=small_decoder).build(pretrained=True)
    assert model.divisor == 32 and model.net.encoder.model.patch_embed.patch_size == (16, 16)
    images = torch.randint(0, 256, (2, 3, 48, 40)).float()
    labels = torch.randint(0, 2, (2, 2, 48, 40)).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = model.net.encoder.model.blocks[0].attn.qkv.weight.detach().clone()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), labels)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(model.net.encoder.model.blocks[0].attn.qkv.weight, before)


def test_encoder_file_names_are_recognised():
    assert encoders.is_weight_file("weights/enc.pt") and encoders.is_weight_file("x.safetensors")
    assert not encoders.is_weight_file("imagenet")


# ------------------------------------------------------------------------------ precise BN
def test_precise_statistics_of_an_smp_model_are_its_layers_pooled_inputs(smp):
    from imseg.config import TrainConfig
    from imseg.training.batchnorm import bn_layers
    from imseg.training.fit import refresh_bn_stats

    model = unet()
    layers = bn_layers(model)
    assert len(layers) > 20  # the encoder's and the decoder's
    first, last = layers[0], layers[-1]
    seen: dict[torch.nn.Module, list[torch.Tensor]] = {first: [], last: []}
    for layer in seen:
        layer.register_forward_pre_hook(lambda m, args: seen[m].append(args[0].detach()))
    images = torch.randint(0, 256, (6, 3, 64, 64), generator=torch.Generator().manual_seed(3),
                           dtype=torch.uint8)
    cfg = TrainConfig(batch_size=4, amp="never", channels_last=False, bn_stats="precise")
    refresh_bn_stats(model.train(), images, cfg, torch.device("cpu"),
                     torch.Generator().manual_seed(0))
    for layer, inputs in seen.items():
        x = torch.cat(inputs).double().transpose(0, 1).flatten(1)
        var, mean = torch.var_mean(x, dim=1, unbiased=True)
        assert torch.allclose(layer.running_mean.double(), mean, rtol=1e-4, atol=1e-5)
        assert torch.allclose(layer.running_var.double(), var, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ training paths
def test_an_smp_model_trains_in_bfloat16_autocast_and_channels_last(smp, monkeypatch):
    """The mixed-precision and channels_last path CUDA takes (here on CPU, amp: always)."""
    from imseg.config import TrainConfig
    from imseg.training import inference

    monkeypatch.setattr(inference, "cpu_has_bfloat16", lambda: True)  # the path, on any CPU
    from imseg.data.dataset import Split
    from imseg.tasks import Task
    from imseg.training.fit import fit

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 64, 64), generator=gen, dtype=torch.uint8)
    labels = (images[:, :1] > 128).to(torch.uint8)
    train = Split(images[:6], labels[:6], [str(i) for i in range(6)])
    val = Split(images[6:], labels[6:], ["6", "7"])
    cfg = TrainConfig(epochs=2, batch_size=3, amp="always", channels_last=True)
    model = unet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, Task("binary", 1), train, val, cfg, torch.device("cpu"), gen,
                 progress=False)
    assert 0.0 <= result.val["iou"] <= 1.0 and result.best_epoch in (1, 2)
    assert any(not torch.equal(before[k], v) for k, v in result.state.items())
    assert all(v.dtype == before[k].dtype for k, v in result.state.items())  # weights stay fp32
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.eval()(images[:2].float().contiguous(memory_format=torch.channels_last))
    assert out.shape == (2, 1, 64, 64) and torch.isfinite(out.float()).all()


# ------------------------------------------------------------------------------ the zoo
ZOO = [  # (arch, encoder, options): a sample of the smp / timm families the README offers
    ("Unet", "resnet18", {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}),
    ("Unet", "timm-tf_efficientnet_lite0", {}),
    ("FPN", "efficientnet-b0", {}),
    ("Segformer", "mit_b0", {}),
    ("DeepLabV3Plus", "tu-resnet10t", {}),
]


@pytest.mark.parametrize("arch, encoder, options", ZOO, ids=[f"{a}-{e}" for a, e, _ in ZOO])
def test_every_family_trains_with_precise_statistics_predicts_and_exports(
        smp, tmp_path, arch, encoder, options):
    """One training step, precise BatchNorm statistics (the default), a checkpoint that
    predicts as the trained net, and an ONNX export (issue 24: EfficientNets kept an
    unused classifier-side BatchNorm layer, so precise statistics stopped the run)."""
    from imseg.config import TrainConfig
    from imseg.data.dataset import Split
    from imseg.tasks import Task
    from imseg.training.batchnorm import bn_layers
    from imseg.training.fit import fit

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 1, 64, 64), generator=gen, dtype=torch.uint8)
    labels = (images > 128).to(torch.uint8)
    train, val = Split(images[:4], labels[:4], list("abcd")), Split(images[4:], labels[4:], ["e", "f"])
    spec = ModelSpec(1, 1, kind="smp", arch=arch, encoder=encoder, options=options)
    torch.manual_seed(0)
    model = spec.build(pretrained=True)
    stats_before = {id(m): m.running_var.clone() for m in bn_layers(model)}
    cfg = TrainConfig(epochs=1, batch_size=4, amp="never", channels_last=False, bn_stats="precise")
    result = fit(model, Task("binary", 1), train, val, cfg, torch.device("cpu"), gen,
                 progress=False)
    # every parameter took part (DDP refuses parameters without gradients) and every
    # BatchNorm layer got statistics
    assert all(p.grad is not None for p in model.parameters())
    assert all(not torch.equal(m.running_var, stats_before[id(m)]) for m in bn_layers(model))
    save_checkpoint(tmp_path / "c0.pt", checkpoint_payload(spec, result.state, INFO))
    loaded = read_checkpoint(tmp_path / "c0.pt")[0].eval()
    with torch.no_grad():
        assert torch.equal(loaded(val.images.float()), model.eval()(val.images.float()))
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        from imseg.export import export_onnx
        from imseg.predict import checkpoint_models

        meta = export_onnx(checkpoint_models([tmp_path / "c0.pt"]), tmp_path / "onnx")
        assert meta["models"][0]["runtime_max_abs_diff"] < 1e-3
