"""export.quantize: int8 and float16 copies of a tiny Keras conv model's ONNX export load in ONNX Runtime, keep
float32 inputs and outputs, agree with float32, are smaller, say how they were made, and are written atomically."""

import json

import keras
import numpy
import onnx
import pytest
from keras import layers

from catsdogs.errors import CatsdogsError
from catsdogs.export.onnx import METADATA_CLASS_NAMES, export_onnx, read_metadata, run_session
from catsdogs.export.quantize import (
    CPU_FLAGS,
    convert_onnx_float16,
    cpu_description,
    operator_summary,
    quantize_onnx_int8,
)
from catsdogs.fileio import sha256_file
from catsdogs.runtime.onnx_predictor import open_session

IMAGE_SIZE = (32, 32)
# Bounds on |probability(quantized) - probability(float32)| over the evaluation images. The tiny model's
# probabilities spread over most of 0..1 (checked below), so a broken quantization cannot pass them.
INT8_MAX_PROBABILITY_DIFFERENCE = 0.05
INT8_MEAN_PROBABILITY_DIFFERENCE = 0.015
FLOAT16_MAX_PROBABILITY_DIFFERENCE = 5e-3


def tiny_conv_model(seed=0):
    """A small model shaped like EfficientNet-Lite: conv, depthwise conv, 1x1 convs, ReLU6, BatchNorm, a residual."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(*IMAGE_SIZE, 3), name="image")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(max_value=6.0, name="stem_activation")(x)
    shortcut = x
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="block_depthwise")(x)
    x = layers.BatchNormalization(name="block_bn")(x)
    x = layers.ReLU(max_value=6.0, name="block_activation")(x)
    x = layers.Conv2D(32, 1, use_bias=False, name="block_project")(x)
    x = layers.Add(name="block_add")([x, shortcut])
    x = layers.Conv2D(64, 3, padding="same", name="top_conv")(x)
    x = layers.ReLU(max_value=6.0, name="top_activation")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    # Centre and scale the sigmoid's input on sample images, so that probabilities cover most of 0..1
    # and an int8 model that computes the wrong features cannot stay within the bounds.
    features = keras.Model(inputs, model.get_layer("avg_pool").output).predict(synthetic_images(64, seed=3), verbose=0)
    kernel, _ = model.get_layer("predictions").get_weights()
    logits = features @ kernel
    scale = 2.5 / float(logits.std())
    model.get_layer("predictions").set_weights([kernel * scale, -numpy.full((1,), float(logits.mean()) * scale)])
    return model


def synthetic_images(count, seed):
    """Smooth colour patterns with noise: each image differs, as photos do, in 0..255 float32."""
    rng = numpy.random.default_rng(seed)
    y, x = numpy.mgrid[0 : IMAGE_SIZE[0], 0 : IMAGE_SIZE[1]]
    images = []
    for _ in range(count):
        frequency, phase = rng.uniform(0.05, 0.4, 3), rng.uniform(0, 6.3, 3)
        channels = [127.5 + 127.5 * numpy.sin(frequency[c] * (x + 2 * y) + phase[c]) for c in range(3)]
        image = numpy.stack(channels, axis=-1) + rng.normal(0, 12, (*IMAGE_SIZE, 3))
        images.append(numpy.clip(image, 0, 255))
    return numpy.round(numpy.stack(images)).astype("float32")


def batches_of(images, size=16):
    for start in range(0, len(images), size):
        yield images[start : start + size]


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("quantize") / "model.onnx"
    export_onnx(
        tiny_conv_model(), path, image_size=IMAGE_SIZE, class_names=["cats", "dogs"], source_model_sha256="0" * 64
    )
    return path


@pytest.fixture(scope="module")
def evaluation_images():
    return synthetic_images(48, seed=1)


@pytest.fixture(scope="module")
def int8(float_model, tmp_path_factory):
    out_path = tmp_path_factory.mktemp("int8") / "model.onnx"
    float_sha256 = sha256_file(float_model)
    settings = quantize_onnx_int8(float_model, out_path, batches_of(synthetic_images(64, seed=0)))
    assert sha256_file(float_model) == float_sha256, "the float model must be left untouched"
    return out_path, settings


@pytest.fixture(scope="module")
def float16(float_model, tmp_path_factory):
    out_path = tmp_path_factory.mktemp("float16") / "model.onnx"
    float_sha256 = sha256_file(float_model)
    settings = convert_onnx_float16(float_model, out_path)
    assert sha256_file(float_model) == float_sha256, "the float model must be left untouched"
    return out_path, settings


def _float32_io(path):
    session = open_session(path)
    return [(item.name, item.type) for item in session.get_inputs() + session.get_outputs()]


def _differences(float_model, path, images):
    expected = run_session(open_session(float_model), images)
    actual = run_session(open_session(path), images)
    assert actual.dtype == numpy.float32 and actual.shape == expected.shape
    return expected, numpy.abs(actual.astype("float64") - expected)


def test_int8_loads_with_float32_io_and_agrees_with_float32(float_model, int8, evaluation_images):
    path, _ = int8
    assert _float32_io(path) == _float32_io(float_model)
    assert {item_type for _, item_type in _float32_io(path)} == {"tensor(float)"}
    expected, difference = _differences(float_model, path, evaluation_images)
    # The bounds mean something only if the float model's answers vary from image to image.
    assert expected.max() - expected.min() > 0.5
    assert difference.max() <= INT8_MAX_PROBABILITY_DIFFERENCE
    assert difference.mean() <= INT8_MEAN_PROBABILITY_DIFFERENCE


def test_int8_is_smaller_and_quantizes_the_convolutions(float_model, int8):
    path, settings = int8
    assert path.stat().st_size < 0.5 * float_model.stat().st_size
    model = onnx.load(str(path))
    weights = [
        onnx.numpy_helper.to_array(tensor)
        for tensor in model.graph.initializer
        if tensor.data_type == onnx.TensorProto.INT8 and len(tensor.dims) == 4
    ]
    assert len(weights) == 4, "the four convolutions' weights must be stored as int8"
    # Convolutions that ONNX Runtime computes with 16-bit pair sums get 7-bit weights (reduce_range), -64..64;
    # the depthwise one, computed in 32 bits, keeps all 8 bits and uses them.
    depthwise = [int(numpy.abs(weight).max()) for weight in weights if weight.shape[1] == 1]
    other = [int(numpy.abs(weight).max()) for weight in weights if weight.shape[1] != 1]
    assert len(depthwise) == 1 and 64 < depthwise[0] <= 127
    assert len(other) == 3 and max(other) <= 64
    assert settings["depthwise_weights_at_8_bits"] == 1
    assert settings["operators_quantized"]["Conv"] == 4
    assert settings["nodes_kept_in_float"] and settings["operators_in_float"]["Sigmoid"] == 1
    assert settings["operators_quantized"] == operator_summary(model)["operators_quantized"]


def test_int8_computes_the_same_with_or_without_vnni(int8, evaluation_images):
    """The int8 file must not saturate on x86 CPUs without VNNI, where ONNX Runtime sums pairs of uint8 x int8
    products in 16 bits. `session.x64quantprecision` makes it use its exact uint8 x uint8 kernels instead, which
    compute what a VNNI CPU computes. With full 8-bit weights this tiny model's probabilities moved by 0.46 between
    the two on a CPU without VNNI; with the chosen settings they must not move at all. (On a CPU with VNNI, or not
    on x86, both paths are exact and the test passes trivially.)"""
    import onnxruntime

    path, _ = int8
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.x64quantprecision", "1")
    exact = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    default = run_session(open_session(path), evaluation_images)
    assert numpy.abs(default - run_session(exact, evaluation_images)).max() <= 1e-6


def test_int8_settings_say_how_it_was_made(int8):
    _, settings = int8
    assert {
        "format",
        "activation_type",
        "weight_type",
        "per_channel",
        "reduce_range",
        "calibration_method",
        "calibration_images",
        "operators_quantized",
        "operators_in_float",
        "onnxruntime",
        "built_on",
        "why",
    } <= set(settings)
    assert (settings["format"], settings["activation_type"], settings["weight_type"]) == ("QDQ", "uint8", "int8")
    assert settings["per_channel"] is True and settings["reduce_range"] is True
    assert settings["calibration_method"] == "MinMax"
    assert (settings["calibration_images"], settings["calibration_batches"]) == (64, 4)
    assert json.loads(json.dumps(settings)) == settings


def test_quantized_files_keep_the_catsdogs_metadata(float_model, int8, float16):
    for path, _ in (int8, float16):
        # ONNX Runtime adds its own keys (onnx.quant.pre_process, ...); every catsdogs key must be there as it was.
        metadata = read_metadata(path)
        assert {key: metadata.get(key) for key in read_metadata(float_model)} == read_metadata(float_model)
        assert json.loads(read_metadata(path)[METADATA_CLASS_NAMES]) == ["cats", "dogs"]


def test_float16_loads_with_float32_io_agrees_and_is_smaller(float_model, float16, evaluation_images):
    path, settings = float16
    assert _float32_io(path) == _float32_io(float_model)
    _, difference = _differences(float_model, path, evaluation_images)
    assert difference.max() <= FLOAT16_MAX_PROBABILITY_DIFFERENCE
    assert path.stat().st_size < 0.6 * float_model.stat().st_size
    model = onnx.load(str(path))
    weight_types = {tensor.data_type for tensor in model.graph.initializer if len(tensor.dims) == 4}
    assert weight_types == {onnx.TensorProto.FLOAT16}
    assert settings["format"] == "float16" and settings["operators"]["Conv"] == 4
    assert json.loads(json.dumps(settings)) == settings


def test_empty_calibration_is_refused_and_writes_nothing(float_model, tmp_path):
    out_path = tmp_path / "model.onnx"
    with pytest.raises(CatsdogsError, match=r"No calibration images.*Received: calibration_batches=empty"):
        quantize_onnx_int8(float_model, out_path, [])
    assert list(tmp_path.iterdir()) == []


def test_a_batch_of_the_wrong_shape_is_refused(float_model, tmp_path):
    out_path = tmp_path / "model.onnx"
    with pytest.raises(CatsdogsError, match=r"\(n, 32, 32, 3\).*Received: shape=\(2, 16, 16, 3\)"):
        quantize_onnx_int8(float_model, out_path, [numpy.zeros((2, 16, 16, 3), "float32")])
    assert list(tmp_path.iterdir()) == []


def test_failed_calibration_leaves_the_previous_file_and_no_temporary_files(float_model, tmp_path):
    out_path = tmp_path / "model.onnx"
    out_path.write_bytes(b"the previous export")

    def failing_batches():
        yield synthetic_images(4, seed=2)
        raise OSError("a photo could not be read")

    with pytest.raises(OSError, match="could not be read"):
        quantize_onnx_int8(float_model, out_path, failing_batches())
    assert out_path.read_bytes() == b"the previous export"
    assert list(tmp_path.iterdir()) == [out_path]


def test_calibration_without_a_previous_file_leaves_nothing(float_model, tmp_path):
    out_path = tmp_path / "model.onnx"

    def failing_batches():
        yield synthetic_images(4, seed=2)
        raise OSError("a photo could not be read")

    with pytest.raises(OSError):
        quantize_onnx_int8(float_model, out_path, failing_batches())
    assert list(tmp_path.iterdir()) == []


def test_a_missing_float_model_is_refused(tmp_path):
    with pytest.raises(CatsdogsError, match="Received: float_model_path="):
        quantize_onnx_int8(tmp_path / "absent.onnx", tmp_path / "int8.onnx", [numpy.zeros((1, 32, 32, 3))])
    with pytest.raises(CatsdogsError, match="Received: float_model_path="):
        convert_onnx_float16(tmp_path / "absent.onnx", tmp_path / "float16.onnx")
    assert list(tmp_path.iterdir()) == []


def test_cpu_description_names_the_flags_that_matter():
    description = cpu_description()
    assert description["model"] and description["machine"]
    if description["flags"] is not None:
        assert set(description["flags"]) == set(CPU_FLAGS)
        assert all(isinstance(value, bool) for value in description["flags"].values())
