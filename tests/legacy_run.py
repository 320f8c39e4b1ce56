"""A run folder exactly as catsdogs wrote it before the re-layout (commit 7bb201e), built at test time.

Run folders outlive the code that wrote them, so a folder trained before the
re-layout must still load, predict and evaluate. `write_legacy_run` writes one
file by file as 7bb201e's `training.train`, `runs.RunDir` and `config.Config`
did, without any of today's writing code (no `RunDir`, no `models.saving`):

    config.json              `Config.to_dict()` of 7bb201e: sections data, augment, model, train, serve
                             (no [predict] section, which came later)
    labels.json              class names in label order
    run.json                 what `claim`, the versions, the fit and the finish wrote, status "finished"
    model.keras              a tiny seed_cnn-like model saved with plain `keras`, compiled as training left it
    model.keras.sha256       "<hex>  model.keras", the `sha256sum` format
    history.csv              Keras's CSVLogger columns, with the learning rate 7bb201e logged
    metrics.json             what 7bb201e's `_finish` wrote: no "evaluation" section yet

Nothing binary is committed: the model and the photos are made here.
"""

import csv
import hashlib
import io
import json
import os
import socket
from pathlib import Path

import keras
from keras import layers

import fake_runs

LEGACY_COMMIT = "7bb201e"
IMAGE_SIZE = fake_runs.IMAGE_SIZE
CLASS_NAMES = fake_runs.CLASS_NAMES

# 7bb201e's default_config.toml with the overrides of a tiny run (image size, class names, min_side):
# every key that `Config.to_dict()` wrote then, in its order, and nothing newer.
LEGACY_CONFIG = {
    "data": {
        "image_size": [IMAGE_SIZE, IMAGE_SIZE],
        "class_names": list(CLASS_NAMES),
        "split": "numbers",
        "train_per_class": 1000,
        "validation_per_class": 500,
        "test_per_class": 500,
        "validation_fraction": 0.15,
        "test_fraction": 0.15,
        "max_pixels": 50000000,
        "min_side": 8,
        "cache": True,
    },
    "augment": {
        "enabled": True,
        "flip": True,
        "rotation": 0.1,
        "zoom": 0.1,
        "translation": 0.0,
        "contrast": 0.0,
        "brightness": 0.0,
    },
    "model": {"name": "seed_cnn", "dropout_rate": 0.5, "weights": "imagenet", "test_time_augmentation": False},
    "train": {
        "epochs": 2,
        "batch_size": 16,
        "seed": 42,
        "optimizer": "adam",
        "learning_rate": 0.001,
        "schedule": "constant",
        "weight_decay": 0.0001,
        "momentum": 0.9,
        "checkpoint": True,
        "early_stopping": True,
        "early_stopping_patience": 10,
        "reduce_lr": True,
        "reduce_lr_factor": 0.2,
        "reduce_lr_patience": 5,
        "min_learning_rate": 0.0001,
        "tensorboard": False,
        "deterministic": False,
        "precision": "float32",
        "feature_cache": True,
        "feature_flip": True,
        "feature_engine": "auto",
        "fine_tune_blocks": 0,
        "fine_tune_epochs": 3,
        "fine_tune_learning_rate": 0.0001,
    },
    "serve": {"host": "127.0.0.1", "port": 8000, "max_upload_mb": 10},
}
# The columns Keras's CSVLogger writes (sorted log keys after "epoch"), with 7bb201e's LogLearningRate.
HISTORY_COLUMNS = ("epoch", "accuracy", "learning_rate", "loss", "val_accuracy", "val_loss")
HISTORY_ROWS = (
    (0, 0.5625, 0.0010000000474974513, 0.6931471824645996, 0.5, 0.6929776072502136),
    (1, 0.6041666865348816, 0.0010000000474974513, 0.6913630366325378, 0.55, 0.6921547055244446),
)


def _write_json(path, value):
    # 7bb201e's fileio.atomic_write_json: indented UTF-8 JSON with a final newline.
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def legacy_seed_cnn(seed=7):
    """Return a tiny model shaped like 7bb201e's seed_cnn (same layer names, fewer filters), compiled.

    Raw pixels in, rescaling as the first layer, three conv blocks, dropout, two
    dense layers and a one-unit sigmoid output named "binary_output".
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescaling")(inputs)
    for block, filters in enumerate((4, 8, 4), start=1):
        x = layers.Conv2D(filters, (3, 3), activation="relu", name=f"conv2d_block{block}")(x)
        x = layers.MaxPooling2D((2, 2), name=f"maxpool_block{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.5, name="dropout_regularization")(x)
    x = layers.Dense(8, activation="relu", name="dense_features")(x)
    x = layers.Dense(4, activation="relu", name="dense_abstract")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="binary_output", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="seed_cnn")
    # The saved model was the fitted one, so it carries its optimizer and loss.
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def write_legacy_run(path, *, data_dir=None):
    """Write a finished run folder in 7bb201e's format, and a tiny prepared data folder beside it.

    Args:
        path: the run folder to create (it must not hold files yet).
        data_dir: the prepared folder run.json records; default a new one, `<path>.data/data`.

    Returns:
        The run folder's path.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if any(path.iterdir()):
        raise FileExistsError(f"The legacy run folder must be empty. Received: path={path}")
    if data_dir is None:
        data_dir = fake_runs.make_data(path.parent / f"{path.name}.data", per_class=4)
    data_dir = Path(data_dir).resolve()
    counts = {
        split: sum(1 for _ in (data_dir / split).rglob("*.png"))
        for split in ("train", "validation", "test")
        if (data_dir / split).is_dir()
    }

    _write_json(path / "config.json", LEGACY_CONFIG)
    _write_json(path / "labels.json", list(CLASS_NAMES))

    model_path = path / "model.keras"
    legacy_seed_cnn().save(model_path)
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    (path / "model.keras.sha256").write_text(f"{digest}  model.keras\n", encoding="utf-8")

    # CSVLogger writes with the csv module's "excel" dialect: comma-separated, CRLF line ends.
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(HISTORY_COLUMNS)
    writer.writerows(HISTORY_ROWS)
    (path / "history.csv").write_bytes(buffer.getvalue().encode("utf-8"))

    # run.json's keys in the order 7bb201e's claim, versions, fit and finish wrote them.
    _write_json(
        path / "run.json",
        {
            "status": "finished",
            "model": "seed_cnn",
            "data_dir": str(data_dir),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": "2026-11-27T12:00:00",
            "attempts": 1,
            "versions": {"catsdogs": "0.1.0", "keras": keras.__version__, "tensorflow": "2.21.0"},
            "stop_reason": "completed",
            "fit_seconds": 3.25,
            "finished": "2026-11-27T12:00:05",
        },
    )
    _write_json(
        path / "metrics.json",
        {
            "model": "seed_cnn",
            "stop_reason": "completed",
            "epochs_done": len(HISTORY_ROWS),
            "best_epoch": 2,
            "fit_seconds": 3.25,
            "images": counts,
            "validation": {"loss": 0.6921547055244446, "accuracy": 0.55},
            "test": {"loss": 0.6925, "accuracy": 0.5},
        },
    )
    return path
