"""Tiny synthetic data and configs for the training, inference and model tests.

Imported as `helpers` (pytest puts this folder on sys.path). Dogs carry a
bright square, cats do not, so even a few epochs of a tiny model learn
something, and every image is small enough for a fast default test suite.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from catsdogs.config import load_config
from catsdogs.models.saving import save_model

CLASS_NAMES = ("cats", "dogs")
DEFAULT_COUNTS = {"train": 12, "validation": 6, "test": 6}


def synthetic_image(rng, label, size=32):
    """Return a uint8 RGB array: dark noise, plus a bright square for label 1."""
    pixels = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
    if label == 1:
        low, high = size // 4, 3 * size // 4
        pixels[low:high, low:high] = 230
    return pixels


def make_data_dir(root, *, counts=None, size=32, class_names=CLASS_NAMES, seed=0):
    """Write DATA/<split>/<class>/<n>.png as `catsdogs prepare` would, and return DATA.

    Args:
        root: the folder to create.
        counts: {split: images per class}; default 12 train, 6 validation, 6 test.
        size: image side in pixels.
        class_names: class folder names, in label order.
        seed: seed for the pixel noise.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, per_class in (counts or DEFAULT_COUNTS).items():
        for label, class_name in enumerate(class_names):
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                Image.fromarray(synthetic_image(rng, label % 2, size)).save(folder / f"{index}.png")
    return root


def tiny_config(*overrides, size=32, epochs=2):
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


def make_untrained_run(runs_dir, run_name):
    """Write a run folder holding an untrained 32x32 seed CNN: enough for prediction tests.

    Returns:
        The run folder's path.
    """
    import keras

    from catsdogs.models import build_model
    from catsdogs.runs import RunDir

    keras.utils.set_random_seed(1)
    run_dir = RunDir.create(runs_dir, model_name="seed_cnn", run_name=run_name)
    run_dir.write_config(tiny_config().to_dict())
    run_dir.write_labels(list(CLASS_NAMES))
    save_model(build_model("seed_cnn", input_shape=(32, 32, 3), num_classes=2), run_dir.model_path)
    return run_dir.path
