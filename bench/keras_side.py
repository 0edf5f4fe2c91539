"""The Keras 3 / TensorFlow side of the benchmarks: runs in bench/.venv-keras, never in imseg's venv.

A benchmark copy of the reference's tiny U-Net layer plan (1x1 stem; four encoder
stages k×k conv + 1x1 conv + BN + 2x2 max-pool; bottleneck; four decoder stages
upsample + add skip + 1x1 conv + BN + k×k conv + 1x1 conv + BN; 1x1 sigmoid head,
He-normal init, widths ``int(f * alpha)``), written for this benchmark.

    train   train steps (MSE, AdamW) on in-memory batches -> per-step seconds
    pseudo  the reference's way of pseudo-labeling: for each image, ``model.predict``
            of every teacher on that one image, then the IM in NumPy
    command a whole training command as the reference runs one: read a prepared data
            folder's PNGs, ``model.fit`` for some epochs with the validation IoU
            checked after each and the best epoch's weights saved, then the best
            weights scored on the test split
"""

from __future__ import annotations

import argparse
import os
import time

from _common import StepTimer, emit, peak_rss_mb, pin


def build_unet(keras, alpha: float, size: int = 256, channels: int = 3, k: int = 3):
    layers = keras.layers

    def conv(x, filters: int, kernel: int):
        return layers.Conv2D(filters, kernel, activation="relu", padding="same",
                             kernel_initializer="he_normal")(x)

    def f(base: int) -> int:
        return int(base * alpha)

    inputs = keras.Input((size, size, channels))
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.BatchNormalization()(conv(x, f(16), 1))
    skips = []
    for base in (16, 32, 64, 128):
        x = layers.BatchNormalization()(conv(conv(x, f(base), k), f(base), 1))
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.BatchNormalization()(conv(conv(x, f(256), k), f(128), 1))
    for f1, f2, skip in zip((128, 64, 32, 16), (64, 32, 16, 16), reversed(skips), strict=True):
        x = layers.Add()([layers.UpSampling2D(2)(x), skip])
        x = layers.BatchNormalization()(conv(x, f(f1), 1))
        x = layers.BatchNormalization()(conv(conv(x, f(f1), k), f(f2), 1))
    out = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32")(x)
    return keras.Model(inputs, out)


def setup(threads: int):
    pin(threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    keras.utils.set_random_seed(0)
    return tf, keras


def train(args) -> dict:
    tf, keras = setup(args.threads)
    import numpy as np

    rng = np.random.default_rng(0)
    n = 2 * args.batch
    images = rng.integers(0, 256, (n, args.size, args.size, 3), dtype=np.uint8)
    masks = (rng.random((n, args.size, args.size, 1)) < 0.3).astype(np.uint8)
    model = build_unet(keras, args.alpha, args.size)
    # Keras' default jit_compile="auto" means no XLA on a CPU-only machine, as the reference ran.
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=3e-3, weight_decay=1e-4),
                  loss="mse")
    timer = StepTimer()
    start = time.perf_counter()
    for step in range(args.warmup + args.steps):
        idx = rng.permutation(n)[: args.batch]
        if step == args.warmup:
            warmup_s, timer = time.perf_counter() - start, StepTimer()
        with timer:
            model.train_on_batch(images[idx].astype("float32"), masks[idx].astype("float32"))
    return {"framework": f"keras {keras.__version__} / tensorflow {tf.__version__}",
            "jit_compile": bool(model.jit_compile), "params": int(model.count_params()),
            "warmup_s": warmup_s, "wall": timer.wall, "cpu": timer.cpu,
            "peak_rss_mb": peak_rss_mb()}


def pseudo(args) -> dict:
    tf, keras = setup(args.threads)
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)
    teachers = [build_unet(keras, args.alpha, args.size) for _ in range(args.teachers)]
    n = len(teachers)

    def label_one(image):
        """One image as the reference does it: predict per teacher, vote, IM, block, filter."""
        batch = image[None].astype("float32")
        votes = np.zeros(image.shape[:2], np.uint8)
        for model in teachers:
            probs = model.predict(batch, verbose=0)[0, :, :, 0]
            votes += (probs > 0.5).astype(np.uint8)
        label = (votes == n).astype(np.uint8) * 255
        im = (votes > 0) & (votes < n)
        blocked_image = image.copy()
        blocked_image[im] = 0
        label[im] = 0
        keep = (label > 0).sum() > 0 and (label > 0).sum() > im.sum()
        return blocked_image, label, keep

    for image in images[: args.warmup]:
        label_one(image)
    start = time.perf_counter()
    cpu = time.process_time()
    kept = sum(label_one(image)[2] for image in images)
    seconds = time.perf_counter() - start
    return {"framework": f"keras {keras.__version__} / tensorflow {tf.__version__}",
            "images": args.images, "teachers": n, "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu, "kept": int(kept),
            "peak_rss_mb": peak_rss_mb()}


def read_split(tf, np, folder):
    """A prepared split's images and binary masks as arrays (PNG decoding by TensorFlow)."""
    from pathlib import Path

    def read(path, channels):
        return tf.io.decode_png(tf.io.read_file(str(path)), channels=channels).numpy()

    paths = sorted((Path(folder) / "images").glob("*.png"))
    images = np.stack([read(p, 3) for p in paths])
    masks = np.stack([read(Path(folder) / "masks" / p.name, 1) for p in paths]) > 0
    return images.astype("float32"), masks.astype("float32")


def command(args) -> dict:
    start = time.perf_counter()
    tf, keras = setup(args.threads)
    import numpy as np

    imported = time.perf_counter()
    train_x, train_y = read_split(tf, np, f"{args.data}/train_labeled")
    val_x, val_y = read_split(tf, np, f"{args.data}/val")
    test_x, test_y = read_split(tf, np, f"{args.data}/test")
    loaded = time.perf_counter()
    model = build_unet(keras, args.alpha, train_x.shape[1])
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=3e-3, weight_decay=1e-4),
                  loss="mse")

    def iou(x, y):
        pred = model.predict(x, batch_size=args.batch, verbose=0) > 0.5
        truth = y > 0.5
        inter = np.logical_and(pred, truth).sum(axis=(1, 2, 3))
        union = np.logical_or(pred, truth).sum(axis=(1, 2, 3))
        return float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean())

    weights = f"{args.out}/best.weights.h5"
    best = {"iou": -1.0, "epoch": 0}

    class KeepBest(keras.callbacks.Callback):
        """The reference's checkpoint on the best validation score."""

        def on_epoch_end(self, epoch, logs=None):
            score = iou(val_x, val_y)
            if score > best["iou"]:
                best.update(iou=score, epoch=epoch + 1)
                self.model.save_weights(weights)

    model.fit(train_x, train_y, batch_size=args.batch, epochs=args.epochs, shuffle=True,
              callbacks=[KeepBest()], verbose=0)
    trained = time.perf_counter()
    model.load_weights(weights)
    test_iou = iou(test_x, test_y)
    end = time.perf_counter()
    return {"framework": f"keras {keras.__version__} / tensorflow {tf.__version__}",
            "import_s": imported - start, "load_s": loaded - imported,
            "train_s": trained - loaded, "test_s": end - trained, "seconds": end - start,
            "best_epoch": best["epoch"], "val_iou": best["iou"], "test_iou": test_iou,
            "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("mode", choices=["train", "pseudo", "command"])
    p.add_argument("--data", help="command: a prepared binary data folder")
    p.add_argument("--out", help="command: where the best weights go")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--teachers", type=int, default=3)
    args = p.parse_args()
    emit({"train": train, "pseudo": pseudo, "command": command}[args.mode](args))


if __name__ == "__main__":
    main()
