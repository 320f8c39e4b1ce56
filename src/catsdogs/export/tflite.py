"""Write a Keras model as a TFLite (LiteRT) file with builtin ops only: float32, float16 or int8.

Keras 3 converts with `model.export(path, format="litert")`: it writes a
SavedModel of the model's `serve` endpoint and runs `tf.lite.TFLiteConverter`
on it, passing our converter settings through. Where that path fails for any
reason other than the ops (an older Keras without "litert", say), the same
conversion runs by hand: `model.export(format="tf_saved_model")`, then
`tf.lite.TFLiteConverter.from_saved_model`. (Converting a concrete function of
a Keras 3 model instead gives NaN outputs: its variables are not captured.)

Builtin ops only: Keras asks for `SELECT_TF_OPS` as well, but a `.tflite` file
that needs them runs only where the Flex delegate is linked in, and the LiteRT
interpreter (`ai-edge-litert`) has none: it fails with "Select TensorFlow op(s)
... are not supported by this interpreter". A model that needs such ops is
therefore refused at export, naming them, rather than written and found broken
on a device.

Quantization keeps float32 input and output, so the preprocessing and the
decision rule stay those of the float model:

- float16: weights stored as float16 (`Optimize.DEFAULT` with
  `supported_types=[tf.float16]`); the kernels dequantize them to float32.
- int8: weights and activations in int8 where a builtin int8 kernel exists,
  calibrated on a representative sample of training photos; float32 elsewhere.
"""

from __future__ import annotations

import os
import re
import tempfile
import typing
from collections.abc import Callable, Iterable, Sequence

import numpy

from catsdogs.errors import CatsdogsError

if typing.TYPE_CHECKING:
    import keras

KERAS_CONVERTER = "keras.Model.export(format='litert')"
FALLBACK_CONVERTER = "tf.lite.TFLiteConverter.from_saved_model"
# How the TFLite converter names an op that only TensorFlow's select ops (Flex) or a custom op could run.
_MISSING_OP = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    image_size: Sequence[int],
    quantize: str = "none",
    representative_batches: Callable[[], Iterable[numpy.ndarray]] | None = None,
) -> dict:
    """Convert `model` to a `.tflite` file at `path` with builtin ops only.

    Args:
        model: the Keras model, taking raw pixels (batch, height, width, 3) in 0..255.
        path: the `.tflite` file to write (its folder must exist).
        image_size: (height, width) of the model's input.
        quantize: "none" (float32), "float16" or "int8".
        representative_batches: for int8, returns a fresh iterable of float32 pixel batches
            (n, height, width, 3) that calibrate the activation ranges.

    Returns:
        How it was converted, for export.json: {"converter", "supported_ops", "input_output", "quantization"},
        plus "keras_export_error" when the Keras path failed and the fallback converted instead.

    Raises:
        CatsdogsError: if the model needs ops outside TFLite's builtin set (the error names them), int8 has
            no representative batches, or conversion fails on both paths.
    """
    import tensorflow as tf

    settings = _converter_settings(tf, quantize, representative_batches)
    # Keras exports a model only after it has been called once.
    model(numpy.zeros((1, *image_size, 3), "float32"))
    record = {
        "converter": KERAS_CONVERTER,
        "supported_ops": ["TFLITE_BUILTINS"],
        "input_output": "float32",
        "quantization": _describe(quantize),
    }
    try:
        model.export(str(path), format="litert", verbose=False, **settings)
        return record
    # Any failure but missing ops falls back to the plain converter, which may still succeed.
    except Exception as error:
        _refuse_missing_ops(error)
        keras_error = f"{type(error).__name__}: {error}"
    try:
        with tempfile.TemporaryDirectory(prefix="catsdogs-tflite-") as saved_model_dir:
            model.export(saved_model_dir, format="tf_saved_model", verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
            converter.target_spec.supported_ops = settings["target_spec"]["supported_ops"]
            if "supported_types" in settings["target_spec"]:
                converter.target_spec.supported_types = settings["target_spec"]["supported_types"]
            for name in ("optimizations", "representative_dataset"):
                if name in settings:
                    setattr(converter, name, settings[name])
            flatbuffer = converter.convert()
    except Exception as error:
        _refuse_missing_ops(error)
        raise CatsdogsError(
            "The model could not be converted to TFLite, neither by Keras nor by the TFLite converter. Export it "
            f"with --format onnx instead. Received: keras_error={keras_error}, converter_error={error}"
        ) from None
    with open(path, "wb") as handle:
        handle.write(flatbuffer)
    return {**record, "converter": FALLBACK_CONVERTER, "keras_export_error": keras_error}


def _converter_settings(tf, quantize, representative_batches):
    """The converter attributes for one precision, in the form `model.export(..., format="litert")` takes."""
    settings = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if quantize == "float16":
        settings["optimizations"] = [tf.lite.Optimize.DEFAULT]
        settings["target_spec"]["supported_types"] = [tf.float16]
    elif quantize == "int8":
        if representative_batches is None:
            raise CatsdogsError(
                "An int8 TFLite export needs representative photos to calibrate its activation ranges. Pass "
                "representative_batches. Received: representative_batches=None"
            )

        def representative_dataset():
            # One image per sample: the converter calibrates on whatever batch it is given.
            for batch in representative_batches():
                for image in numpy.asarray(batch, dtype=numpy.float32):
                    yield [image[numpy.newaxis]]

        settings["optimizations"] = [tf.lite.Optimize.DEFAULT]
        settings["representative_dataset"] = representative_dataset
    elif quantize != "none":
        raise CatsdogsError(
            f"Unknown TFLite quantization. Expected none, float16 or int8. Received: quantize={quantize}"
        )
    return settings


def _describe(quantize):
    if quantize == "float16":
        return {"method": "float16 weights (Optimize.DEFAULT, supported_types=[float16]); float32 compute"}
    if quantize == "int8":
        return {
            "method": (
                "post-training integer quantization (Optimize.DEFAULT with a representative dataset): int8 weights "
                "and activations where a builtin int8 kernel exists, float32 elsewhere"
            ),
            "weights": "int8, per channel for convolutions",
            "activations": "int8, ranges from the representative dataset",
        }
    return None


def _refuse_missing_ops(error):
    """Raise a CatsdogsError naming the ops if `error` says the model needs ops outside the builtin set."""
    operations = sorted(set(_MISSING_OP.findall(str(error))))
    if operations:
        raise CatsdogsError(
            f"The model uses TensorFlow ops that TFLite's builtin op set lacks ({', '.join(operations)}). catsdogs "
            "writes TFLite files with builtin ops only, because a file that needs TensorFlow's select ops (Flex) "
            "fails to load in the LiteRT interpreter (ai-edge-litert), which carries no Flex delegate. Export with "
            "--format onnx or --format saved_model, or build the model from layers without these ops. "
            f"Received: ops={','.join(operations)}"
        ) from None
