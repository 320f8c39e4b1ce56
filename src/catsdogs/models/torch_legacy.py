"""Read a legacy (non-zip) PyTorch state-dict file with numpy alone, without PyTorch.

`torch.save(..., _use_new_zipfile_serialization=False)` and every PyTorch
release before 1.6 write a run of pickles into one file:

1. the magic number `0x1950a86a20f9469cfc6c` (protocol 2 pickle);
2. the format version `1001`;
3. system information: `{"protocol_version": 1001, "little_endian": True,
   "type_sizes": {...}}`;
4. the object itself (here an `OrderedDict` of tensors). Each tensor is
   `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` and
   each storage arrives through a persistent id
   `("storage", torch.FloatStorage, key, location, numel, view_metadata)`;
5. the list of storage keys, in the order their data follows;
6. for each key, the element count as an 8-byte little-endian integer, then
   the raw little-endian element data.

Unpickling runs code named by the file, so the reader below allows only the
names that a plain state dict needs and refuses everything else before any of
it runs. Storages are never materialised as PyTorch objects: tensors are
rebuilt as numpy arrays from the raw data of step 6.
"""

import collections
import io
import pickle
from pathlib import Path

import numpy

from catsdogs.errors import CatsdogsError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# PyTorch's legacy storage classes and the little-endian numpy type of their
# elements. A state dict of an ordinary float model needs only FloatStorage
# (weights) and LongStorage (BatchNorm's `num_batches_tracked`); the others are
# equally harmless because the reader never imports or calls them.
STORAGE_DTYPES = {
    "FloatStorage": numpy.dtype("<f4"),
    "DoubleStorage": numpy.dtype("<f8"),
    "HalfStorage": numpy.dtype("<f2"),
    "LongStorage": numpy.dtype("<i8"),
    "IntStorage": numpy.dtype("<i4"),
    "ShortStorage": numpy.dtype("<i2"),
    "CharStorage": numpy.dtype("i1"),
    "ByteStorage": numpy.dtype("u1"),
    "BoolStorage": numpy.dtype("?"),
}

_ZIP_SIGNATURE = b"PK\x03\x04"


class TorchFileError(CatsdogsError):
    """A file that is not a legacy PyTorch state dict this reader can open safely."""


class _StorageType:
    """Stands in for a `torch.*Storage` class named in the pickle; carries only its dtype."""

    def __init__(self, name):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    """A storage announced by a persistent id; its data is read after the pickle ends."""

    def __init__(self, key, dtype, numel):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data = None


class _PendingTensor:
    """The arguments of one `_rebuild_tensor_v2` call, turned into an array once data is read."""

    def __init__(self, storage, storage_offset, size, stride):
        self.storage = storage
        self.storage_offset = storage_offset
        self.size = tuple(size)
        self.stride = tuple(stride)


class _StorageView:
    """A view into a root storage (files from PyTorch before 1.0 may contain these)."""

    def __init__(self, root, offset, numel):
        self.root = root
        self.offset = offset
        self.numel = numel
        self.dtype = root.dtype


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Record a tensor instead of building it; the storage has no data yet at this point."""
    del requires_grad, backward_hooks, metadata  # A numpy array carries none of these.
    return _PendingTensor(storage, storage_offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the few names a plain state dict needs."""

    def __init__(self, file, path):
        super().__init__(file)
        self._path = path
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        allowed = ["collections.OrderedDict", "torch._utils._rebuild_tensor_v2"]
        allowed += [f"torch.{storage_name}" for storage_name in STORAGE_DTYPES]
        raise TorchFileError(
            f"The PyTorch file names the Python object `{module}.{name}`, which this reader "
            "refuses to load: unpickling it could run arbitrary code. Only a plain state dict "
            f"of tensors is supported, whose pickle names nothing but {', '.join(allowed)}. "
            "Re-save the weights with `torch.save(model.state_dict(), path, "
            "_use_new_zipfile_serialization=False)` from a trusted source. "
            f"Received: path={self._path}"
        )

    def persistent_load(self, persistent_id):
        if not (isinstance(persistent_id, tuple) and len(persistent_id) == 6 and persistent_id[0] == "storage"):
            raise TorchFileError(
                "The PyTorch file contains a persistent id that is not a legacy storage "
                "reference ('storage', <StorageType>, key, location, numel, view_metadata). "
                "Only legacy-format state dicts are supported; re-save the weights with "
                "`_use_new_zipfile_serialization=False`. "
                f"Received: path={self._path}, persistent_id={persistent_id!r}"
            )
        _, storage_type, key, _location, numel, view_metadata = persistent_id
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError(
                "A storage reference in the PyTorch file does not name a torch storage class. "
                "The file is damaged or was not written by torch.save. "
                f"Received: path={self._path}, storage_type={storage_type!r}"
            )
        storage = self.storages.get(key)
        if storage is None:
            storage = _Storage(key, storage_type.dtype, int(numel))
            self.storages[key] = storage
        if view_metadata is None:
            return storage
        _view_key, offset, view_numel = view_metadata
        return _StorageView(storage, int(offset), int(view_numel))


def _check_header(stream, path):
    """Read and verify the magic number, format version and system information."""
    try:
        magic_number = pickle.load(stream)
    except Exception as error:
        raise TorchFileError(
            "The file does not start with a pickle, so it is not a legacy PyTorch file. "
            "Expected the output of `torch.save(state_dict, path, _use_new_zipfile_serialization=False)`. "
            f"Check that the path points at the .pth weights file. Received: path={path}"
        ) from error
    if magic_number != LEGACY_MAGIC_NUMBER:
        raise TorchFileError(
            "The file starts with a pickle but not with PyTorch's legacy magic number, so it is "
            "not a legacy PyTorch file (it may be a tar-format file from PyTorch before 0.4, or "
            "an ordinary pickle). Expected the output of `torch.save(state_dict, path, "
            "_use_new_zipfile_serialization=False)`. "
            f"Received: path={path}, magic_number={magic_number!r}"
        )
    protocol_version = pickle.load(stream)
    if protocol_version != LEGACY_PROTOCOL_VERSION:
        raise TorchFileError(
            f"The legacy PyTorch file has format version {protocol_version!r}; this reader "
            f"understands only version {LEGACY_PROTOCOL_VERSION}. Re-save the weights with a "
            "current PyTorch and `_use_new_zipfile_serialization=False`. "
            f"Received: path={path}"
        )
    system_info = pickle.load(stream)
    if not isinstance(system_info, dict) or not system_info.get("little_endian", False):
        raise TorchFileError(
            "The legacy PyTorch file was written on a big-endian machine or lacks its system "
            "information; only little-endian files are supported. Re-save the weights on a "
            f"little-endian machine (x86, ARM). Received: path={path}, system_info={system_info!r}"
        )


def _read_storage_data(stream, storages, keys, path):
    """Read each storage's element count and raw data, in the order the key list gives."""
    for key in keys:
        storage = storages.get(key)
        if storage is None:
            raise TorchFileError(
                f"The legacy PyTorch file lists storage {key!r} that no tensor refers to. "
                "The file is damaged; download or re-save it. "
                f"Received: path={path}"
            )
        count_bytes = stream.read(8)
        if len(count_bytes) != 8:
            raise TorchFileError(
                f"The legacy PyTorch file ends before the data of storage {key!r}. "
                "The file is truncated; download or re-save it. "
                f"Received: path={path}"
            )
        numel = int.from_bytes(count_bytes, "little", signed=True)
        if numel != storage.numel:
            raise TorchFileError(
                f"Storage {key!r} holds {numel} elements in the data section but the pickle "
                f"announced {storage.numel}. The file is damaged; download or re-save it. "
                f"Received: path={path}"
            )
        byte_count = numel * storage.dtype.itemsize
        raw = stream.read(byte_count)
        if len(raw) != byte_count:
            raise TorchFileError(
                f"The legacy PyTorch file ends inside the data of storage {key!r} "
                f"({len(raw)} of {byte_count} bytes). The file is truncated; download or "
                f"re-save it. Received: path={path}"
            )
        storage.data = numpy.frombuffer(raw, dtype=storage.dtype)


def _materialise(name, pending, path):
    """Turn one recorded tensor into an owned, C-contiguous numpy array."""
    storage = pending.storage
    base_offset = 0
    if isinstance(storage, _StorageView):
        base_offset = storage.offset
        storage = storage.root
    if storage.data is None:
        raise TorchFileError(
            f"Tensor {name!r} refers to storage {storage.key!r}, whose data is missing from the "
            f"file. The file is damaged; download or re-save it. Received: path={path}"
        )
    offset = base_offset + int(pending.storage_offset)
    size = tuple(int(dimension) for dimension in pending.size)
    stride = tuple(int(step) for step in pending.stride)
    if len(size) != len(stride):
        raise TorchFileError(
            f"Tensor {name!r} has size {size} but stride {stride}; they must have the same "
            f"length. The file is damaged. Received: path={path}"
        )
    if any(dimension == 0 for dimension in size):
        return numpy.zeros(size, dtype=storage.dtype.newbyteorder("="))
    last_index = offset + sum((dimension - 1) * step for dimension, step in zip(size, stride))
    if offset < 0 or last_index >= storage.numel or any(step < 0 for step in stride):
        raise TorchFileError(
            f"Tensor {name!r} (offset {offset}, size {size}, stride {stride}) reaches outside "
            f"its storage of {storage.numel} elements. The file is damaged. "
            f"Received: path={path}"
        )
    itemsize = storage.dtype.itemsize
    view = numpy.lib.stride_tricks.as_strided(
        storage.data[offset:],
        shape=size,
        strides=tuple(step * itemsize for step in stride),
        writeable=False,
    )
    # Copy so that each array owns contiguous memory in the machine's byte
    # order and the file's bytes can be freed. (`numpy.ascontiguousarray` would
    # turn a 0-d tensor such as `num_batches_tracked` into shape (1,).)
    return numpy.array(view, dtype=storage.dtype.newbyteorder("="), order="C", copy=True)


def read_legacy_state_dict(path):
    """Read a legacy-format PyTorch state dict into numpy arrays, without PyTorch.

    Args:
        path: a file written by `torch.save(state_dict, path,
            _use_new_zipfile_serialization=False)` (or by PyTorch before 1.6).

    Returns:
        A dict from parameter name to numpy array, in the file's order.

    Raises:
        TorchFileError: the file is a zip-format PyTorch file, is not a PyTorch
            file, names a Python object other than a tensor or storage, or is
            damaged or truncated.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    contents = path.read_bytes()
    if contents.startswith(_ZIP_SIGNATURE):
        raise TorchFileError(
            "The file is a zip-format PyTorch file (the default of torch.save since PyTorch "
            "1.6); this reader understands only the legacy format. Convert it once where "
            "PyTorch is installed: `torch.save(torch.load(path), new_path, "
            "_use_new_zipfile_serialization=False)`. "
            f"Received: path={path}"
        )
    stream = io.BytesIO(contents)
    _check_header(stream, path)
    unpickler = _RestrictedUnpickler(stream, path)
    try:
        state_dict = unpickler.load()
    except TorchFileError:
        raise
    except Exception as error:
        raise TorchFileError(
            f"The state-dict pickle in the PyTorch file could not be read ({error}). "
            "The file is damaged or truncated; download or re-save it. "
            f"Received: path={path}"
        ) from error
    if not isinstance(state_dict, dict):
        raise TorchFileError(
            f"The PyTorch file holds a {type(state_dict).__name__}, not a state dict. "
            "Save `model.state_dict()` rather than the model object. "
            f"Received: path={path}"
        )
    keys = pickle.load(stream)
    _read_storage_data(stream, unpickler.storages, keys, path)

    arrays = {}
    for name, value in state_dict.items():
        if not isinstance(value, _PendingTensor):
            raise TorchFileError(
                f"Entry {name!r} of the state dict is a {type(value).__name__}, not a tensor. "
                "Only state dicts of tensors are supported. "
                f"Received: path={path}"
            )
        arrays[name] = _materialise(name, value, path)
    return arrays
