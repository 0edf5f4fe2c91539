"""The checkpoint format: a round trip keeps weights and data metadata; old checkpoints
still load; foreign files fail with one clear DataError."""

from __future__ import annotations

import pytest
import torch

from imseg.data.layout import DatasetInfo
from imseg.errors import DataError
from imseg.models.checkpoint import (
    VERSION,
    ModelSpec,
    checkpoint_payload,
    load_model,
    mask_void,
    read_checkpoint,
)
from imseg.models.unet import build_unet
from imseg.storage import save_checkpoint
from imseg.tasks import Task

INFO = DatasetInfo(task="multiclass", classes=["sky", "road", "car"], image_size=(32, 48),
                   channels=1, colors=[(1, 2, 3), (4, 5, 6), (7, 8, 9)], rotate=False,
                   extra={"source_files": ["a.png", "b.png"]})


def trained_like(spec: ModelSpec, seed: int = 0) -> torch.nn.Module:
    """A U-Net whose weights and BN statistics are not the initial ones."""
    gen = torch.Generator().manual_seed(seed)
    model = build_unet(spec.in_channels, spec.out_channels, spec.alpha,
                       bn_momentum=spec.bn_momentum, generator=gen)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.add_(torch.rand(t.shape, generator=gen) * 0.1)
    return model.eval()


def test_round_trip_keeps_weights_and_the_data_metadata(tmp_path):
    spec = ModelSpec(in_channels=1, out_channels=4, alpha=0.25, bn_momentum=0.1)
    model = trained_like(spec)
    path = tmp_path / "c0.pt"
    save_checkpoint(path, checkpoint_payload(spec, model.state_dict(), INFO,
                                             val={"iou": 0.5}, test={"iou": 0.4},
                                             place={"stage": "ldt"}))
    loaded, meta = read_checkpoint(path)
    x = torch.randint(0, 256, (2, 1, 32, 48)).float()
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))
    assert meta.spec == spec and meta.task == Task("multiclass", 3)
    assert meta.dataset is not None
    assert (meta.dataset.classes, meta.dataset.colors) == (INFO.classes, INFO.colors)
    assert (meta.dataset.image_size, meta.dataset.channels) == ((32, 48), 1)
    assert meta.dataset.rotate is False and meta.dataset.extra == {}  # extra stays behind
    assert (meta.val, meta.test, meta.place) == ({"iou": 0.5}, {"iou": 0.4}, {"stage": "ldt"})
    assert meta.mask_void == 255
    raw = torch.load(path, weights_only=True)  # readable without imseg's classes
    assert raw["version"] == VERSION and raw["void"] == {"mask": 255, "label": 255}
    assert torch.equal(load_model(path).state_dict()["head.weight"], model.state_dict()["head.weight"])


def test_the_headline_classes_travel_with_the_checkpoint(tmp_path):
    info = DatasetInfo(task="multilabel", classes=["alive", "dead", "position"],
                       image_size=(32, 32), channels=1, headline_classes=["alive", "dead"])
    spec = ModelSpec(in_channels=1, out_channels=3, alpha=0.25)
    save_checkpoint(tmp_path / "c.pt", checkpoint_payload(spec, trained_like(spec).state_dict(),
                                                          info))
    meta = read_checkpoint(tmp_path / "c.pt")[1]
    assert meta.task == Task("multilabel", 3, headline=(0, 1)) == info.task_obj
    assert meta.dataset.headline_classes == ["alive", "dead"]
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert raw["task"]["headline"] == [0, 1]
    plain = checkpoint_payload(spec, trained_like(spec).state_dict(), DatasetInfo(
        task="multilabel", classes=["a", "b", "c"], image_size=(32, 32)))
    assert "headline" not in plain["task"] and "headline_classes" not in plain["dataset"]


def test_mask_void_is_the_disk_encoding_of_void():
    assert mask_void(Task("binary", 1)) == 128
    assert mask_void(Task("multilabel", 3)) == 128
    assert mask_void(Task("multiclass", 5)) == 255


def test_payload_refuses_a_model_that_does_not_fit_the_task():
    spec = ModelSpec(1, 3, 0.25)  # multiclass with 3 classes needs 4 outputs (IM class)
    with pytest.raises(ValueError, match="4 output channels"):
        checkpoint_payload(spec, {}, INFO)


def test_checkpoints_of_older_versions_still_load(tmp_path):
    model = trained_like(ModelSpec(3, 1, 0.25))
    state = model.state_dict()
    v1 = {"model": {"kind": "unet", "in_channels": 3, "out_channels": 1, "alpha": 0.25,
                    "bn_momentum": 0.01}, "state_dict": state,
          "task": {"kind": "binary", "n_classes": 1}, "val": {"iou": 0.3}, "seed": 4}
    save_checkpoint(tmp_path / "v1.pt", v1)
    _, meta = read_checkpoint(tmp_path / "v1.pt")
    assert meta.task == Task("binary", 1) and meta.dataset is None and meta.val == {"iou": 0.3}
    oldest = {"model": {"in_channels": 3, "out_channels": 1, "alpha": 0.25}, "state_dict": state}
    save_checkpoint(tmp_path / "v0.pt", oldest)
    loaded, meta = read_checkpoint(tmp_path / "v0.pt")
    assert meta.task is None and meta.spec.kind == "unet" and meta.mask_void is None
    assert torch.equal(loaded.state_dict()["head.bias"], state["head.bias"])


@pytest.mark.parametrize("content, message", [
    (None, "checkpoint not found"),
    (b"not a zip nor a pickle", "not an imseg checkpoint"),
    ({"weights": 1}, "not an imseg checkpoint"),
    ({"model": {"kind": "evalnet"}, "state_dict": {}}, "'evalnet' checkpoint"),
    ({"format": "other", "model": {}, "state_dict": {}}, "format 'other'"),
    ({"format": "imseg-segmentation", "version": VERSION + 1, "model": {}, "state_dict": {}},
     "newer than this imseg"),
    ({"model": {"in_channels": 3, "out_channels": 1}, "state_dict": {}}, "damaged"),
    ({"model": {"in_channels": 3, "out_channels": 2, "alpha": 0.25}, "state_dict": {}},
     "weights do not fit"),
])
def test_foreign_files_fail_with_a_clear_error(tmp_path, content, message):
    path = tmp_path / "x.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(DataError, match=message) as caught:
        read_checkpoint(path)
    assert str(path) in str(caught.value)
