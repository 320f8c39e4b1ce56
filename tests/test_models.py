import keras
import numpy as np
import pytest

from catsdogs.errors import CatsdogsError
from catsdogs.models import available_models, build_model, classifier_head, model_entry, register, unregister
from catsdogs.models.saving import load_model, save_model

TINY_SHAPE = (32, 32, 3)


def test_seed_cnn_is_exactly_the_seed_network():
    model = build_model("seed_cnn", input_shape=(180, 180, 3), num_classes=2, dropout_rate=0.5)
    # The seed notes report 1,684,705 parameters for this network at 180x180x3.
    assert model.count_params() == 1_684_705
    names = [layer.name for layer in model.layers]
    for name in (
        "conv2d_block1",
        "maxpool_block1",
        "conv2d_block3",
        "flatten",
        "dropout_regularization",
        "dense_features",
        "dense_abstract",
        "binary_output",
    ):
        assert name in names
    assert model.get_layer("rescaling").scale == pytest.approx(1 / 255)
    assert model.get_layer("binary_output").activation.__name__ == "sigmoid"


def test_batch_norm_variant_has_one_batch_norm_per_convolution():
    model = build_model("seed_cnn_bn", input_shape=TINY_SHAPE, num_classes=2)
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(batch_norms) == 3
    assert model_entry("seed_cnn_bn").last_conv_layer in [layer.name for layer in model.layers]


def test_more_than_two_classes_gives_a_softmax_head():
    model = build_model("seed_cnn", input_shape=TINY_SHAPE, num_classes=4)
    output = model(np.zeros((2, *TINY_SHAPE), np.float32))
    assert output.shape == (2, 4)
    np.testing.assert_allclose(np.sum(output, axis=1), 1.0, rtol=1e-5)


def test_unknown_model_suggests_a_name():
    with pytest.raises(CatsdogsError, match="Did you mean 'seed_cnn'"):
        build_model("seed_cnm", input_shape=TINY_SHAPE, num_classes=2)


def test_missing_weights_file_is_refused(tmp_path):
    with pytest.raises(CatsdogsError, match="weights file does not exist"):
        build_model("seed_cnn", input_shape=TINY_SHAPE, num_classes=2, weights=str(tmp_path / "missing.weights.h5"))


def test_a_builder_is_registered_and_unregistered_through_the_public_api():
    received = {}

    def build_stand_in(*, input_shape, num_classes, dropout_rate, weights):
        """A stand-in: pooled pixels under the classifier head."""
        received.update(dropout_rate=dropout_rate, weights=weights)
        inputs = keras.Input(shape=input_shape)
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(inputs)
        return keras.Model(inputs, classifier_head(pooled, num_classes=num_classes), name="stand_in")

    assert register("stand_in_net", last_conv_layer="pool")(build_stand_in) is build_stand_in
    try:
        assert "stand_in_net" in available_models()
        entry = model_entry("stand_in_net")
        assert (entry.builder, entry.pretrained, entry.last_conv_layer) == (build_stand_in, False, "pool")
        assert entry.description == "A stand-in: pooled pixels under the classifier head."
        # A family without pretrained weights receives None even when the config asks for ImageNet.
        model = build_model("stand_in_net", input_shape=TINY_SHAPE, num_classes=3, dropout_rate=0.1, weights="imagenet")
        assert model.output.shape == (None, 3) and received == {"dropout_rate": 0.1, "weights": None}
    finally:
        unregister("stand_in_net")
    assert "stand_in_net" not in available_models()
    with pytest.raises(CatsdogsError, match="Unknown model"):
        model_entry("stand_in_net")
    with pytest.raises(CatsdogsError, match="Received: name=stand_in_net"):
        unregister("stand_in_net")


def test_a_second_builder_cannot_take_a_registered_name():
    available_models()  # Imports the families, so that seed_cnn is registered.
    with pytest.raises(CatsdogsError, match="Two model builders claim the same name"):
        register("seed_cnn")(lambda **kwargs: None)
    assert model_entry("seed_cnn").builder.__name__ != "<lambda>"


# Pretrained backbones (ResNet50, Xception, ...) take seconds each to build, save and load,
# so they run with `-m slow`; the from-scratch families keep the default suite fast.
REGISTRY_CASES = [
    pytest.param(name, marks=pytest.mark.slow) if model_entry(name).pretrained else name for name in available_models()
]


@pytest.mark.parametrize("name", REGISTRY_CASES)
def test_save_load_gives_identical_outputs(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model(name, input_shape=TINY_SHAPE, num_classes=2, weights=None)
    # No Lambda layers: every model must load with safe_mode=True.
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model._flatten_layers())
    pixels = np.random.default_rng(0).uniform(0, 255, (3, *TINY_SHAPE)).astype(np.float32)
    expected = model.predict_on_batch(pixels)
    save_model(model, tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded.predict_on_batch(pixels), expected)
    assert expected.shape == (3, 1) and np.all((expected >= 0) & (expected <= 1))
