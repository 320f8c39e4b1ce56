"""Tests for the PyTorch-free reader of legacy PyTorch files (`catsdogs.models.torch_legacy`)."""

import pickle
import struct
import zipfile

import numpy
import pytest

from catsdogs.errors import CatsdogsError
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
