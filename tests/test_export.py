"""imseg export: ONNX Runtime reproduces the torch masks at several sizes; metadata.json
says how to use the files; a missing extra is one clear error."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from test_predict import make_images, make_run

from imseg.cli import main
from imseg.errors import DataError
from imseg.predict import checkpoint_models, predict_folder, run_models

ort = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-5
"""Largest |ONNX Runtime - torch| probability expected from float32 rounding."""


def ort_probabilities(path, images: np.ndarray) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["probabilities"], {"image": images})[0])


def random_images(n: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, h, w)).astype(np.float32)


def decision_margin(task, probs: torch.Tensor) -> torch.Tensor:
    """Per label pixel, how far the probabilities are from changing the label."""
    if task.kind == "multiclass":
        top2 = probs[:, 1:].topk(2, dim=1).values
        return top2[:, :1] - top2[:, 1:]
    return (probs - 0.5).abs()


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_onnx_models_give_the_torch_masks_at_two_sizes(tmp_path, task):
    run = make_run(tmp_path, task, noise=0.05)
    out = tmp_path / "onnx"
    assert main(["export", "--run", str(run), "--format", "onnx", "--out", str(out)]) == 0
    models = run_models(run)  # the same stage and order: im g1, best validation first
    meta = json.loads((out / "metadata.json").read_text())
    assert [m["file"] for m in meta["models"]] == ["model1.onnx", "model2.onnx", "model3.onnx"]
    labels = set()
    for i, (model, entry) in enumerate(zip(models.models, meta["models"], strict=True)):
        for h, w in [(32, 32), (48, 80)]:  # the training size and another multiple of 16
            images = random_images(3, h, w, seed=i)
            with torch.no_grad():
                expected = models.task.activate(model.eval()(torch.from_numpy(images)))
            got = ort_probabilities(out / entry["file"], images)
            assert got.shape == expected.shape == (3, models.task.out_channels, h, w)
            assert torch.allclose(got, expected, atol=TOLERANCE)
            same = models.task.to_label(got) == models.task.to_label(expected)
            clear = decision_margin(models.task, expected) > TOLERANCE  # not a near-tie
            assert same[clear].all() and clear.float().mean() > 0.99
            labels |= set(models.task.to_label(got).unique().tolist())
    assert len(labels) > 1  # the masks compared are not all one value


def test_the_metadata_rule_turns_ensemble_outputs_into_predicts_masks(tmp_path):
    run = make_run(tmp_path, "multiclass", noise=0.05)
    out = tmp_path / "onnx"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    images = random_images(2, 32, 32, seed=5).astype(np.uint8)
    (tmp_path / "new").mkdir()
    for i, img in enumerate(images):
        Image.fromarray(np.moveaxis(img, 0, -1)).save(tmp_path / "new" / f"img{i}.png")
    predict_folder(run_models(run), tmp_path / "new", tmp_path / "pred", progress=False)
    probs = torch.stack([ort_probabilities(out / m["file"], images.astype(np.float32))
                         for m in meta["models"]]).mean(dim=0)
    ids = probs[:, 1:].argmax(dim=1)  # to_mask: argmax over channels 1..C, minus 1
    for i in range(len(images)):
        written = np.asarray(Image.open(tmp_path / "pred" / "masks" / f"img{i}.png"))
        assert np.array_equal(written, ids[i].numpy().astype(np.uint8))


def test_metadata_describes_data_models_and_scores(tmp_path):
    run = make_run(tmp_path, "multiclass")
    out = tmp_path / "onnx"
    assert main(["export", "--run", str(run), "--approach", "ldt", "--teachers", "1",
                 "--out", str(out)]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert (meta["task"], meta["classes"]) == ("multiclass", ["bg", "a", "b"])
    assert meta["image_size"] == [32, 32] and meta["channels"] == 3 and meta["mask_void"] == 255
    assert len(meta["colors"]) == 3 and meta["opset"] >= 18
    assert meta["input"]["shape"] == ["batch", 3, "height", "width"]
    assert meta["output"]["shape"] == ["batch", 4, "height", "width"]
    assert "argmax over channels 1..C" in meta["to_mask"]
    assert meta["stage"] == {"approach": "ldt", "generation": 0}
    (entry,) = meta["models"]
    assert entry["checkpoint"] == str((run / "models/ldt/r0_g0/c0.pt").resolve())
    assert (entry["val"], entry["test"]) == ({"iou": 0.50}, {"iou": 0.90})
    assert entry["model"] == {"kind": "unet", "in_channels": 3, "out_channels": 4,
                              "alpha": 0.25, "bn_momentum": 0.01}
    assert entry["runtime_max_abs_diff"] < 1e-3
    session = ort.InferenceSession(str(out / "model1.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]


def test_checkpoint_export_and_a_missing_extra(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path)
    out = tmp_path / "onnx"
    ckpt = run / "models/ldt/r0_g0/c1.pt"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["stage"] is None and [m["val"]["iou"] for m in meta["models"]] == [0.40]
    assert meta["to_mask"].startswith("mask = 255 where probabilities[0] > 0.5")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "onnxruntime is missing" in err and "pip install 'imseg[onnx]'" in err
    assert not (tmp_path / "x").exists()


def _starts(length: int, tile: int, overlap: float) -> list[int]:
    """Tile offsets as metadata.json's tiles.placement spells them out."""
    n = 1 if length == tile else math.ceil((length - tile) / (tile * (1 - overlap))) + 1
    return [0] if n == 1 else [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _axis_weights(n: int, overlap: float) -> np.ndarray:
    """One axis of the blend weights, as tiles.weights spells them out."""
    return np.clip([min(i + 1, n - i) / max(1, n * overlap / 2) for i in range(n)], 0.05, 1)


def test_following_the_tile_metadata_alone_gives_predicts_masks(tmp_path):
    run = make_run(tmp_path, tile_scale=1.0, noise=0.05)
    out = tmp_path / "onnx"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    tiles, (th, tw) = meta["tiles"], meta["image_size"]
    assert tiles["scale"] == 1.0 and "trained on tiles" in meta["input"]["size"]
    assert "min(i + 1, n - i) / max(1, n * overlap / 2)" in tiles["weights"]
    assert "ceil((L - t) / (t * (1 - overlap))) + 1" in tiles["placement"]
    assert "keep the round(H * scale) x round(W * scale) top-left part" in tiles["placement"]
    make_images(tmp_path / "new")  # 32×32, 20×45, 50×17 (smaller than a tile), 64×40
    predict_folder(run_models(run), tmp_path / "new", tmp_path / "pred", progress=False)
    overlap = tiles["overlap"]
    weights = np.outer(_axis_weights(th, overlap), _axis_weights(tw, overlap))
    for path in sorted((tmp_path / "new").iterdir()):
        image = np.asarray(Image.open(path).convert("RGB"))
        h, w = image.shape[:2]
        padded = np.pad(image, ((0, max(0, th - h)), (0, max(0, tw - w)), (0, 0)),
                        mode="symmetric")
        total = np.zeros((len(meta["models"]), *padded.shape[:2]))
        norm = np.zeros(padded.shape[:2])
        for y in _starts(padded.shape[0], th, overlap):
            for x in _starts(padded.shape[1], tw, overlap):
                tile = np.moveaxis(padded[y : y + th, x : x + tw], -1, 0)[None]
                for k, model in enumerate(meta["models"]):
                    probs = ort_probabilities(out / model["file"], tile.astype(np.float32))
                    total[k, y : y + th, x : x + tw] += probs[0, 0].numpy() * weights
                norm[y : y + th, x : x + tw] += weights
        mean = (total / norm).mean(axis=0)[:h, :w]  # scale 1: the crop is all that is left
        written = np.asarray(Image.open(tmp_path / "pred" / "masks" / f"{path.stem}.png"))
        assert np.array_equal(written, np.where(mean > 0.5, 255, 0)), path.name


def test_tile_metadata_is_left_out_for_models_trained_on_whole_images(tmp_path):
    plain = make_run(tmp_path / "plain")
    assert main(["export", "--run", str(plain), "--teachers", "1", "--out",
                 str(tmp_path / "o2")]) == 0
    assert json.loads((tmp_path / "o2" / "metadata.json").read_text())["tiles"] is None


def carded_run(tmp_path):
    """make_run's folder, its checkpoints re-saved as a study writes them (place, config)
    for a data set with counts, and run.yaml with the command that trained it."""
    import yaml
    from test_predict import save_model

    from imseg.config import build_config
    from imseg.data.layout import DatasetInfo
    from imseg.results import ResultsTable

    run = make_run(tmp_path)
    info = DatasetInfo(task="binary", classes=["cell"], image_size=(32, 32),
                       colors=[(0, 0, 0), (255, 0, 0)], source="sample",
                       counts={"train_labeled": 10, "train_unlabeled": 30, "val": 8, "test": 8})
    config = build_config(sets=["train.epochs=7"]).model_dump(mode="json")
    for i, row in enumerate(ResultsTable(run / "results.csv").rows):
        place = {k: row[k] for k in ("stage", "approach", "run", "n_teachers", "generation",
                                     "candidate")}
        save_model(run / row["checkpoint"], info, i, place=place, config=config,
                   val={"iou": row["val_iou"]}, test={"iou": row["test_iou"], "dice": 0.5})
    (run / "run.yaml").write_text(yaml.safe_dump({"data": "/data/cells",
                                                  "command": "imseg run --data /data/cells"}))
    return run


def test_an_export_has_a_model_card_and_predict_runs_from_its_folder(tmp_path, capsys):
    run = carded_run(tmp_path)
    out = tmp_path / "export"
    out.mkdir()
    (out / "model_best.pt").write_text("the user's own file")  # never an export's to remove
    assert main(["export", "--run", str(run), "--approach", "im", "--teachers", "2",
                 "--format", "checkpoint", "--out", str(out)]) == 0
    assert (out / "model_best.pt").read_text() == "the user's own file"
    (out / "model_best.pt").unlink()
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "metadata.json",
                                                       "model1.pt", "model2.pt"]
    card = (out / "README.md").read_text()
    for text in ["| cell | (255, 0, 0) |",  # classes with colours
                 "trained at 32 × 32 pixels", "resize (bilinear)", "tiles: none",
                 "| train_unlabeled | 30 |", "Labeled fraction of the training images: 25.0% "
                 "(10 of 40)", "Approach `im`, generation 1",
                 "- ldt r0 c0: val IoU 0.5000", "- ldt r0 c1: val IoU 0.4000",  # its 2 teachers
                 "| model1.pt | im r0 n2 g1 c0 | 0.7000 | 0.1000 | 0.5000 |",
                 "Over all 3 models of the stage: test IoU 0.2000 ± 0.1000",
                 "  epochs: 7", f"torch {torch.__version__}", "imseg run --data /data/cells",
                 f"imseg export --run {run} --approach im --teachers 2 --format checkpoint "
                 f"--out {out}",
                 "imseg predict --checkpoint THIS_FOLDER",
                 "--checkpoint model1.pt --checkpoint model2.pt"]:
        assert text in card
    images = tmp_path / "images"
    make_images(images)
    predicted = tmp_path / "predicted"
    assert main(["predict", "--checkpoint", str(out), "--images", str(images), "--out",
                 str(predicted), "--no-progress"]) == 0  # the folder stands for its models
    assert len(list((predicted / "masks").glob("*.png"))) == len(list(images.iterdir()))
    assert "2 models" in capsys.readouterr().out
    with pytest.raises(DataError, match="without checkpoints"):
        checkpoint_models([images])


def test_an_onnx_card_says_how_to_run_it_with_onnx_runtime(tmp_path):
    run = carded_run(tmp_path)
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run / "models/ldt/r0_g0/c0.pt"),
                 "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "import onnxruntime as ort" in card and "Models given as checkpoint files: " \
        "ldt r0 c0." in card and "Over all" not in card
