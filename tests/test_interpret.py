"""Grad-CAM and feature maps on Sequential, Functional and nested-backbone models."""

import keras
import numpy
import pytest
from keras import layers

from catsdogs import interpret, report_plots
from catsdogs.errors import CatsdogsError
from catsdogs.models import available_models, build_model, model_entry

SIZE = 32
RED_SQUARE = (slice(2, 11), slice(2, 11))
GREEN_SQUARE = (slice(20, 29), slice(20, 29))


def planted_image():
    """A black image with a red square top-left (the feature that decides) and a green one bottom-right."""
    image = numpy.zeros((SIZE, SIZE, 3), numpy.float32)
    image[RED_SQUARE + (0,)] = 255
    image[GREEN_SQUARE + (1,)] = 255
    return image


def detector(activation="relu"):
    """A convolution with fixed weights: channel 0 sees red, channel 1 sees green."""
    convolution = layers.Conv2D(2, 3, padding="same", activation=activation, name="detector")
    convolution.build((None, SIZE, SIZE, 3))
    kernel = numpy.zeros((3, 3, 3, 2), numpy.float32)
    kernel[:, :, 0, 0], kernel[:, :, 1, 0] = 1 / 9, -1 / 9
    kernel[:, :, 1, 1], kernel[:, :, 0, 1] = 1 / 9, -1 / 9
    convolution.set_weights([kernel, numpy.zeros(2, numpy.float32)])
    return convolution


def decision():
    """A sigmoid head that reads only the red channel: the decision depends on the red region alone."""
    dense = layers.Dense(1, activation="sigmoid", name="decision")
    dense.build((None, 2))
    dense.set_weights([numpy.array([[1.0], [0.0]], numpy.float32), numpy.array([-5.0], numpy.float32)])
    return dense


def sequential_model():
    return keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), detector(), layers.GlobalAveragePooling2D(name="pool"), decision()],
        name="sequential",
    )


def functional_model():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.ReLU(name="detector_relu")(detector(activation=None)(inputs))
    outputs = decision()(layers.GlobalAveragePooling2D(name="pool")(x))
    return keras.Model(inputs, outputs, name="functional")


def nested_model(depth=1):
    """A transfer-style model: the convolution sits inside a backbone model (inside `depth` levels of nesting)."""
    inputs = keras.Input((SIZE, SIZE, 3))
    backbone = keras.Model(
        inputs, layers.ReLU(name="detector_relu")(detector(activation=None)(inputs)), name="backbone"
    )
    for level in range(1, depth):
        wrapper_inputs = keras.Input((SIZE, SIZE, 3))
        backbone = keras.Model(wrapper_inputs, backbone(wrapper_inputs), name=f"wrapper{level}")
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Rescaling(1.0, name="preprocess")(inputs)
    x = backbone(x, training=False)
    outputs = decision()(layers.GlobalAveragePooling2D(name="pool")(x))
    return keras.Model(inputs, outputs, name="transfer")


MODEL_KINDS = {
    "sequential": sequential_model,
    "functional": functional_model,
    "nested": nested_model,
    "nested_twice": lambda: nested_model(depth=2),
}


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_grad_cam_highlights_the_planted_feature(kind):
    model = MODEL_KINDS[kind]()
    heatmaps, probabilities, layer = interpret.grad_cam(model, planted_image())
    heatmap = heatmaps[0]
    assert heatmaps.shape == (1, SIZE, SIZE)
    assert numpy.isfinite(heatmap).all() and heatmap.min() >= 0.0 and heatmap.max() == pytest.approx(1.0)
    assert probabilities[0, 0] > 0.99, "the red square should make the model say class 1"
    row, column = numpy.unravel_index(heatmap.argmax(), heatmap.shape)
    assert 2 <= row <= 10 and 2 <= column <= 10, f"peak at {(row, column)} is outside the red square"
    # The green square is just as bright but does not affect the decision, so it stays cold.
    assert heatmap[RED_SQUARE].mean() > 10 * heatmap[GREEN_SQUARE].mean()
    assert layer.endswith("detector") or layer.endswith("detector_relu")


def test_grad_cam_default_layer_reaches_into_nested_backbones():
    assert interpret.default_gradcam_layer(nested_model()) == "backbone/detector_relu"
    assert interpret.default_gradcam_layer(nested_model(depth=2)) == "wrapper1/backbone/detector_relu"


def test_grad_cam_works_after_saving_and_loading(tmp_path):
    path = tmp_path / "nested.keras"
    nested_model().save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    heatmaps, _, layer = interpret.grad_cam(loaded, planted_image())
    assert layer == "backbone/detector_relu"
    assert numpy.unravel_index(heatmaps[0].argmax(), heatmaps[0].shape)[0] <= 10


def test_grad_cam_for_a_class_without_evidence_is_all_zeros():
    heatmaps, _, _ = interpret.grad_cam(functional_model(), planted_image(), class_index=0)
    assert numpy.isfinite(heatmaps).all() and heatmaps.max() == 0.0


def test_unknown_layer_lists_the_valid_layers():
    with pytest.raises(CatsdogsError) as raised:
        interpret.grad_cam(nested_model(), planted_image(), layer="conv_99")
    message = str(raised.value)
    assert "backbone/detector" in message and "backbone/detector_relu" in message
    assert message.endswith("Received: layer=conv_99")


def test_a_layer_can_be_named_without_its_nested_path():
    _, _, layer = interpret.grad_cam(nested_model(), planted_image(), layer="detector")
    assert layer == "backbone/detector"


@pytest.mark.parametrize("name", available_models())
def test_default_layer_matches_the_registry(name):
    # Transfer models nest their backbone; random weights ("none") keep this fast and offline.
    model = build_model(name, input_shape=(96, 96, 3), num_classes=2, dropout_rate=0.5, weights="none")
    expected = model_entry(name).last_conv_layer
    assert interpret.default_gradcam_layer(model) == expected
    heatmaps, _, layer = interpret.grad_cam(model, numpy.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)))
    assert layer == expected
    assert heatmaps.shape == (2, 96, 96) and numpy.isfinite(heatmaps).all()


@pytest.mark.parametrize("kind", ["sequential", "nested"])
def test_feature_maps_are_returned_and_drawn(kind, tmp_path):
    model = MODEL_KINDS[kind]()
    activations = interpret.feature_maps(model, planted_image())
    ((path, values),) = activations.items()
    assert path.endswith("detector") and values.shape == (SIZE, SIZE, 2)
    # Channel 0 (the red detector) fires on the red square and not on the green one.
    assert values[5, 5, 0] > 100 and values[24, 24, 0] <= 0
    written = report_plots.save_figure(report_plots.feature_map_figure(values, layer=path), tmp_path / "maps.png")
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_feature_maps_with_an_unknown_layer_fail_clearly():
    with pytest.raises(CatsdogsError, match="Pass one of these to --layer: detector"):
        interpret.feature_maps(sequential_model(), planted_image(), layer_names=["nope"])


@pytest.mark.slow
def test_grad_cam_on_an_efficientnet_lite_transfer_model():
    from catsdogs.models.efficientnet_lite import build_efficientnet_lite0

    # The real nested case: a pretrained-style backbone called as one layer of the transfer model.
    backbone = build_efficientnet_lite0(input_shape=(64, 64, 3), include_top=False)
    inputs = keras.Input((64, 64, 3))
    outputs = layers.Dense(1, activation="sigmoid")(layers.Dropout(0.2)(backbone(inputs, training=False)))
    model = keras.Model(inputs, outputs)
    assert interpret.default_gradcam_layer(model) == "efficientnet_lite0/top_activation"
    heatmaps, _, _ = interpret.grad_cam(model, numpy.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)))
    assert heatmaps.shape == (2, 64, 64) and numpy.isfinite(heatmaps).all()
    assert len(interpret.feature_maps(model, numpy.zeros((64, 64, 3)))) == 6
