"""Prediction from a TFLite export without TensorFlow: `TflitePredictor.from_export_dir(path).predict(images)`.

An export folder made by `catsdogs export RUN --format tflite` (float32, or
quantized with `--quantize int8|float16`) carries model.tflite with its
SHA-256, labels.json and preprocessing.json. The model runs in the LiteRT
interpreter of the `ai-edge-litert` package (`tf.lite.Interpreter` is
deprecated), which needs no TensorFlow. Everything else (checking the folder,
the image path, batching, error rows and the decision rule) is shared with
`OnnxPredictor` and the Keras `inference.Predictor`, so all three give their
answers in the same shape.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Sequence
from pathlib import Path

import numpy

from catsdogs.choices import DEFAULT_BATCH_SIZE, DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, DEFAULT_THRESHOLD
from catsdogs.errors import CatsdogsError
from catsdogs.runtime.answers import NEITHER_OFF_IN_EXPORTS
from catsdogs.runtime.export_folder import abstain_setting, read_export
from catsdogs.runtime.predictions import ImagePredictor
from catsdogs.runtime.preprocess import load_pixels

if typing.TYPE_CHECKING:
    from ai_edge_litert.interpreter import Interpreter

    from catsdogs.runtime.predictions import ImageInput

TFLITE_FORMAT = "tflite"


class TflitePredictor(ImagePredictor):
    """A TFLite model in the LiteRT interpreter with its class names and image settings, ready to label images.

    Build it with `TflitePredictor.from_export_dir(path)`. It behaves as `OnnxPredictor` and
    `inference.Predictor` do: the same image path, decision rule, error rows and results.

    Args:
        interpreter: the LiteRT interpreter of a model taking float32 pixels (batch, height, width, 3)
            in 0..255 and giving float32 probabilities, with one input and one output.
        class_names: class names in label order.
        image_size: (height, width) the model takes.
        threshold: for two classes, the probability of the second class at or above
            which it is predicted. Ignored for more classes (the most probable wins).
        max_pixels: largest accepted image, as in `prepare`.
        min_side: smallest accepted image side, as in `prepare`.
        batch_size: images per model call.
        test_time_augmentation: average the probabilities of each image and its
            mirror image (horizontal flip); twice the model calls.
        verified: whether `catsdogs export` found the model within its bounds against Keras.
        precision: the artifact's precision as export.json records it: float32, float16 or int8.
    """

    def __init__(
        self,
        interpreter: Interpreter,
        *,
        class_names: Sequence[str],
        image_size: Sequence[int],
        threshold: float = DEFAULT_THRESHOLD,
        max_pixels: int | None = None,
        min_side: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        test_time_augmentation: bool = False,
        verified: bool = True,
        precision: str = "float32",
    ) -> None:
        super().__init__(
            class_names=class_names,
            image_size=image_size,
            threshold=threshold,
            max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
            min_side=DEFAULT_MIN_SIDE if min_side is None else min_side,
            batch_size=batch_size,
            test_time_augmentation=test_time_augmentation,
        )
        self.interpreter = interpreter
        self.verified = bool(verified)
        self.precision = precision

    @classmethod
    def from_export_dir(
        cls,
        path: str | os.PathLike,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        batch_size: int = DEFAULT_BATCH_SIZE,
        test_time_augmentation: bool | None = None,
        abstain: bool = True,
    ) -> TflitePredictor:
        """Check an export folder, verify its model's SHA-256 and open the model in the LiteRT interpreter.

        Args:
            path: the export folder, e.g. RUN/export/tflite/ or RUN/export/tflite-int8/.
            threshold: for two classes, the probability of the second class at or above which it is predicted.
            batch_size: images per model call.
            test_time_augmentation: also average over the mirror image of each photo; None takes the
                setting the export recorded from its run's `model.test_time_augmentation`.
            abstain: answer "unsure" where the export's abstain.json says so; False gives the plain label.

        Returns:
            A `TflitePredictor`.

        Raises:
            CatsdogsError: if the folder does not exist or lacks a file (the error names it), holds another
                format than TFLite, has a model that fails its SHA-256 check, has unreadable or inconsistent
                labels.json or preprocessing.json, has a model whose input or output is not float32 or does
                not fit its classes, or when ai-edge-litert is not installed.
        """
        contents = read_export(path, format_name=TFLITE_FORMAT)
        interpreter = open_interpreter(contents.export_dir.artifact_path)
        _check_signature(interpreter, contents.class_names, contents.export_dir.artifact_path)
        predictor = cls(
            interpreter,
            class_names=contents.class_names,
            image_size=contents.image_size,
            threshold=threshold,
            # Exports that do not record the image limits take the defaults of `prepare`.
            max_pixels=contents.max_pixels,
            min_side=contents.min_side,
            batch_size=batch_size,
            test_time_augmentation=(
                contents.test_time_augmentation if test_time_augmentation is None else test_time_augmentation
            ),
            verified=contents.verified,
            precision=contents.precision,
        )
        predictor.use_abstain_rule(*abstain_setting(contents, abstain))
        predictor.use_neither_rule(None, NEITHER_OFF_IN_EXPORTS)
        return predictor

    def load_image(self, image: ImageInput) -> numpy.ndarray:
        """Normalise and resize one image exactly as training does, with numpy and Pillow.

        Args:
            image: a path, the file's bytes, a PIL image, or pixels (height, width[, channels]) in 0..255.

        Returns:
            A uint8 array (height, width, 3) at the model's image size.

        Raises:
            CatsdogsError: (an `images.ImageError` for bad image data) when the image cannot be used.
            OSError: when a path cannot be read.
        """
        return load_pixels(image, image_size=self.image_size, max_pixels=self.max_pixels, min_side=self.min_side)

    def run_model(self, pixels: numpy.ndarray) -> numpy.ndarray:
        """Return the TFLite model's output for float32 pixels (n, height, width, 3)."""
        return run_interpreter(self.interpreter, pixels)


def open_interpreter(path: str | os.PathLike) -> Interpreter:
    """Open a `.tflite` file in the LiteRT interpreter on the CPU, with one thread per core this process may use.

    Args:
        path: the `.tflite` file.

    Returns:
        An `ai_edge_litert.interpreter.Interpreter` with its tensors allocated.

    Raises:
        CatsdogsError: if ai-edge-litert is not installed, or the file is not a model it can load (for
            example one that needs TensorFlow's select ops, which LiteRT runtimes do not carry).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise CatsdogsError(
            "Predicting with a TFLite export needs the LiteRT interpreter. Install it with "
            f"`pip install ai-edge-litert`. Received: path={path}"
        ) from None
    # LiteRT, like ONNX Runtime, would count every core of the machine, oversubscribing a pinned process.
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        interpreter = Interpreter(model_path=str(Path(path)), num_threads=threads)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as error:
        raise CatsdogsError(
            "The LiteRT interpreter cannot load this .tflite file. Export it again with `catsdogs export RUN "
            f"--format tflite`, which writes builtin ops only. Received: path={path}, error={error}"
        ) from None
    return interpreter


def run_interpreter(interpreter: Interpreter, pixels: numpy.ndarray) -> numpy.ndarray:
    """Run a one-input, one-output LiteRT interpreter on float32 pixels (n, height, width, 3) and return its output.

    The batch size is free: the input is resized (and the tensors allocated again) whenever it changes.

    Args:
        interpreter: from `open_interpreter`.
        pixels: the batch.

    Returns:
        A copy of the output (n, 1 or classes), safe to keep across calls.
    """
    pixels = numpy.ascontiguousarray(pixels, dtype=numpy.float32)
    model_input = interpreter.get_input_details()[0]
    if tuple(model_input["shape"]) != pixels.shape:
        interpreter.resize_tensor_input(model_input["index"], list(pixels.shape), strict=True)
        interpreter.allocate_tensors()
    interpreter.set_tensor(model_input["index"], pixels)
    interpreter.invoke()
    return numpy.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


def _check_signature(interpreter, class_names, path):
    model_input, model_output = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    # catsdogs keeps the input and output of every TFLite export in float32, quantized or not,
    # so that one image path feeds them all.
    input_dtype, output_dtype = numpy.dtype(model_input["dtype"]).name, numpy.dtype(model_output["dtype"]).name
    if (input_dtype, output_dtype) != ("float32", "float32"):
        raise CatsdogsError(
            "The TFLite model does not take float32 pixels and give float32 probabilities, as catsdogs exports "
            f"do. Export it again with `catsdogs export RUN --format tflite`. Received: path={path}, "
            f"input_dtype={input_dtype}, output_dtype={output_dtype}"
        )
    # A two-class model ends in one sigmoid unit; more classes in one softmax unit per class.
    expected = 1 if len(class_names) == 2 else len(class_names)
    width = int(model_output["shape"][-1])
    if width != expected:
        raise CatsdogsError(
            f"The TFLite model's output does not fit the export's {len(class_names)} classes: expected {expected} "
            f"output column(s). Copy the export folder again or export again. Received: path={path}, "
            f"output_columns={width}, classes={len(class_names)}"
        )
