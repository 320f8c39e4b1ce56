"""Tiny synthetic data folders, configs and run folders: the one place tests build fake runs.

Imported as `fake_runs` (pytest puts this folder on sys.path). Two kinds of
prepared data, for two kinds of test:

- `make_data_dir`: noise, plus a bright square on "dogs", for the training tests:
  even a few epochs of a tiny model learn something.
- `make_data`: a red ("dogs") or green ("cats") square on noise, with a few
  ambiguous or misleading photos and a manifest.json, for the evaluation, report,
  compare and prediction tests. `red_minus_green_model` reads it with fixed
  weights, so no training is needed, it makes some mistakes, and the results
  are the same on every machine.

`make_run` writes a finished run folder around any model (by default the fixed
red-minus-green one). Every image is small enough for a fast default test suite.
"""

import json
from pathlib import Path

import keras
import numpy
from keras import layers
from PIL import Image

from catsdogs.config import load_config
from catsdogs.models.saving import save_model
from catsdogs.runs import RunDir

IMAGE_SIZE = 32
CLASS_NAMES = ("cats", "dogs")
DEFAULT_COUNTS = {"train": 12, "validation": 6, "test": 6}


# ----------------------------------------------------------------------------- data for training


def synthetic_image(rng, label, size=IMAGE_SIZE):
    """Return a uint8 RGB array: dark noise, plus a bright square for label 1."""
    pixels = rng.integers(0, 90, (size, size, 3)).astype(numpy.uint8)
    if label == 1:
        low, high = size // 4, 3 * size // 4
        pixels[low:high, low:high] = 230
    return pixels


def make_data_dir(root, *, counts=None, size=IMAGE_SIZE, class_names=CLASS_NAMES, seed=0):
    """Write ROOT/<split>/<class>/<n>.png as `catsdogs prepare` would, and return ROOT.

    Args:
        root: the folder to create.
        counts: {split: images per class}; default 12 train, 6 validation, 6 test.
        size: image side in pixels.
        class_names: class folder names, in label order.
        seed: seed for the pixel noise.

    Returns:
        The data folder's path.
    """
    root = Path(root)
    rng = numpy.random.default_rng(seed)
    for split, per_class in (counts or DEFAULT_COUNTS).items():
        for label, class_name in enumerate(class_names):
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                Image.fromarray(synthetic_image(rng, label % 2, size)).save(folder / f"{index}.png")
    return root


def tiny_config(*overrides, size=IMAGE_SIZE, epochs=2):
    """Return a Config for fast tests: small images, few epochs, no cache; `overrides` are `--set` strings."""
    return load_config(
        None,
        [
            f"data.image_size=[{size}, {size}]",
            f"train.epochs={epochs}",
            "train.batch_size=8",
            "data.cache=false",
            *overrides,
        ],
    )


# ----------------------------------------------------------------------------- data and models for evaluation


def colour_square(red, green, *, seed, size=IMAGE_SIZE):
    """Return a uint8 image with a square of the given red and green strength at a random place."""
    generator = numpy.random.default_rng(seed)
    image = generator.integers(0, 40, size=(size, size, 3)).astype(numpy.float32)
    top, left = generator.integers(0, size // 2, size=2)
    image[top : top + size // 2, left : left + size // 2, 0] += red
    image[top : top + size // 2, left : left + size // 2, 1] += green
    return numpy.clip(image, 0, 255).astype(numpy.uint8)


def make_data(root, *, per_class=10, class_names=CLASS_NAMES, splits=("train", "validation", "test")):
    """Write ROOT/data/<split>/<class>/*.png and a manifest.json like `prepare`'s; return ROOT/data.

    Args:
        root: the folder to write `data/` into.
        per_class: images per class in every split.
        class_names: class folder names, in label order.
        splits: which splits to write, e.g. ("test",) for a folder without validation.

    Returns:
        The data folder's path.
    """
    data_dir = Path(root) / "data"
    counts = {}
    for split_number, split in enumerate(("train", "validation", "test")):
        if split not in splits:
            continue
        counts[split] = {}
        for label, name in enumerate(class_names):
            folder = data_dir / split / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                seed = 1000 * split_number + 100 * label + index
                # Some photos are hard: both colours, and every fifth shows the other class's colour more.
                strength, other = (120, 90) if index % 4 == 3 else (70, 130) if index % 5 == 4 else (200, 0)
                red, green = (strength, other) if label == 1 else (other, strength)
                if len(class_names) > 2:
                    red, green = (60 * label, 200 - 60 * label)
                Image.fromarray(colour_square(red, green, seed=seed)).save(folder / f"{name}.{index}.png")
            counts[split][name] = per_class
    manifest = {
        "arguments": {"source": "/photos/train", "split": "numbers", "class_names": list(class_names)},
        "counts": counts,
        "files": [{"source": "cat.666.jpg", "status": "quarantined", "reason": "truncated", "note": ""}],
        "duplicate_groups": [{"split": "train", "files": ["dog.1.jpg", "dog.2.jpg"]}],
        "ignored_hidden_files": 0,
    }
    (data_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return data_dir


def red_minus_green_model(kind="functional", name="tiny_cnn", num_classes=2):
    """Return a fixed-weight CNN whose logit is (red - green) of the image: high means "dogs"."""
    conv = layers.Conv2D(2, 3, padding="same", activation="relu", name="last_conv")
    pool = layers.GlobalAveragePooling2D(name="pool")
    head = layers.Dense(
        1 if num_classes == 2 else num_classes,
        activation="sigmoid" if num_classes == 2 else "softmax",
        name="predictions",
    )
    if kind == "sequential":
        model = keras.Sequential([keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)), conv, pool, head], name=name)
    else:
        inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
        x = layers.Rescaling(1.0, name="identity")(inputs)
        model = keras.Model(inputs, head(pool(conv(x))), name=name)
    kernel = numpy.zeros((3, 3, 3, 2), numpy.float32)
    kernel[:, :, 0, 0], kernel[:, :, 1, 0] = 1 / 9, -1 / 9
    kernel[:, :, 1, 1], kernel[:, :, 0, 1] = 1 / 9, -1 / 9
    conv.set_weights([kernel, numpy.zeros(2, numpy.float32)])
    if num_classes == 2:
        head.set_weights([numpy.array([[0.08], [-0.08]], numpy.float32), numpy.array([0.0], numpy.float32)])
    else:
        head.set_weights(
            [
                numpy.linspace([-0.1, 0.1], [0.1, -0.1], num_classes).T.astype(numpy.float32),
                numpy.zeros(num_classes, numpy.float32),
            ]
        )
    return model


def untrained_seed_cnn(seed=1):
    """Return the registry's seed CNN at 32x32, untrained: tests of prediction need a model, not a good one."""
    from catsdogs.models import build_model

    keras.utils.set_random_seed(seed)
    return build_model("seed_cnn", input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), num_classes=2)


# ----------------------------------------------------------------------------- run folders


def make_run(
    runs_dir,
    data_dir,
    *,
    name="run-a",
    kind="functional",
    model_name="tiny_cnn",
    model=None,
    epochs=3,
    class_names=CLASS_NAMES,
):
    """Write a finished run folder (config, labels, run.json, model, history, training metrics).

    Args:
        runs_dir: the folder to create the run in.
        data_dir: the prepared folder the run records as its own data.
        name: the run folder's name.
        kind: "functional" or "sequential", for the default red-minus-green model.
        model_name: the model name run.json and metrics.json record.
        model: the `keras.Model` to save; default `red_minus_green_model(kind, ...)`.
        epochs: rows of history.csv.
        class_names: the run's classes, in label order.

    Returns:
        The run's `RunDir`.
    """
    config = load_config(
        overrides=[
            f"data.image_size=[{IMAGE_SIZE}, {IMAGE_SIZE}]",
            f"data.class_names={json.dumps(list(class_names))}",
            "data.min_side=8",
        ]
    )
    run = RunDir.create(runs_dir, model_name=model_name, run_name=name)
    run.write_config(config.to_dict())
    run.write_labels(list(class_names))
    run.claim(data_dir=data_dir, model_name=model_name)
    run.update_run_info(status="finished", fit_seconds=12.5, versions={"keras": keras.__version__})
    if model is None:
        model = red_minus_green_model(kind, name=model_name, num_classes=len(class_names))
    save_model(model, run.model_path)
    rows = ["epoch,accuracy,loss,val_accuracy,val_loss,learning_rate"]
    for epoch in range(epochs):
        rows.append(f"{epoch},{0.6 + 0.1 * epoch},{0.7 - 0.1 * epoch},{0.55 + 0.1 * epoch},{0.75 - 0.1 * epoch},0.001")
    run.history_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    count = sum(1 for _ in (data_dir / "test").rglob("*.png"))
    run.write_metrics(
        {
            "model": model_name,
            "epochs_done": epochs,
            "best_epoch": epochs,
            "fit_seconds": 12.5,
            "stop_reason": "completed",
            "images": {"train": count, "validation": count, "test": count},
            "validation": {"loss": 0.5, "accuracy": 0.75},
            "test": {"loss": 0.5, "accuracy": 0.8},
        }
    )
    return run
