"""TensorBoard's cost: one model's training with and without its board, side by side.

    python bench/tensorboard_cost.py [--quick] [--device cuda] [--epochs 10] [--steps 20]

Trains the same tiny U-Net from the same seed with imseg's ``fit`` twice per round,
once plain and once with the board a study gives each model
(:func:`imseg.experiment.watch.watch_model`'s: opened before training, scalars and a
flush after every epoch, the settings as hparams and closed at the end, all inside
the timed span), alternating which goes first, ``--rounds`` times after one warm-up
round of each. Reports the median seconds of each and their ratio (issue #29 asks for
under 1.05), and the seconds spent inside the board's own calls, which a busy
machine's noise does not blur: the board's cost per epoch does not grow with the
epoch's length, so a study's epochs (hundreds of steps) pay less than these short ones.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from _common import emit, finish, machine, median, parser


def timed(spent: list[float], fn):
    """``fn`` adding its own wall seconds to ``spent[0]``."""
    def call(*args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            spent[0] += time.perf_counter() - start
    return call


def train_seconds(args, board_dir: Path | None) -> tuple[float, float]:
    """Wall seconds of one model's training, with a board in ``board_dir`` when given, and
    the seconds spent inside the board's calls (opening, every epoch's, closing)."""
    import torch

    from imseg.config import TrainConfig, build_config
    from imseg.data.dataset import Split
    from imseg.experiment.settings import flatten
    from imseg.experiment.watch import Watch
    from imseg.models.unet import build_unet
    from imseg.tasks import Task
    from imseg.training.fit import fit
    from imseg.training.tensorboard import Board

    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    n = args.batch * args.steps
    size = (3, args.size, args.size)
    images = torch.randint(0, 256, (n + 16, *size), dtype=torch.uint8, generator=gen)
    labels = (torch.rand((n + 16, 1, args.size, args.size), generator=gen) < 0.3).to(torch.uint8)
    train = Split(images[:n], labels[:n], [str(i) for i in range(n)])
    val = Split(images[n:], labels[n:], [str(i) for i in range(16)])
    cfg = TrainConfig(batch_size=args.batch, alpha=args.alpha, epochs=args.epochs,
                      amp=args.amp, eval_batch_size=16)
    model = build_unet(3, 1, args.alpha, generator=torch.Generator().manual_seed(1))
    params = flatten(build_config().model_dump(mode="json"))
    spent = [0.0]
    start = time.perf_counter()
    board = None if board_dir is None else timed(spent, Board)(board_dir, 1)
    watch = Watch(board, params, lambda row: {"final/val_iou": row["val_iou"]})
    hook = None if watch.on_epoch is None else timed(spent, watch.on_epoch)
    result = fit(model, Task("binary", 1), train, val, cfg, device,
                 torch.Generator().manual_seed(2), progress=False, on_epoch=hook)
    timed(spent, watch.finish)({"val_iou": float(result.val["iou"])})
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, spent[0]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per epoch")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if args.quick:
        args.epochs, args.steps, args.size, args.rounds = 4, 4, 64, 2
    import torch

    torch.set_num_threads(args.threads)
    seconds: dict[str, list[float]] = {"plain": [], "tensorboard": []}
    inside: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds + 1):  # round 0 warms up (imports, allocator, kernels)
            order = ["plain", "tensorboard"] if rnd % 2 else ["tensorboard", "plain"]
            for kind in order:
                board = Path(tmp) / f"{kind}{rnd}" if kind == "tensorboard" else None
                took, in_board = train_seconds(args, board)
                if rnd:
                    seconds[kind].append(took)
                    inside += [in_board] if board else []
                print(f"round {rnd} {kind}: {took:.2f} s", flush=True)
    plain, board = median(seconds["plain"]), median(seconds["tensorboard"])
    result = {"bench": "tensorboard_cost", "machine": machine(), "device": args.device,
              "epochs": args.epochs, "steps": args.steps, "batch": args.batch,
              "size": args.size, "alpha": args.alpha, "seconds": seconds,
              "plain_s": plain, "tensorboard_s": board, "ratio": board / plain,
              "in_board_s": median(inside), "in_board_ratio": 1 + median(inside) / plain,
              "in_board_per_epoch_ms": 1000 * median(inside) / args.epochs}
    print(f"one model, {args.epochs} epochs of {args.steps} steps ({args.device}): "
          f"{plain:.2f} s plain, {board:.2f} s with TensorBoard: {board / plain:.3f}x side by "
          f"side; inside the board's calls {1000 * median(inside):.1f} ms "
          f"({result['in_board_per_epoch_ms']:.2f} ms per epoch): "
          f"{result['in_board_ratio']:.4f}x")
    emit(result)
    finish(args, result)


if __name__ == "__main__":
    sys.exit(main())
