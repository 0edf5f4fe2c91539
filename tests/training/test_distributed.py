"""DDP: two Gloo processes on CPU train the same model as one process would.

What is comparable: every rank draws the same global batch (same seed) and
trains on its half; DDP averages the two half-batch gradients. With equal
halves, a loss that is a mean over equally many pixels per half, and BatchNorm
statistics over the whole global batch (``sync_bn``), that average *is* the
single-process gradient; only the order of float sums differs.

Stated tolerance: after one epoch of ``fit`` (4 AdamW steps, global batch 8)
every weight and buffer within 1e-6 of the single-process run (seen: ~1e-9),
the ranks identical to each other. The models run in float64 for this: the tiny
U-Net on 32 px images is so ill-conditioned that its float32 gradient is ~4%
off the float64 one, so in float32 any change of summation order (DDP's, or
just another batch order) moves the result by more than DDP's own effect; and
AdamW turns float noise in ~0 gradient components into ±lr steps. Float64
leaves only the float32 loss head's rounding. Without sync_bn each half is
normalised by its own statistics and the result differs by >1e-2 (checked: the
comparison has teeth). The single-process reference uses the synced
BatchNorm's arithmetic (float64 statistics) without a group.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from imseg.config import TrainConfig
from imseg.data.dataset import Split
from imseg.models.checkpoint import read_checkpoint
from imseg.models.unet import build_unet
from imseg.runtime import seed_everything
from imseg.tasks import Task
from imseg.training import distributed
from imseg.training.fit import Batches, fit
from imseg.training.inference import predict_batches

TASK = Task("binary", 1)
CPU = torch.device("cpu")
TOLERANCE = 1e-6


def _split(n: int, seed: int) -> Split:
    """Images whose mask is "red brighter than green": learnable in a few steps."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    images = torch.nn.functional.avg_pool2d(images.float(), 5, 1, 2).to(torch.uint8)
    labels = (images[:, :1] > images[:, 1:2]).to(torch.uint8)
    return Split(images, labels, [f"s{i}" for i in range(n)])


def _config(sync_bn: bool) -> TrainConfig:
    cfg = TrainConfig(epochs=1, batch_size=8, alpha=0.25, bn_momentum=0.1, amp=False,
                      channels_last=False, bn_stats="running")
    # ``train.sync_bn`` is read with getattr; set it whether or not the field exists yet.
    return cfg.model_copy(update={"sync_bn": sync_bn})


def _model(sync_arithmetic: bool) -> torch.nn.Module:
    seed_everything(7)
    model = build_unet(3, 1, 0.25, bn_momentum=0.1).double()
    if sync_arithmetic and not distributed.active():
        distributed.convert_sync_bn(model, CPU)  # the reference: same BN arithmetic, no group
    return model


def _fit(sync_bn: bool) -> dict:
    """``fit`` for one epoch (32 pairs, global batch 8: 4 AdamW steps)."""
    model = _model(sync_bn)
    val = _split(8, 2)
    result = fit(model, TASK, _split(32, 1), val, _config(sync_bn), CPU,
                 torch.Generator().manual_seed(3), progress=False)
    probs = next(predict_batches([model], val.images, TASK, CPU, 64, False))[1][0]
    return {"state": result.state, "probs": probs, "history": result.history}


def _rank(rank: int, world: int, init_file: str, out: str, sync_bn: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        torch.save(_fit(sync_bn), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _ddp(tmp_path: Path, sync_bn: bool) -> list[dict]:
    """``_fit`` in two Gloo processes; each rank's result."""
    out = tmp_path / f"fit_{sync_bn}"
    mp.spawn(_rank, args=(2, str(tmp_path / f"pg_{sync_bn}"), str(out), sync_bn), nprocs=2)
    return [torch.load(f"{out}.{r}") for r in range(2)]


def _single(sync_bn: bool) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the ranks
    try:
        return _fit(sync_bn)
    finally:
        torch.set_num_threads(threads)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a
               if a[k].is_floating_point())


def test_ddp_with_sync_bn_matches_single_process(tmp_path):
    single = _single(sync_bn=True)
    ranks = _ddp(tmp_path, sync_bn=True)
    assert _max_diff(ranks[0]["state"], ranks[1]["state"]) == 0.0  # replicas, buffers too
    assert ranks[0]["history"] == ranks[1]["history"]
    assert _max_diff(ranks[0]["state"], single["state"]) < TOLERANCE
    assert float((ranks[0]["probs"] - single["probs"]).abs().max()) < TOLERANCE
    assert ranks[0]["history"] == pytest.approx(single["history"], abs=TOLERANCE)
    assert _max_diff(_model(True).state_dict(), single["state"]) > 1e-2  # it did train


def test_ddp_without_sync_bn_differs_from_single_process(tmp_path):
    """Per-rank BatchNorm statistics change the gradients: the match above is not vacuous."""
    single = _single(sync_bn=False)
    ranks = _ddp(tmp_path, sync_bn=False)
    assert _max_diff(ranks[0]["state"], single["state"]) > 1e-2


def test_batches_shard_the_global_batch():
    split = _split(12, 3)
    full = Batches(split, 6, CPU, torch.Generator().manual_seed(5))
    parts = [Batches(split, 6, CPU, torch.Generator().manual_seed(5), shard=(r, 2))
             for r in range(2)]
    for _ in range(2):  # two epochs: every epoch draws a new permutation on every rank
        for (whole, _), (even, _), (odd, _) in zip(full.epoch(), parts[0].epoch(),
                                                   parts[1].epoch(), strict=True):
            assert torch.equal(even, whole[0::2]) and torch.equal(odd, whole[1::2])


def test_batch_smaller_than_the_group_is_an_error():
    from imseg.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be shared by 4 processes"):
        Batches(_split(3, 0), 8, CPU, torch.Generator(), shard=(0, 4))


def test_not_distributed_is_a_no_op():
    model = build_unet(3, 1, 0.25)
    assert distributed.wrap(model, CPU, sync_bn=True) is model
    assert distributed.shard() == (0, 1)
    assert not any(isinstance(m, distributed.GlooSyncBatchNorm) for m in model.modules())


def test_convert_sync_bn_keeps_parameters_and_state():
    model = build_unet(3, 1, 0.25)
    params = list(model.parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    distributed.convert_sync_bn(model, CPU)
    assert any(isinstance(m, distributed.GlooSyncBatchNorm) for m in model.modules())
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


SMP_MODEL = ["--set", "model.arch=Unet", "--set", "model.encoder=resnet18",
             "--set", "model.weights=none", "--set", "train.steps_per_epoch=1"]


@pytest.mark.parametrize("model", ["tiny_unet", "Unet/resnet18"])
def test_torchrun_train_writes_rows_once(tmp_path, model):
    """``torchrun --nproc-per-node 2 -m imseg train``: rank 0 alone writes the run, with the
    tiny U-Net and with an smp encoder model (64 px: one image per process reaches resnet's
    deepest BatchNorm at 2x2)."""
    if model != "tiny_unet":
        pytest.importorskip("timm")
        pytest.importorskip("segmentation_models_pytorch")
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "imseg", "prepare", "sample", "--task", "binary",
                    "--out", str(data), "--n", "24",
                    "--size", "32" if model == "tiny_unet" else "64"], check=True,
                   capture_output=True)
    out = tmp_path / "run"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "imseg", "train", "--data", str(data), "--out", str(out),
         "--epochs", "1", "--candidates", "2", "--keep", "1", "--alpha", "0.25",
         "--batch-size", "4", "--device", "cpu", "--no-progress",
         *(SMP_MODEL if model != "tiny_unet" else [])],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("results:") == 1  # printed by rank 0 only
    lines = (out / "results.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[1].startswith("ldt,ldt,0,,0,0,")
    assert sorted(p.name for p in (out / "models" / "ldt" / "r0_g0").iterdir()) == [
        "c0.pt", "c1.pt"]
    assert read_checkpoint(out / "models" / "ldt" / "r0_g0" / "c0.pt")[1].spec.name == model
    # the other rank's scratch folder is gone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("imseg-ddp-")]
    # one writer per TensorBoard board: one event file in each model's and stage's folder
    boards = [p for p in (out / "tensorboard").rglob("*") if p.is_dir()
              and any(f.name.startswith("events.") for f in p.iterdir())]
    if importlib.util.find_spec("tensorboard") is not None:
        assert {b.name for b in boards} >= {"c0", "c1", "r0"}
        assert all(sum(f.name.startswith("events.") for f in b.iterdir()) == 1 for b in boards)
