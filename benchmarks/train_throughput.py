"""Training throughput of `catsdogs train`'s pipeline against the seed notes' own approach.

Both train the same seed CNN with batch 16 on the same prepared photos:
- ours: the catsdogs tf.data pipeline (parallel decode, cache, augmentation in the
  pipeline with one affine warp per image) feeding the registry's `seed_cnn`;
- seed: `keras.utils.image_dataset_from_directory` + the seed's augmentation layers
  (Rescaling, RandomFlip, RandomRotation(0.1), RandomZoom(0.1)) inside the model + `fit`.
They run alternately, several times, and the medians are compared. Then the time is
split into decode, augmentation and compute, and the compute is set against the
FLOPs per image and a measured matrix-multiply peak of this CPU.

Usage: python benchmarks/train_throughput.py [--data DATA] [--repeats 3] [--steps 40]
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catsdogs.data.dataset import make_dataset  # noqa: E402
from catsdogs.models import build_model  # noqa: E402
from machine import describe_machine, load_average, median  # noqa: E402

IMAGE_SIZE = (180, 180)
BATCH_SIZE = 16
WARMUP_STEPS = 5
SHARED_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dogs-vs-cats" / "train"


def prepared_data(data_dir):
    """Return a prepared seed split, preparing it from the shared photos if needed."""
    if data_dir is not None:
        return Path(data_dir)
    target = Path("/tmp/catsdogs-bench-data")
    if not (target / "manifest.json").exists():
        from catsdogs.data.prepare import prepare_dataset

        prepare_dataset(
            SHARED_PHOTOS,
            target,
            class_names=["cats", "dogs"],
            split="numbers",
            train_per_class=1000,
            validation_per_class=500,
            test_per_class=500,
            validation_fraction=0.15,
            test_fraction=0.15,
            seed=42,
            max_pixels=50_000_000,
            min_side=32,
            overwrite=False,
            progress=False,
        )
    return target


def seed_model():
    """The seed notes' model, augmentation layers and rescaling inside, as they wrote it."""
    augmentation = keras.Sequential(
        [
            layers.Rescaling(1.0 / 255),
            layers.RandomFlip("horizontal"),
            layers.RandomRotation(0.1),
            layers.RandomZoom(0.1),
        ],
        name="data_augmentation_pipeline",
    )
    model = keras.Sequential(name="CatsDogs_CNN")
    model.add(keras.Input(shape=(*IMAGE_SIZE, 3)))
    model.add(augmentation)
    for index, filters in enumerate((32, 64, 32), start=1):
        model.add(layers.Conv2D(filters, (3, 3), activation="relu", name=f"conv2d_block{index}"))
        model.add(layers.MaxPooling2D((2, 2), name=f"maxpool_block{index}"))
    model.add(layers.Flatten(name="flatten"))
    model.add(layers.Dropout(0.5, name="dropout_regularization"))
    model.add(layers.Dense(128, activation="relu", name="dense_features"))
    model.add(layers.Dense(64, activation="relu", name="dense_abstract"))
    model.add(layers.Dense(1, activation="sigmoid", name="binary_output"))
    return model


class StepTimer(keras.callbacks.Callback):
    """Record the wall time at the end of each training step."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def fit_images_per_second(model, dataset, steps):
    """Train `steps` steps after a warm-up and return the images per second."""
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    timer = StepTimer()
    model.fit(dataset.repeat(), steps_per_epoch=WARMUP_STEPS + steps, epochs=1, verbose=0, callbacks=[timer])
    elapsed = timer.times[-1] - timer.times[WARMUP_STEPS - 1]
    return steps * BATCH_SIZE / elapsed


def ours(train_dir, steps):
    dataset, _ = make_dataset(
        train_dir,
        image_size=IMAGE_SIZE,
        batch_size=BATCH_SIZE,
        shuffle=True,
        seed=42,
        cache=True,
        augment=dict(flip=True, rotation=0.1, zoom=0.1, translation=0.0, contrast=0.0, brightness=0.0),
    )
    model = build_model("seed_cnn", input_shape=(*IMAGE_SIZE, 3), num_classes=2, dropout_rate=0.5)
    return fit_images_per_second(model, dataset, steps)


def seed(train_dir, steps):
    dataset = keras.utils.image_dataset_from_directory(
        train_dir,
        image_size=IMAGE_SIZE,
        batch_size=BATCH_SIZE,
        label_mode="binary",
        shuffle=True,
        seed=42,
        verbose=False,
    )
    return fit_images_per_second(seed_model(), dataset, steps)


def pipeline_images_per_second(dataset, batches):
    """Iterate a pipeline with no model and return images per second (after one warm-up batch)."""
    iterator = iter(dataset.repeat())
    next(iterator)
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        count += int(next(iterator)[0].shape[0])
    return count / (time.perf_counter() - start)


def compute_images_per_second(steps):
    """Train the seed CNN on one fixed in-memory batch: compute alone, no input pipeline."""
    model = build_model("seed_cnn", input_shape=(*IMAGE_SIZE, 3), num_classes=2, dropout_rate=0.5)
    images = tf.random.uniform((BATCH_SIZE, *IMAGE_SIZE, 3), 0, 255)
    labels = tf.cast(tf.random.uniform((BATCH_SIZE, 1), 0, 2, tf.int32), tf.float32)
    dataset = tf.data.Dataset.from_tensors((images, labels))
    return fit_images_per_second(model, dataset, steps)


def training_flops_per_image(model):
    """Count multiply-adds of Conv2D and Dense layers, times 2 for FLOPs, times 3 for forward + backward."""
    forward = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            _, height, width, filters = layer.output.shape
            kernel_height, kernel_width, channels, _ = layer.kernel.shape
            forward += 2 * height * width * filters * kernel_height * kernel_width * channels
        elif isinstance(layer, layers.Dense):
            forward += 2 * int(np.prod(layer.kernel.shape))
    return forward, 3 * forward


def matmul_gflops(size=2048, repeats=10):
    """Measure float32 matrix-multiply GFLOP/s with TensorFlow: this CPU's practical peak."""
    a = tf.random.uniform((size, size))
    b = tf.random.uniform((size, size))
    tf.matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        result = tf.matmul(a, b)
    result.numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="A prepared DATA folder (default: prepare the seed split into /tmp).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="Timed training steps per measurement.")
    arguments = parser.parse_args()
    train_dir = prepared_data(arguments.data) / "train"
    keras.utils.set_random_seed(42)
    print("train_throughput: seed CNN, batch 16, 180x180, fit steps timed after a warm-up")
    print(describe_machine())
    results = {"ours": [], "seed": []}
    loads = []
    for repeat in range(arguments.repeats):
        for name, run in (("ours", ours), ("seed", seed)):
            results[name].append(run(train_dir, arguments.steps))
            loads.append(load_average())
            print(f"  repeat {repeat + 1} {name}: {results[name][-1]:.1f} images/s")
    ours_median, seed_median = median(results["ours"]), median(results["seed"])
    print(
        f"median images/s: ours {ours_median:.1f}, seed approach {seed_median:.1f}, ratio "
        f"{ours_median / seed_median:.2f}"
    )

    decode_only, _ = make_dataset(train_dir, image_size=IMAGE_SIZE, batch_size=BATCH_SIZE, shuffle=True, seed=1)
    augmented, _ = make_dataset(
        train_dir,
        image_size=IMAGE_SIZE,
        batch_size=BATCH_SIZE,
        shuffle=True,
        seed=1,
        augment=dict(flip=True, rotation=0.1, zoom=0.1, translation=0.0, contrast=0.0, brightness=0.0),
    )
    decode_rate = pipeline_images_per_second(decode_only, 60)
    augment_rate = pipeline_images_per_second(augmented, 60)
    compute_rate = median([compute_images_per_second(arguments.steps) for _ in range(arguments.repeats)])
    model = build_model("seed_cnn", input_shape=(*IMAGE_SIZE, 3), num_classes=2, dropout_rate=0.5)
    forward_flops, train_flops = training_flops_per_image(model)
    peak = median([matmul_gflops() for _ in range(3)])
    achieved = train_flops * compute_rate / 1e9
    print(
        f"pipeline alone: decode+resize {decode_rate:.0f} images/s; with augmentation {augment_rate:.0f} images/s "
        "(no cache)"
    )
    print(f"compute alone (one in-memory batch): {compute_rate:.1f} images/s")
    print(
        f"FLOPs per image: forward {forward_flops / 1e9:.3f} GFLOP, training step about {train_flops / 1e9:.2f} GFLOP"
    )
    print(
        f"achieved {achieved:.1f} GFLOP/s in training vs {peak:.0f} GFLOP/s float32 matmul peak measured here "
        f"({achieved / peak:.0%})"
    )
    print(f"load average during the runs: {min(loads):.2f}..{max(loads):.2f}")


if __name__ == "__main__":
    main()
