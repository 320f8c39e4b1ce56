"""Why did the seed's run sit at loss ln 2 = 0.693 for 50 epochs? Reproduce the plausible causes.

Each condition trains the exact seed CNN (Adam, binary cross-entropy, batch 16, the
seed's flip/rotation/zoom augmentation) on the same subset of the seed split for a
few epochs, changing one thing:
- correct: raw 0..255 pixels into a model that rescales by 1/255 itself;
- double rescaling: pixels already scaled to 0..1 before the model's own 1/255,
  as happens when a hand-written loader normalises and the model rescales again;
- misaligned labels: labels permuted against the files, as when file and label
  lists are shuffled separately;
- learning rate 1e-4 and 1e-2: Adam ten times below and above its default 1e-3.
It prints the training loss per epoch, the final validation accuracy, and the share
of dead ReLU units (never positive on any validation photo) in the two dense layers,
which is where a network that outputs a constant has usually lost its signal.

Usage: python benchmarks/seed_diagnosis.py [--data DATA] [--train-per-class 300] [--epochs 6]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catsdogs.data.augment import augment_batch  # noqa: E402
from catsdogs.data.dataset import list_images  # noqa: E402
from catsdogs.images import decode_and_resize  # noqa: E402
from catsdogs.models import build_model  # noqa: E402
from machine import describe_machine  # noqa: E402
from train_throughput import IMAGE_SIZE, prepared_data  # noqa: E402

SEED_AUGMENTATION = dict(flip=True, rotation=0.1, zoom=0.1)
LN_2 = float(np.log(2))


def subset(split_dir, per_class):
    """Return the first `per_class` paths of each class with their labels."""
    paths, labels, _ = list_images(split_dir)
    chosen = [
        index
        for label in sorted(set(labels))
        for index in [i for i, value in enumerate(labels) if value == label][:per_class]
    ]
    return [paths[i] for i in chosen], np.array([labels[i] for i in chosen], np.float32)


def dataset(paths, labels, *, shuffle, divide_by_255=False, augment=False):
    data = tf.data.Dataset.from_tensor_slices((paths, labels))
    data = data.map(lambda path, label: (decode_and_resize(tf.io.read_file(path), IMAGE_SIZE), label)).cache()
    if shuffle:
        data = data.shuffle(len(paths), seed=42, reshuffle_each_iteration=True)
    data = data.batch(16).map(lambda images, labels: (tf.cast(images, tf.float32), labels))
    if augment:
        seeds = tf.data.Dataset.random(seed=42, rerandomize_each_iteration=True).batch(2)
        data = tf.data.Dataset.zip((data, seeds)).map(
            lambda batch, seed: (augment_batch(batch[0], seed, **SEED_AUGMENTATION), batch[1])
        )
    if divide_by_255:
        data = data.map(lambda images, labels: (images / 255.0, labels))
    return data.prefetch(tf.data.AUTOTUNE)


def run_condition(name, train, validation, epochs, *, learning_rate=1e-3, divide_by_255=False, permute_labels=False):
    keras.utils.set_random_seed(42)
    train_paths, train_labels = train
    if permute_labels:
        train_labels = np.random.default_rng(0).permutation(train_labels)
    model = build_model("seed_cnn", input_shape=(*IMAGE_SIZE, 3), num_classes=2, dropout_rate=0.5)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(
        dataset(train_paths, train_labels, shuffle=True, divide_by_255=divide_by_255, augment=True),
        validation_data=dataset(*validation, shuffle=False, divide_by_255=divide_by_255),
        epochs=epochs,
        verbose=0,
    )
    losses = history.history["loss"]
    dead = dead_unit_shares(model, dataset(*validation, shuffle=False, divide_by_255=divide_by_255))
    print(
        f"| {name} | {' '.join(f'{loss:.3f}' for loss in losses)} | {history.history['val_loss'][-1]:.3f} | "
        f"{history.history['val_accuracy'][-1]:.1%} | {dead} | {time.perf_counter() - start:.0f} s |",
        flush=True,
    )


def dead_unit_shares(model, validation):
    """Return, for each dense ReLU layer, the share of units that stay at zero on every validation photo."""
    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in ("dense_features", "dense_abstract")])
    ever_active = None
    for images, _ in validation:
        active = [np.any(output.numpy() > 0, axis=0) for output in probe(images, training=False)]
        ever_active = active if ever_active is None else [a | b for a, b in zip(ever_active, active)]
    return " / ".join(f"{1 - active.mean():.0%}" for active in ever_active)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="A prepared DATA folder (default: prepare the seed split into /tmp).")
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--validation-per-class", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=6)
    arguments = parser.parse_args()
    data_dir = prepared_data(arguments.data)
    train = subset(data_dir / "train", arguments.train_per_class)
    validation = subset(data_dir / "validation", arguments.validation_per_class)
    print(
        f"seed_diagnosis: seed CNN, {len(train[0])} train / {len(validation[0])} validation photos from the seed "
        "split, "
        f"{arguments.epochs} epochs each, Adam, batch 16, seed augmentation; ln 2 = {LN_2:.3f}"
    )
    print(describe_machine())
    print(
        "| condition | training loss per epoch | final val loss | final val accuracy | dead units dense 128 / 64 | "
        "time |"
    )
    print("|---|---|---|---|---|---|")
    run_condition("seed settings (Adam 1e-3)", train, validation, arguments.epochs)
    run_condition("learning rate 1e-4", train, validation, arguments.epochs, learning_rate=1e-4)
    run_condition("learning rate 1e-2", train, validation, arguments.epochs, learning_rate=1e-2)
    run_condition("double rescaling (1e-3)", train, validation, arguments.epochs, divide_by_255=True)
    run_condition(
        "double rescaling (1e-4)", train, validation, arguments.epochs, divide_by_255=True, learning_rate=1e-4
    )
    run_condition(
        "misaligned labels (1e-4)", train, validation, arguments.epochs, permute_labels=True, learning_rate=1e-4
    )


if __name__ == "__main__":
    main()
