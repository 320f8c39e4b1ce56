"""Write a Keras model as a TensorFlow SavedModel, and load one back to run it.

Keras 3 writes the SavedModel itself with `model.export(path, format="tf_saved_model")`:
a folder (saved_model.pb, variables/, assets/, fingerprint.pb) with one endpoint,
`serve`, also published as the `serving_default` signature for TensorFlow
Serving. The export is checked by loading that folder with `tf.saved_model.load`
and calling its `serve` function, as a TensorFlow user would, never the Keras
model that wrote it. A SavedModel stays float32: TensorFlow's post-training
quantizers write TFLite, not SavedModels.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Callable, Sequence

import numpy

if typing.TYPE_CHECKING:
    import keras

# The endpoint Keras writes, and the signature name TensorFlow Serving looks for.
ENDPOINT = "serve"
SIGNATURE = "serving_default"


def export_saved_model(model: keras.Model, path: str | os.PathLike, *, image_size: Sequence[int]) -> dict:
    """Export `model` as a SavedModel folder at `path` (which must not exist yet).

    Args:
        model: the Keras model, taking raw pixels (batch, height, width, 3) in 0..255.
        path: the folder to write.
        image_size: (height, width) of the model's input.

    Returns:
        How it was written, for export.json: {"writer", "endpoint", "signature"}.
    """
    # Keras exports a model only after it has been called once.
    model(numpy.zeros((1, *image_size, 3), "float32"))
    model.export(str(path), format="tf_saved_model", verbose=False)
    return {
        "writer": "keras.Model.export(format='tf_saved_model')",
        "endpoint": ENDPOINT,
        "signature": SIGNATURE,
    }


def load_saved_model(path: str | os.PathLike) -> tuple[Callable[[numpy.ndarray], numpy.ndarray], str, str]:
    """Load a SavedModel folder with TensorFlow and return (runner, input name, output name).

    Args:
        path: the SavedModel folder.

    Returns:
        The runner (float32 pixels (n, height, width, 3) in, the model's output as numpy out), and the
        names of the `serving_default` signature's input and output.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    serve = getattr(loaded, ENDPOINT)
    signature = loaded.signatures[SIGNATURE]
    _, keyword_inputs = signature.structured_input_signature
    input_name = next(iter(keyword_inputs))
    output_name = next(iter(signature.structured_outputs))

    def run(pixels: numpy.ndarray) -> numpy.ndarray:
        return serve(tf.constant(numpy.ascontiguousarray(pixels, dtype=numpy.float32))).numpy()

    # The loaded object owns the variables `serve` reads; keep it alive as long as the runner.
    run.loaded = loaded
    return run, input_name, output_name
