"""The per-format writers behind `export_run`: write the artifact, open it to run, and describe how to feed it.

`build_artifact` writes one artifact (ONNX, SavedModel or TFLite, at float32
or quantized) and returns what verification needs: a runner for the artifact,
the names of its input and output, how it was written and, for a quantized
export, a runner for its float32 counterpart so that both can be measured side
by side. `calibration_data` draws the training photos that calibrate an int8
export, and `preprocessing_description` is preprocessing.json.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy

from catsdogs.errors import CatsdogsError
from catsdogs.export.verify import Runner, list_split, pixel_batches
from catsdogs.runs import ExportDir

if typing.TYPE_CHECKING:
    import keras

# Seeds the calibration draw, so that the same data folder always calibrates with the same photos.
CALIBRATION_SEED = 0
# What each precision of `choices.EXPORT_QUANTIZATIONS` stores its weights in.
PRECISIONS = {"none": "float32", "float16": "float16", "int8": "int8"}


@dataclasses.dataclass(frozen=True)
class BuiltArtifact:
    """A written artifact, ready to verify.

    Attributes:
        runner: runs the artifact on float32 pixels (n, height, width, 3).
        input_name: the name of the model's input, for preprocessing.json.
        output_name: the name of the model's output, for preprocessing.json.
        settings: how the artifact was written (writer or converter, quantization settings), for export.json.
        float_runner: for a quantized export, runs its float32 counterpart (never kept in the export folder).
        float_file_size_bytes: for a quantized export, the size of that float32 counterpart.
    """

    runner: Runner
    input_name: str
    output_name: str
    settings: dict
    float_runner: Runner | None = None
    float_file_size_bytes: int | None = None


def build_artifact(
    model: keras.Model,
    export_dir: ExportDir,
    *,
    quantize: str,
    image_size: Sequence[int],
    class_names: Sequence[str],
    source_model_sha256: str,
    workspace: str | os.PathLike,
    calibration: Callable[[], Iterator[numpy.ndarray]] | None = None,
) -> BuiltArtifact:
    """Write `model` as `export_dir.artifact_path` in the folder's format and precision.

    Args:
        model: the Keras model, taking raw pixels (batch, height, width, 3) in 0..255.
        export_dir: the export folder being built; its format names the artifact.
        quantize: "none", "float16" or "int8" (not for saved_model).
        image_size: (height, width).
        class_names: class names in label order.
        source_model_sha256: the SHA-256 of the `.keras` file the model came from.
        workspace: a scratch folder outside the export folder, for the float32 model a quantized one starts from.
        calibration: for int8, returns a fresh iterator of float32 pixel batches of training photos.

    Returns:
        The `BuiltArtifact`.

    Raises:
        CatsdogsError: for a model the format cannot hold (a TFLite file would need select ops), or a
            quantization this installation lacks.
    """
    format_name, path = export_dir.format_name, export_dir.artifact_path
    if format_name == "saved_model":
        from catsdogs.export import saved_model

        settings = saved_model.export_saved_model(model, path, image_size=image_size)
        runner, input_name, output_name = saved_model.load_saved_model(path)
        return BuiltArtifact(runner, input_name, output_name, settings)
    if format_name == "tflite":
        return _build_tflite(
            model, path, quantize=quantize, image_size=image_size, workspace=workspace, calibration=calibration
        )
    return _build_onnx(
        model,
        path,
        quantize=quantize,
        image_size=image_size,
        class_names=class_names,
        source_model_sha256=source_model_sha256,
        workspace=workspace,
        calibration=calibration,
    )


def _build_onnx(model, path, *, quantize, image_size, class_names, source_model_sha256, workspace, calibration):
    from catsdogs.export import onnx as onnx_format
    from catsdogs.runtime.onnx_predictor import open_session

    metadata = {"image_size": image_size, "class_names": class_names, "source_model_sha256": source_model_sha256}
    float_path = path if quantize == "none" else Path(workspace) / path.name
    onnx_format.export_onnx(model, float_path, **metadata)
    settings = {"writer": "keras.Model.export(format='onnx') (tf2onnx)"}
    float_runner = float_size = None
    if quantize != "none":
        quantizer = _onnx_quantizer()
        if quantize == "int8":
            settings["quantization"] = quantizer.quantize_onnx_int8(float_path, path, calibration())
        else:
            settings["quantization"] = quantizer.convert_onnx_float16(float_path, path)
        # The quantizer writes a new model; the catsdogs facts must travel with it as with the float one.
        onnx_format.write_metadata(path, **metadata)
        float_session = open_session(float_path)
        float_runner = functools.partial(onnx_format.run_session, float_session)
        float_size = Path(float_path).stat().st_size
    session = open_session(path)
    return BuiltArtifact(
        functools.partial(onnx_format.run_session, session),
        session.get_inputs()[0].name,
        session.get_outputs()[0].name,
        settings,
        float_runner,
        float_size,
    )


def _onnx_quantizer():
    try:
        from catsdogs.export import quantize as quantizer
    except ImportError:
        raise CatsdogsError(
            "ONNX quantization (catsdogs.export.quantize) is not available in this installation, so an int8 or "
            "float16 ONNX export cannot be written. Export float32 ONNX (drop --quantize) or quantized TFLite "
            "(--format tflite). Received: format=onnx"
        ) from None
    return quantizer


def _build_tflite(model, path, *, quantize, image_size, workspace, calibration):
    from catsdogs.export import tflite
    from catsdogs.runtime.tflite_predictor import open_interpreter, run_interpreter

    settings = tflite.export_tflite(
        model, path, image_size=image_size, quantize=quantize, representative_batches=calibration
    )
    interpreter = open_interpreter(path)
    float_runner = float_size = None
    if quantize != "none":
        float_path = Path(workspace) / path.name
        tflite.export_tflite(model, float_path, image_size=image_size)
        float_runner = functools.partial(run_interpreter, open_interpreter(float_path))
        float_size = float_path.stat().st_size
    return BuiltArtifact(
        functools.partial(run_interpreter, interpreter),
        interpreter.get_input_details()[0]["name"],
        interpreter.get_output_details()[0]["name"],
        settings,
        float_runner,
        float_size,
    )


def calibration_data(
    data_dir: str | os.PathLike,
    *,
    class_names: Sequence[str],
    image_size: Sequence[int],
    count: int,
    batch_size: int,
) -> tuple[Callable[[], Iterator[numpy.ndarray]], dict]:
    """Draw a class-balanced, deterministic sample of the training split to calibrate an int8 export.

    Calibration never sees the validation or test photos, which judge the export afterwards. Each class
    gets an equal share of `count` (the first classes one more when it does not divide), drawn with a
    fixed seed; a class with fewer photos gives all it has.

    Args:
        data_dir: the prepared folder; its train split is sampled.
        class_names: the model's classes, in label order.
        image_size: (height, width).
        count: photos to draw in all.
        batch_size: photos per batch.

    Returns:
        (batches, record): `batches()` yields float32 pixel batches (n, height, width, 3) decoded and resized
        as in training, anew on every call; the record says what was drawn, for export.json.

    Raises:
        CatsdogsError: if the data folder has no train split, or its classes differ from the model's.
    """
    train_dir = Path(data_dir) / "train"
    if not train_dir.is_dir():
        raise CatsdogsError(
            "An int8 export is calibrated on the run's training photos, but the data folder has no train split. "
            "Pass --data a folder made by `catsdogs prepare` with a train split, or export with --quantize "
            f"float16 or none. Received: data_dir={data_dir}"
        )
    paths, labels = list_split(train_dir, class_names=class_names)
    chosen_paths, chosen_labels = calibration_sample(paths, labels, class_count=len(class_names), count=count)

    def batches():
        for pixels, _ in pixel_batches(chosen_paths, chosen_labels, image_size=image_size, batch_size=batch_size):
            yield pixels

    per_class = {name: chosen_labels.count(label) for label, name in enumerate(class_names)}
    record = {"split": "train", "images": len(chosen_paths), "per_class": per_class, "seed": CALIBRATION_SEED}
    return batches, record


def calibration_sample(
    paths: Sequence[str], labels: Sequence[int], *, class_count: int, count: int
) -> tuple[list[str], list[int]]:
    """Pick `count` photos, an equal share per class, the same ones every time for the same list.

    Each class gets `count // class_count` photos, the first `count % class_count` classes one more; a
    class with fewer photos gives all it has. The draw is seeded with `CALIBRATION_SEED` and does not
    depend on the order of `paths`.

    Args:
        paths: the split's photos.
        labels: their integer labels.
        class_count: the number of classes.
        count: photos to pick in all.

    Returns:
        (paths, labels) of the sample, class by class, each class's photos in sorted order.
    """
    generator = numpy.random.default_rng(CALIBRATION_SEED)
    chosen_paths, chosen_labels = [], []
    for label in range(class_count):
        members = sorted(path for path, path_label in zip(paths, labels) if path_label == label)
        share = count // class_count + (1 if label < count % class_count else 0)
        picked = sorted(members[index] for index in generator.permutation(len(members))[:share])
        chosen_paths += picked
        chosen_labels += [label] * len(picked)
    return chosen_paths, chosen_labels


def preprocessing_description(
    *,
    input_name: str,
    output_name: str,
    image_size: Sequence[int],
    class_names: Sequence[str],
    threshold: float,
    limits: dict,
    test_time_augmentation: bool = False,
) -> dict:
    """Return preprocessing.json: everything a client outside catsdogs needs to feed the model and read it.

    Every format and precision takes and gives the same thing (float32 pixels in, float32 probabilities
    out), so one description serves them all.

    Args:
        input_name: the name of the artifact's input.
        output_name: the name of the artifact's output.
        image_size: (height, width).
        class_names: class names in label order.
        threshold: the decision threshold on P(class 1) used for two classes.
        limits: {"max_pixels", "min_side"}: the images the run accepts, as `prepare` checked its photos.
        test_time_augmentation: the run's `model.test_time_augmentation`: whether its predictions average
            each image with its mirror image.
    """
    height, width = (int(side) for side in image_size)
    two_classes = len(class_names) == 2
    return {
        "image_size": [height, width],
        # Larger or smaller images are refused, as the run's own `predict` refuses them.
        "max_pixels": int(limits["max_pixels"]),
        "min_side": int(limits["min_side"]),
        "input": {
            "name": input_name,
            "shape": [None, height, width, 3],
            "dtype": "float32",
            "layout": "NHWC",
            "channel_order": "RGB",
            "value_range": [0, 255],
            "scaling": "none: the model rescales inside itself, so feed the 0..255 values as they are",
        },
        "decode": (
            "8-bit RGB: EXIF rotation applied, CMYK and grayscale converted to RGB, transparency composited on "
            "white, the first frame of an animation (catsdogs.images.clean_image_bytes); JPEGs decoded with "
            "libjpeg's accurate integer DCT, as Pillow does (runs trained before December 2026 used TensorFlow's "
            "fast DCT, up to 4 of 255 levels away; docs/benchmarks.md)"
        ),
        "resize": {
            "method": "bilinear",
            "half_pixel_centers": True,
            "antialias": True,
            "aspect_ratio": "not kept: the image is stretched to height x width",
            "rounding": "round to the nearest integer and clip to 0..255 (uint8), then convert to float32",
            "reference": "tf.image.resize(image, [height, width], method='bilinear', antialias=True)",
        },
        "output": {
            "name": output_name,
            "shape": [None, 1 if two_classes else len(class_names)],
            "dtype": "float32",
            "meaning": (
                f"the sigmoid probability of class 1 ({class_names[1]!r}); class 0 has 1 - p"
                if two_classes
                else "softmax probabilities, one per class in labels order"
            ),
        },
        "decision": (
            f"class 1 when its probability is at least {threshold}, else class 0"
            if two_classes
            else "the most probable class"
        ),
        "threshold": threshold if two_classes else None,
        "test_time_augmentation": bool(test_time_augmentation),
        "test_time_augmentation_method": (
            "when true, run the model on the image and on its mirror image (flipped left to right, along the "
            "width axis) and average the two outputs before deciding; twice the model calls"
        ),
        "labels": list(class_names),
    }
