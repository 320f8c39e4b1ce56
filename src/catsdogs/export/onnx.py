"""Write a Keras model as an ONNX file with catsdogs metadata, and open one in ONNX Runtime.

Keras 3 exports through tf2onnx with `model.export(path, format="onnx")`, as
`training.features` already does for frozen backbones. The file then carries
what a client needs to trust and use it (class names, image size, catsdogs
version, the source model's SHA-256) in its `metadata_props`, so the facts
travel with the file even when it is copied out of its export folder.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Mapping, Sequence

import numpy

from catsdogs.errors import CatsdogsError

if typing.TYPE_CHECKING:
    import keras
    import onnxruntime

# The keys of the ONNX file's metadata_props; values are strings (JSON for lists).
METADATA_CLASS_NAMES = "catsdogs.class_names"
METADATA_IMAGE_SIZE = "catsdogs.image_size"
METADATA_VERSION = "catsdogs.version"
METADATA_SOURCE_SHA256 = "catsdogs.source_model_sha256"


def export_onnx(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    image_size: Sequence[int],
    class_names: Sequence[str],
    source_model_sha256: str,
) -> None:
    """Export `model` to an ONNX file at `path` and write the catsdogs metadata into it.

    Args:
        model: the Keras model, taking raw pixels (batch, height, width, 3) in 0..255.
        path: the `.onnx` file to write (its folder must exist).
        image_size: (height, width) of the model's input.
        class_names: class names in label order.
        source_model_sha256: the SHA-256 of the `.keras` file the model was loaded from.

    Raises:
        CatsdogsError: if the `onnx` package or the ONNX converter (tf2onnx) is missing.
    """
    try:
        # Imported here only to report a missing package before the slow conversion; write_metadata uses it.
        import onnx  # noqa: F401
    except ImportError:
        raise CatsdogsError(
            "The ONNX export needs the `onnx` and `tf2onnx` packages. Install them with "
            "`pip install onnx tf2onnx`. Received: format=onnx"
        ) from None
    # Keras exports a model only after it has been called once.
    model(numpy.zeros((1, *image_size, 3), "float32"))
    try:
        model.export(str(path), format="onnx", verbose=False)
    except ImportError as error:
        raise CatsdogsError(
            f"Keras needs tf2onnx to export ONNX. Install it with `pip install tf2onnx`. Received: error={error}"
        ) from None
    write_metadata(path, image_size=image_size, class_names=class_names, source_model_sha256=source_model_sha256)


def write_metadata(
    path: str | os.PathLike,
    *,
    image_size: Sequence[int],
    class_names: Sequence[str],
    source_model_sha256: str,
) -> None:
    """Write the catsdogs metadata into an ONNX file's `metadata_props`, replacing any earlier catsdogs entries.

    Args:
        path: the `.onnx` file, rewritten in place.
        image_size: (height, width) of the model's input.
        class_names: class names in label order.
        source_model_sha256: the SHA-256 of the `.keras` file the model was loaded from.
    """
    import onnx

    proto = onnx.load(str(path))
    metadata = {
        METADATA_CLASS_NAMES: json.dumps(list(class_names), ensure_ascii=False),
        METADATA_IMAGE_SIZE: json.dumps([int(side) for side in image_size]),
        METADATA_VERSION: _catsdogs_version(),
        METADATA_SOURCE_SHA256: source_model_sha256,
    }
    # A quantizer may carry the float model's entries over; one value per key, the new one.
    kept = [(entry.key, entry.value) for entry in proto.metadata_props if entry.key not in metadata]
    del proto.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Return the `metadata_props` of an ONNX file as {key: value}."""
    import onnx

    # Only the header matters here; the weights need not be read.
    proto = onnx.load(str(path), load_external_data=False)
    return {entry.key: entry.value for entry in proto.metadata_props}


def run_session(session: onnxruntime.InferenceSession, pixels: numpy.ndarray) -> numpy.ndarray:
    """Run a one-input, one-output session on float32 pixels (n, height, width, 3) and return its output."""
    feed: Mapping[str, numpy.ndarray] = {session.get_inputs()[0].name: numpy.ascontiguousarray(pixels, "float32")}
    return session.run(None, feed)[0]


def _catsdogs_version() -> str:
    from catsdogs import __version__

    return __version__
