"""Transfer models: registry entries, preprocessing, frozen BatchNorm in fine-tuning, training phases, TTA, "
"zero-shot."""

import json

import keras
import numpy as np
import pytest

from catsdogs.cli import main
from catsdogs.errors import CatsdogsError
from catsdogs.inference import Predictor
from catsdogs.inference.zero_shot import (
    ZERO_SHOT_NOTE,
    ZeroShotPredictor,
    dog_probability_from_logits,
    zero_shot_cat_dog,
)
from catsdogs.models import build_model, model_entry
from catsdogs.models.saving import load_model, save_model
from catsdogs.models.transfer import backbone_of, build_head, is_transfer_model, unfreeze_top_blocks
from catsdogs.training.transfer import fine_tuning_model
from catsdogs.training.transfer_features import cut_tensor
from fake_runs import make_data_dir, tiny_config
from tiny_backbones import build_tiny_transfer, registered, tiny_transfer_model

TRANSFER_MODELS = ("efficientnet_lite0", "vgg16", "mobilenet_v2", "efficientnet_b0", "xception", "resnet50")
TINY_SHAPE = (32, 32, 3)


@pytest.mark.parametrize("name", TRANSFER_MODELS)
def test_registry_entry_trains_only_its_head_and_reloads_identically(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model(name, input_shape=TINY_SHAPE, num_classes=2, dropout_rate=0.2, weights=None)
    assert is_transfer_model(model) and model_entry(name).pretrained
    # The backbone starts frozen: only the classifier trains in the first phase.
    assert [weight.path for weight in model.trainable_weights] == ["predictions/kernel", "predictions/bias"]
    pixels = np.random.default_rng(0).uniform(0, 255, (4, *TINY_SHAPE)).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    before = {weight.path: weight.numpy().copy() for weight in model.weights}
    model.train_on_batch(pixels, np.array([0, 1, 0, 1], "float32"))
    changed = {weight.path for weight in model.weights if not np.array_equal(before[weight.path], weight.numpy())}
    assert changed and changed <= {"predictions/kernel", "predictions/bias"}
    # Saving 60-90 MB (VGG16, ResNet50, Xception) takes seconds; test_models.py saves those under `-m slow`.
    if model.count_params() < 5_000_000:
        expected = model.predict_on_batch(pixels)
        save_model(model, tmp_path / "model.keras")
        np.testing.assert_array_equal(load_model(tmp_path / "model.keras").predict_on_batch(pixels), expected)
    # Grad-CAM's layer is inside the nested backbone.
    layer_name = model_entry(name).last_conv_layer.split("/")[1]
    assert len(backbone_of(model).get_layer(layer_name).output.shape) == 4


def _preprocessed(model, pixels):
    last_preprocessing = [layer for layer in model.layers if layer.name.startswith("preprocess_")][-1]
    return np.asarray(keras.Model(model.input, last_preprocessing.output).predict_on_batch(pixels))


@pytest.mark.parametrize(
    "name, preprocess_input",
    [
        ("vgg16", keras.applications.vgg16.preprocess_input),
        ("resnet50", keras.applications.resnet50.preprocess_input),
        ("mobilenet_v2", keras.applications.mobilenet_v2.preprocess_input),
        ("xception", keras.applications.xception.preprocess_input),
    ],
)
def test_preprocessing_layers_match_keras_preprocess_input(name, preprocess_input):
    model = build_model(name, input_shape=TINY_SHAPE, num_classes=2, weights=None)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, *TINY_SHAPE)).astype("float32")
    np.testing.assert_allclose(_preprocessed(model, pixels), preprocess_input(pixels.copy()), rtol=1e-5, atol=1e-3)


def test_efficientnet_b0_normalises_with_imagenet_statistics():
    model = build_model("efficientnet_b0", input_shape=TINY_SHAPE, num_classes=2, weights=None)
    backbone = backbone_of(model)
    normalization = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.Normalization))
    probe = keras.Model(backbone.input, normalization.output)
    pixels = np.full((1, *TINY_SHAPE), 255.0, "float32")
    expected = (1.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(probe.predict_on_batch(pixels)[0, 0, 0], expected, rtol=1e-4)


def test_fine_tuning_keeps_batch_norm_frozen_and_lower_blocks_fixed():
    model = tiny_transfer_model()
    trainable = unfreeze_top_blocks(model, 2)
    assert trainable == ["block2_conv", "block3_conv", "top_conv"]
    backbone = backbone_of(model)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in backbone.layers if layer.weights}
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy")
    pixels = np.random.default_rng(2).uniform(0, 255, (8, *TINY_SHAPE)).astype("float32")
    model.train_on_batch(pixels, np.array([0, 1] * 4, "float32"))
    for layer in backbone.layers:
        if not layer.weights:
            continue
        changed = any(not np.array_equal(old, new) for old, new in zip(before[layer.name], layer.get_weights()))
        # BatchNorm: gamma, beta and the moving statistics all stay as they were.
        assert changed == (layer.name in trainable), layer.name


def test_unfreeze_refuses_more_blocks_than_the_backbone_has():
    with pytest.raises(CatsdogsError, match="between 0 and 3"):
        unfreeze_top_blocks(tiny_transfer_model(), 4)


def test_fine_tuning_on_cut_activations_trains_the_shared_backbone():
    model = tiny_transfer_model()
    cut, block = cut_tensor(model, 1)
    assert block == "block3"
    fit_model, finish = fine_tuning_model(model, 1, cut)
    activations = np.random.default_rng(3).uniform(0, 2, (8, *cut.shape[1:])).astype("float32")
    fit_model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy")
    fit_model.train_on_batch(activations, np.array([0, 1] * 4, "float32"))
    finish()
    # The full model now computes what the fine-tuned top computes.
    upper = keras.Model(cut, model.get_layer("backbone").output)
    head = build_head(model)
    pooled = np.mean(upper.predict_on_batch(activations), axis=(1, 2))
    np.testing.assert_allclose(
        head.predict_on_batch(pooled), fit_model.predict_on_batch(activations), rtol=1e-5, atol=1e-6
    )


class MirrorSensitive(keras.layers.Layer):
    """Outputs a sigmoid of the left half's mean minus the right half's: mirroring changes it."""

    def call(self, inputs):
        width = inputs.shape[2] // 2
        difference = keras.ops.mean(inputs[:, :, :width], axis=(1, 2, 3)) - keras.ops.mean(
            inputs[:, :, width:], axis=(1, 2, 3)
        )
        return keras.ops.sigmoid(difference[:, None] / 50.0)


def test_test_time_augmentation_averages_the_image_and_its_mirror():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, MirrorSensitive()(inputs))
    pixels = np.zeros((1, 8, 8, 3), "float32")
    pixels[:, :, :4] = 200.0
    plain = Predictor(model, class_names=["cats", "dogs"], image_size=(8, 8)).predict_pixels(pixels)
    averaged = Predictor(
        model, class_names=["cats", "dogs"], image_size=(8, 8), test_time_augmentation=True
    ).predict_pixels(pixels)
    assert plain[0, 1] > 0.9
    np.testing.assert_allclose(averaged[0], [0.5, 0.5], atol=1e-6)


def test_zero_shot_probability_agrees_with_the_restricted_argmax_rule():
    logits = np.random.default_rng(4).normal(0, 2, (200, 1000))
    logits[:5, 285] = 20.0  # clearly a cat (Egyptian cat)
    logits[5:10, 207] = 20.0  # clearly a dog (golden retriever)
    probability = dog_probability_from_logits(logits)
    assert np.all(probability[:5] < 0.01) and np.all(probability[5:10] > 0.99)
    np.testing.assert_array_equal(probability > 0.5, zero_shot_cat_dog(logits, mapping="restricted_argmax") > 0.5)


def test_predict_without_a_run_folder_uses_the_zero_shot_model(tmp_path, monkeypatch, capsys):
    inputs = keras.Input((224, 224, 3))
    # A stand-in for the ImageNet network: every photo scores highest on class 207 (a dog).
    logits = keras.layers.Dense(
        1000,
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(np.where(np.arange(1000) == 207, 5.0, 0.0)),
    )(keras.layers.GlobalAveragePooling2D()(inputs))
    stand_in = ZeroShotPredictor(keras.Model(inputs, logits), class_names=["cats", "dogs"], image_size=(224, 224))
    monkeypatch.setattr(ZeroShotPredictor, "load", classmethod(lambda cls, **kwargs: stand_in))
    photos = make_data_dir(tmp_path / "photos", counts={"train": 1}, size=48) / "train"
    assert main(["predict", str(photos)]) == 0
    output = capsys.readouterr().out
    rows = output.splitlines()
    assert rows[0] == f"# {ZERO_SHOT_NOTE}"
    assert [row.split()[1] for row in rows[2:]] == ["dogs", "dogs"]


@pytest.fixture
def tiny_transfer_registered():
    """Register the tiny stand-in backbone as "tiny_transfer" for one test, through the registry's public API."""
    with registered("tiny_transfer", build_tiny_transfer, pretrained=True, last_conv_layer="backbone/top_activation"):
        yield "tiny_transfer"


@pytest.mark.usefixtures("tiny_transfer_registered")
def test_transfer_training_on_cached_features_with_fine_tuning(tmp_path):
    from catsdogs.training import train

    data_dir = make_data_dir(tmp_path / "data", counts={"train": 6, "validation": 4, "test": 4})
    config = tiny_config(
        "model.name=tiny_transfer",
        "augment.enabled=false",
        "train.fine_tune_blocks=2",
        "train.fine_tune_epochs=2",
        "train.feature_engine=keras",
        epochs=3,
    )
    run_dir = train(config, data_dir, runs_dir=tmp_path / "runs", verbose=0)
    info = json.loads(run_dir.run_info_path.read_text())
    assert info["transfer"]["cached_features"] and info["transfer"]["fine_tune_on_cached_activations"]
    assert len(run_dir.read_history()["loss"]) == info["transfer"]["head_epochs"] + 2
    # Pooled features and fine-tuning activations of train, flipped train and validation.
    assert len(list((data_dir / ".cache" / "features").glob("*.npz"))) == 6
    model = load_model(run_dir.model_path)
    assert is_transfer_model(model) and "test" in run_dir.read_metrics()
    # A second run on the same data reuses every cached feature file.
    before = {path: path.stat().st_mtime_ns for path in (data_dir / ".cache" / "features").glob("*.npz")}
    train(config, data_dir, runs_dir=tmp_path / "runs", run_name="again", verbose=0)
    assert {path: path.stat().st_mtime_ns for path in (data_dir / ".cache" / "features").glob("*.npz")} == before


@pytest.mark.usefixtures("tiny_transfer_registered")
def test_transfer_training_with_augmentation_runs_the_frozen_backbone_end_to_end(tmp_path):
    from catsdogs.training import train

    data_dir = make_data_dir(tmp_path / "data", counts={"train": 4, "validation": 2})
    config = tiny_config("model.name=tiny_transfer", "train.fine_tune_blocks=1", "train.fine_tune_epochs=1", epochs=1)
    run_dir = train(config, data_dir, runs_dir=tmp_path / "runs", verbose=0)
    transfer = json.loads(run_dir.run_info_path.read_text())["transfer"]
    assert not transfer["cached_features"] and not transfer["fine_tune_on_cached_activations"]
    assert not (data_dir / ".cache").exists()
    assert len(run_dir.read_history()["loss"]) == 2 and is_transfer_model(load_model(run_dir.model_path))


def test_demo_config_is_valid():
    from pathlib import Path

    from catsdogs.config import load_config

    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "demo.toml")
    assert config.model.name == "efficientnet_lite2" and not config.augment.enabled and config.train.feature_cache
