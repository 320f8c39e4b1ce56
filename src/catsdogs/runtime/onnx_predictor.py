"""Prediction from an export folder without TensorFlow: `OnnxPredictor.from_export_dir(path).predict(images)`.

An export folder (made by `catsdogs export RUN --format onnx`) carries
model.onnx with its SHA-256, labels.json and preprocessing.json. The predictor
checks the folder and the model's checksum before it trusts them, feeds the
model through `runtime.load_pixels` (the training image path with numpy and
Pillow) and shares its batching, error rows and decision rule with the Keras
`inference.Predictor` through `runtime.predictions.ImagePredictor`, so both
give the same answers in the same shape.
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
    import onnxruntime

    from catsdogs.runtime.predictions import ImageInput

ONNX_FORMAT = "onnx"


class OnnxPredictor(ImagePredictor):
    """An ONNX model in ONNX Runtime with its class names and image settings, ready to label images.

    Build it with `OnnxPredictor.from_export_dir(path)`. It behaves as `inference.Predictor`
    does: the same image path, decision rule, error rows and results.

    Args:
        session: the ONNX Runtime session of a model taking raw pixels (batch, height, width, 3)
            in 0..255, with one input and one output.
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
        session: onnxruntime.InferenceSession,
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
        self.session = session
        self.input_name = session.get_inputs()[0].name
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
    ) -> OnnxPredictor:
        """Check an export folder, verify its model's SHA-256 and open the model in ONNX Runtime.

        Args:
            path: the export folder, e.g. RUN/export/onnx/ or RUN/export/onnx-int8/.
            threshold: for two classes, the probability of the second class at or above which it is predicted.
            batch_size: images per model call.
            test_time_augmentation: also average over the mirror image of each photo; None takes the
                setting the export recorded from its run's `model.test_time_augmentation`.
            abstain: answer "unsure" where the export's abstain.json says so; False gives the plain label.

        Returns:
            An `OnnxPredictor`.

        Raises:
            CatsdogsError: if the folder does not exist or lacks a file (the error names it), holds another
                format than ONNX, has a model that fails its SHA-256 check, has unreadable or inconsistent
                labels.json or preprocessing.json (including a test_time_augmentation that is not true or false),
                or when onnxruntime is not installed.
        """
        contents = read_export(path, format_name=ONNX_FORMAT)
        session = open_session(contents.export_dir.artifact_path)
        _check_output(session, contents.class_names, contents.export_dir.artifact_path)
        predictor = cls(
            session,
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
        """Return the ONNX model's output for float32 pixels (n, height, width, 3)."""
        feed = {self.input_name: numpy.ascontiguousarray(pixels, dtype=numpy.float32)}
        return self.session.run(None, feed)[0]


def open_session(path: str | os.PathLike) -> onnxruntime.InferenceSession:
    """Open an ONNX file in ONNX Runtime on the CPU, with one thread per core this process may use.

    Args:
        path: the `.onnx` file.

    Returns:
        An `onnxruntime.InferenceSession`.

    Raises:
        CatsdogsError: if onnxruntime is not installed.
    """
    try:
        import onnxruntime
    except ImportError:
        raise CatsdogsError(
            "Predicting with an ONNX export needs ONNX Runtime. Install it with `pip install onnxruntime`. "
            f"Received: path={path}"
        ) from None
    options = onnxruntime.SessionOptions()
    # ONNX Runtime counts every core of the machine; a process pinned to fewer cores would oversubscribe them.
    options.intra_op_num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return onnxruntime.InferenceSession(str(Path(path)), options, providers=["CPUExecutionProvider"])


def _check_output(session, class_names, path):
    # A two-class model ends in one sigmoid unit; more classes in one softmax unit per class.
    expected = 1 if len(class_names) == 2 else len(class_names)
    width = session.get_outputs()[0].shape[-1]
    if isinstance(width, int) and width != expected:
        raise CatsdogsError(
            f"The ONNX model's output does not fit the export's {len(class_names)} classes: expected {expected} "
            f"output column(s). Copy the export folder again or export again. Received: path={path}, "
            f"output_columns={width}, classes={len(class_names)}"
        )
