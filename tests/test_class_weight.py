"""`train.class_weight`: balanced weights from the training counts, applied in every fit, and the imbalance warnings.

The training tests use a 1:5 folder whose classes overlap: flat grey photos, the
minority class ("cats") darker on average than the majority ("dogs"). Fitted
without weights, a model moves its boundary into the cats' side because that
lowers the average loss, so it misses most cats; balanced weights move it back.
Both runs use the same seed, tiny models and 16-pixel photos.
"""

import json
from pathlib import Path

import keras
import numpy
import pytest
from keras import layers
from PIL import Image

from catsdogs.cli import main
from catsdogs.data.dataset import list_images
from catsdogs.data.summary import IMBALANCE_LIMIT, imbalance_warning
from catsdogs.errors import CatsdogsError
from catsdogs.models.saving import load_model
from catsdogs.report import sections
from catsdogs.training.class_weights import class_weight_record, class_weights
from fake_runs import tiny_config
from tiny_backbones import build_tiny_transfer, registered

SIZE = 16
# Brightness of the flat grey photos: mean and spread per class, in 0..255.
CATS_BRIGHTNESS = (100.0, 25.0)
DOGS_BRIGHTNESS = (140.0, 25.0)
# Training photos per class: 1 cat for every 5 dogs. The test split is balanced, to read both recalls.
COUNTS = {"train": {"cats": 10, "dogs": 50}, "validation": {"cats": 6, "dogs": 30}, "test": {"cats": 40, "dogs": 40}}


# ----------------------------------------------------------------------------- the weights


def test_balanced_weights_are_total_over_classes_times_count():
    labels = [0] * 10 + [1] * 50
    assert class_weights("balanced", labels, ["cats", "dogs"]) == pytest.approx({0: 3.0, 1: 0.6})
    three = class_weights("balanced", [0] * 6 + [1] * 3 + [2] * 9, ["a", "b", "c"])
    assert three == pytest.approx({0: 18 / (3 * 6), 1: 18 / (3 * 3), 2: 18 / (3 * 9)})
    # The mean weight over the training photos stays 1: the loss keeps its scale.
    assert numpy.mean([three[label] for label in [0] * 6 + [1] * 3 + [2] * 9]) == pytest.approx(1.0)


def test_no_weighting_gives_none_and_records_the_counts():
    labels = [0] * 10 + [1] * 50
    assert class_weights("none", labels, ["cats", "dogs"]) is None
    record = class_weight_record("none", labels, ["cats", "dogs"], None)
    assert record == {"mode": "none", "train_counts": {"cats": 10, "dogs": 50}, "weights": None}


def test_a_class_without_training_photos_cannot_be_balanced():
    with pytest.raises(CatsdogsError, match=r"classes without photos=\['birds'\]"):
        class_weights("balanced", [0, 0, 1], ["cats", "dogs", "birds"])
    with pytest.raises(CatsdogsError, match="train.class_weight='inverse'"):
        class_weights("inverse", [0, 1], ["cats", "dogs"])


# ----------------------------------------------------------------------------- the warnings


def test_the_imbalance_warning_starts_above_one_and_a_half_times():
    assert IMBALANCE_LIMIT == 1.5
    assert imbalance_warning({"cats": 10, "dogs": 15}) is None
    assert imbalance_warning({"cats": 10}) is None
    warning = imbalance_warning({"cats": 10, "dogs": 16})
    assert "dogs has 16 photos, 1.6x as many as cats (10)" in warning
    assert "--set train.class_weight=balanced" in warning
    assert "has no photos" in imbalance_warning({"cats": 0, "dogs": 5})
    weighted = imbalance_warning({"cats": 10, "dogs": 50}, weights={"cats": 3.0, "dogs": 0.6})
    assert "trained with balanced class weights (cats 3.00, dogs 0.60)" in weighted
    assert "--set" not in weighted


def _write_flat_folder(folder, make_image_bytes, counts):
    folder.mkdir()
    for offset, (prefix, count) in enumerate(counts.items()):
        for number in range(count):
            # Distinct seeds per class: identical bytes would be kept together as duplicates and skew the split.
            (folder / f"{prefix}.{number}.jpg").write_bytes(make_image_bytes(seed=1000 * offset + number))
    return folder


def test_prepare_warns_when_the_training_split_is_imbalanced(make_image_bytes, tmp_path, capsys):
    source = _write_flat_folder(tmp_path / "photos", make_image_bytes, {"cat": 4, "dog": 16})
    arguments = ["prepare", str(source), "--out", str(tmp_path / "data"), "--split", "all", "--no-progress"]
    assert main([*arguments, "--val-fraction", "0.25", "--test-fraction", "0.25"]) == 0
    printed = capsys.readouterr().out
    assert "dogs has 8 photos, 4.0x as many as cats (2)" in printed
    assert "--set train.class_weight=balanced" in printed


def test_prepare_is_quiet_about_balanced_classes(make_image_bytes, tmp_path, capsys):
    source = _write_flat_folder(tmp_path / "photos", make_image_bytes, {"cat": 8, "dog": 8})
    arguments = ["prepare", str(source), "--out", str(tmp_path / "data"), "--split", "all", "--no-progress"]
    assert main([*arguments, "--val-fraction", "0.25", "--test-fraction", "0.25"]) == 0
    assert "class_weight" not in capsys.readouterr().out


def test_the_report_warns_about_imbalance_and_says_when_the_run_was_weighted():
    manifest = {
        "arguments": {"source": "photos", "split": "all", "class_names": ["cats", "dogs"]},
        "counts": {"train": {"cats": 10, "dogs": 50}, "validation": {"cats": 2, "dogs": 10}},
    }
    unweighted = sections.data_section({"data_dir": "DATA"}, {}, manifest)
    assert 'class="warning"' in unweighted and "--set train.class_weight=balanced" in unweighted
    weighted_info = {"data_dir": "DATA", "class_weight": {"mode": "balanced", "weights": {"cats": 3.0, "dogs": 0.6}}}
    assert "trained with balanced class weights" in sections.data_section(weighted_info, {}, manifest)
    balanced = {**manifest, "counts": {"train": {"cats": 10, "dogs": 12}}}
    assert "warning" not in sections.data_section({"data_dir": "DATA"}, {}, balanced)


# ----------------------------------------------------------------------------- training with and without weights


def write_overlapping_data(root, counts=COUNTS, seed=0):
    """Write ROOT/<split>/<class>/<n>.png: flat grey photos whose brightness overlaps between the classes."""
    rng = numpy.random.default_rng(seed)
    for split, by_class in counts.items():
        for class_name, count in by_class.items():
            mean, spread = CATS_BRIGHTNESS if class_name == "cats" else DOGS_BRIGHTNESS
            folder = Path(root) / split / class_name
            folder.mkdir(parents=True)
            for index in range(count):
                level = numpy.clip(rng.normal(mean, spread), 0, 255)
                pixels = numpy.full((SIZE, SIZE, 3), level) + rng.normal(0, 2, (SIZE, SIZE, 3))
                Image.fromarray(numpy.clip(pixels, 0, 255).astype(numpy.uint8)).save(folder / f"{index}.png")
    return Path(root)


def build_mean_brightness(*, input_shape, num_classes, dropout_rate=0.0, weights=None):
    """A from-scratch stand-in: logistic regression on the photo's standardised mean brightness."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 25.0, offset=-120.0 / 25.0, name="standardise")(inputs)
    x = layers.GlobalAveragePooling2D(name="mean_brightness")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="predictions")(x)
    return keras.Model(inputs, outputs, name="mean_brightness")


@pytest.fixture(scope="module")
def overlapping_data(tmp_path_factory):
    return write_overlapping_data(tmp_path_factory.mktemp("overlapping"))


def recall_by_class(run_dir, data_dir):
    """Return {class: recall} of the run's saved model on the test split, at the 0.5 threshold."""
    paths, labels, class_names = list_images(Path(data_dir) / "test")
    pixels = numpy.stack([numpy.asarray(Image.open(path).convert("RGB"), dtype="float32") for path in paths])
    predicted = (load_model(run_dir.model_path).predict(pixels, verbose=0)[:, 0] >= 0.5).astype(int)
    labels = numpy.asarray(labels)
    return {name: float(numpy.mean(predicted[labels == index] == index)) for index, name in enumerate(class_names)}


def train_twice(data_dir, runs_dir, *overrides, epochs):
    """Train with class_weight none, then balanced, same seed; return both runs."""
    from catsdogs.training import train

    runs = {}
    for mode in ("none", "balanced"):
        config = tiny_config(
            "augment.enabled=false",
            "train.learning_rate=0.05",
            "train.checkpoint=false",
            "train.early_stopping=false",
            "train.reduce_lr=false",
            f"train.class_weight={mode}",
            *overrides,
            size=SIZE,
            epochs=epochs,
        )
        runs[mode] = train(config, data_dir, runs_dir=runs_dir, run_name=mode, verbose=0)
    return runs


def test_balanced_weights_move_the_fitted_boundary_towards_the_majority():
    """The fit path alone, on in-memory photos: fast, and it fails if class_weight is ignored by the loop."""
    import tensorflow as tf

    from catsdogs.training.fit import compile_model, fit_model
    from catsdogs.training.optimizers import OptimizerSettings

    rng = numpy.random.default_rng(0)
    labels = numpy.array([0] * 20 + [1] * 100, dtype="float32")
    levels = numpy.where(labels == 0, rng.normal(*CATS_BRIGHTNESS, 120), rng.normal(*DOGS_BRIGHTNESS, 120))
    images = numpy.broadcast_to(levels[:, None, None, None], (120, 4, 4, 3)).astype("float32")
    test_levels = numpy.concatenate([rng.normal(*CATS_BRIGHTNESS, 200), rng.normal(*DOGS_BRIGHTNESS, 200)])
    test_images = numpy.broadcast_to(test_levels[:, None, None, None], (400, 4, 4, 3)).astype("float32")
    recalls = {}
    for name, weights in (("none", None), ("balanced", class_weights("balanced", labels.astype(int), ["c", "d"]))):
        keras.utils.set_random_seed(0)
        model = build_mean_brightness(input_shape=(4, 4, 3), num_classes=2)
        optimizer = OptimizerSettings(name="adam", learning_rate=0.05, schedule="constant")
        compile_model(model, num_classes=2, optimizer=optimizer, total_steps=300)
        data = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(120, seed=0).batch(12)
        fit_model(model, data, None, epochs=20, callbacks=[], verbose=0, class_weight=weights)
        predicted = model.predict(test_images, verbose=0)[:, 0] >= 0.5
        recalls[name] = float(numpy.mean(~predicted[:200]))
    assert recalls["balanced"] >= recalls["none"] + 0.2, recalls


def _check_weights_recorded(runs):
    balanced = json.loads(runs["balanced"].run_info_path.read_text())["class_weight"]
    assert balanced["mode"] == "balanced" and balanced["train_counts"] == {"cats": 10, "dogs": 50}
    assert balanced["weights"] == pytest.approx({"cats": 3.0, "dogs": 0.6})
    assert json.loads(runs["none"].run_info_path.read_text())["class_weight"]["weights"] is None
    assert "Class weights (balanced): cats 3.000, dogs 0.600" in runs["balanced"].log_path.read_text()


@pytest.mark.slow  # Two full `train` runs of 25 epochs each: about 25 s.
def test_balanced_weights_raise_the_minority_recall_when_training_from_scratch(overlapping_data, tmp_path):
    with registered("mean_brightness", build_mean_brightness):
        runs = train_twice(overlapping_data, tmp_path, "model.name=mean_brightness", epochs=25)
    unweighted = recall_by_class(runs["none"], overlapping_data)
    weighted = recall_by_class(runs["balanced"], overlapping_data)
    # Without weights the model favours the majority; with them it finds many more of the minority.
    assert unweighted["cats"] < unweighted["dogs"]
    assert weighted["cats"] >= unweighted["cats"] + 0.25, (unweighted, weighted)
    _check_weights_recorded(runs)


@pytest.mark.slow  # Two full `train` runs of 25 epochs each: about 25 s.
def test_balanced_weights_raise_the_minority_recall_of_the_cached_feature_head(overlapping_data, tmp_path):
    with registered("tiny_transfer", build_tiny_transfer, pretrained=True, last_conv_layer="backbone/top_activation"):
        runs = train_twice(
            overlapping_data,
            tmp_path,
            "model.name=tiny_transfer",
            "train.feature_engine=keras",
            "train.feature_flip=false",
            epochs=25,
        )
    for run in runs.values():
        assert json.loads(run.run_info_path.read_text())["transfer"]["cached_features"]
    unweighted = recall_by_class(runs["none"], overlapping_data)
    weighted = recall_by_class(runs["balanced"], overlapping_data)
    assert unweighted["cats"] < unweighted["dogs"]
    assert weighted["cats"] >= unweighted["cats"] + 0.25, (unweighted, weighted)
    _check_weights_recorded(runs)
