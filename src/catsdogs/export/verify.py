"""Check an exported model against the Keras model it came from, and measure it.

The check runs both models on the run's validation split, with pixels from
`images.decode_and_resize` exactly as training sees them, and compares their
labels (through `inference.decide`, the one decision rule) and probabilities.
A float32 export must compute what Keras computes; a quantized one (int8,
float16) may differ a little, and is held to its accuracy instead: at most
0.3 points below the Keras model's on the test split (the validation split
when there is no test split). `check_export` also measures the artifact:
accuracy, batch-1 latency and batch-32 throughput on this machine, and for a
quantized export the same numbers of its float32 counterpart, side by side.
"""

from __future__ import annotations

import os
import statistics
import time
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy

from catsdogs.errors import CatsdogsError
from catsdogs.inference import decide

if typing.TYPE_CHECKING:
    import keras

# A float export computes what Keras computes, up to float rounding: every label must agree.
FLOAT_LABEL_AGREEMENT = 1.0
FLOAT_MAX_PROBABILITY_DIFFERENCE = 1e-4
# A quantized export trades a little accuracy for size and speed: it may lose at most this much accuracy
# (0.3 points) against the Keras model on the same split.
QUANTIZED_MAX_ACCURACY_DROP = 0.003
# The median of this many single-image calls is the batch-1 latency.
LATENCY_CALLS = 20
THROUGHPUT_BATCH_SIZE = 32
THROUGHPUT_CALLS = 5

# A model runner: float32 pixels (n, height, width, 3) in, the model's raw output (n, 1 or classes) out.
Runner = Callable[[numpy.ndarray], numpy.ndarray]


def list_split(split_dir: str | os.PathLike, *, class_names: Sequence[str]) -> tuple[list[str], list[int]]:
    """Return (paths, labels) of a prepared split, labelled as training labels it.

    Args:
        split_dir: DATA/<split>, holding one folder per class.
        class_names: the model's classes; the split's class folders must be the same.

    Raises:
        CatsdogsError: if the split is missing or empty, or its classes differ from the model's.
    """
    from catsdogs.data.dataset import list_images

    paths, labels, found_classes = list_images(split_dir)
    if list(found_classes) != list(class_names):
        raise CatsdogsError(
            f"The split's class folders differ from the classes the model was trained on, so its labels would be "
            f"misread. Pass --data a folder prepared with the same class names. "
            f"Received: model_classes={list(class_names)}, data_classes={list(found_classes)}, split_dir={split_dir}"
        )
    return paths, labels


def pixel_batches(
    paths: Sequence[str], labels: Sequence[int], *, image_size: Sequence[int], batch_size: int
) -> Iterator[tuple[numpy.ndarray, numpy.ndarray]]:
    """Yield (float32 pixels, int labels) batches, decoded and resized by `images.decode_and_resize` as in training.

    An image that does not decode is left out together with its label, so the batches stay
    aligned; callers count the images they received against `len(paths)`.

    Args:
        paths: image files.
        labels: their integer labels.
        image_size: (height, width).
        batch_size: images per batch.
    """
    import tensorflow as tf

    from catsdogs.data.pipeline import PREFETCH_BATCHES, parallel_calls, without_autotuning
    from catsdogs.images import decode_and_resize

    size = tuple(int(side) for side in image_size)
    dataset = without_autotuning(
        tf.data.Dataset.from_tensor_slices((list(paths), numpy.asarray(labels, "int64")))
        .map(
            lambda path, label: (decode_and_resize(tf.io.read_file(path), size), label),
            num_parallel_calls=parallel_calls(),
            # Images in file order, so the pixels stay paired with their labels and paths.
            deterministic=True,
        )
        .ignore_errors()
        .batch(batch_size)
        .prefetch(PREFETCH_BATCHES)
    )
    for pixels, batch_labels in dataset:
        yield pixels.numpy().astype("float32"), batch_labels.numpy()


def class_probabilities(output: numpy.ndarray) -> numpy.ndarray:
    """Return (n, classes) probabilities from a model output: a sigmoid column (n, 1) becomes [1 - p, p]."""
    output = numpy.asarray(output, dtype=numpy.float64)
    return numpy.concatenate([1.0 - output, output], axis=-1) if output.shape[-1] == 1 else output


def compare(
    keras_model: keras.Model,
    artifact: Runner,
    batches: Iterator[tuple[numpy.ndarray, numpy.ndarray]],
    *,
    threshold: float,
) -> tuple[dict, numpy.ndarray | None]:
    """Run both models on every batch and compare their labels and probabilities.

    Args:
        keras_model: the source model.
        artifact: runs the exported model.
        batches: (pixels, labels) batches, e.g. from `pixel_batches`.
        threshold: the decision threshold on P(class 1), for two classes.

    Returns:
        (numbers, first batch of pixels): images, label agreement, disagreements, the largest absolute
        probability difference and each model's accuracy; the pixels (None for an empty split) serve the
        speed test.
    """
    images = agreeing = keras_correct = artifact_correct = 0
    largest_difference = 0.0
    first_pixels = None
    for pixels, labels in batches:
        first_pixels = pixels if first_pixels is None else first_pixels
        expected = class_probabilities(keras_model.predict_on_batch(pixels))
        exported = class_probabilities(artifact(pixels))
        expected_labels, exported_labels = decide(expected, threshold), decide(exported, threshold)
        images += len(pixels)
        agreeing += int(numpy.sum(expected_labels == exported_labels))
        keras_correct += int(numpy.sum(expected_labels == labels))
        artifact_correct += int(numpy.sum(exported_labels == labels))
        largest_difference = max(largest_difference, float(numpy.max(numpy.abs(expected - exported))))
    numbers = {
        "images": images,
        "label_agreement": agreeing / images if images else None,
        "disagreements": images - agreeing,
        "max_probability_difference": largest_difference if images else None,
        "threshold": threshold,
        "keras_accuracy": keras_correct / images if images else None,
        "artifact_accuracy": artifact_correct / images if images else None,
    }
    return numbers, first_pixels


def accuracy(artifact: Runner, batches: Iterator[tuple[numpy.ndarray, numpy.ndarray]], *, threshold: float) -> dict:
    """Return {"images", "accuracy"} of the exported model on labelled batches (accuracy None when empty)."""
    images = correct = 0
    for pixels, labels in batches:
        predicted = decide(class_probabilities(artifact(pixels)), threshold)
        images += len(pixels)
        correct += int(numpy.sum(predicted == labels))
    return {"images": images, "accuracy": correct / images if images else None}


def measure_speed(artifact: Runner, pixels: numpy.ndarray) -> dict:
    """Time the exported model: the median of single-image calls, and photos/s at batch 32.

    Args:
        artifact: runs the exported model.
        pixels: a few real images (n, height, width, 3); they are repeated to fill a batch of 32.

    Returns:
        {"latency_batch1_ms", "latency_calls", "throughput_batch32_photos_per_second", "throughput_calls"}.
    """
    single = pixels[:1]
    batch = numpy.ascontiguousarray(numpy.take(pixels, numpy.arange(THROUGHPUT_BATCH_SIZE) % len(pixels), axis=0))
    # The first calls allocate buffers and pick kernels; they are not what a user waits for later.
    artifact(single)
    artifact(batch)
    latencies = [_seconds(artifact, single) for _ in range(LATENCY_CALLS)]
    batch_seconds = [_seconds(artifact, batch) for _ in range(THROUGHPUT_CALLS)]
    return {
        "latency_batch1_ms": statistics.median(latencies) * 1000.0,
        "latency_calls": LATENCY_CALLS,
        "throughput_batch32_photos_per_second": THROUGHPUT_BATCH_SIZE / statistics.median(batch_seconds),
        "throughput_calls": THROUGHPUT_CALLS,
    }


def _seconds(artifact, pixels):
    started = time.perf_counter()
    artifact(pixels)
    return time.perf_counter() - started


def failures(validation: dict) -> list[str]:
    """Return why a float export fails its bounds (an empty list when it passes)."""
    reasons = []
    if not validation["images"]:
        return ["no validation image could be read"]
    if validation["label_agreement"] < FLOAT_LABEL_AGREEMENT:
        reasons.append(
            f"label agreement {validation['label_agreement']:.2%} is below {FLOAT_LABEL_AGREEMENT:.0%} "
            f"({validation['disagreements']} of {validation['images']} images differ)"
        )
    if validation["max_probability_difference"] > FLOAT_MAX_PROBABILITY_DIFFERENCE:
        reasons.append(
            f"max |difference in probability| {validation['max_probability_difference']:.2g} is above "
            f"{FLOAT_MAX_PROBABILITY_DIFFERENCE:g}"
        )
    return reasons


def quantized_failures(accuracy_check: dict) -> list[str]:
    """Return why a quantized export fails its bound (an empty list when it passes).

    Args:
        accuracy_check: {"split", "images", "keras", "artifact"}: both models' accuracy on one split.
    """
    if not accuracy_check["images"]:
        return [f"no {accuracy_check['split']} image could be read"]
    drop = accuracy_check["keras"] - accuracy_check["artifact"]
    # A tolerance of one part in a billion keeps a drop of exactly 0.3 points, computed in floats, within it.
    if drop > QUANTIZED_MAX_ACCURACY_DROP + 1e-9:
        return [
            f"{accuracy_check['split']} accuracy {accuracy_check['artifact']:.2%} is {drop * 100:.2f} points below "
            f"the Keras model's {accuracy_check['keras']:.2%} (at most {QUANTIZED_MAX_ACCURACY_DROP * 100:.1f} allowed)"
        ]
    return []


def check_export(
    keras_model: keras.Model,
    artifact: Runner,
    *,
    data_dir: str | os.PathLike,
    class_names: Sequence[str],
    image_size: Sequence[int],
    batch_size: int,
    threshold: float,
    float_artifact: Runner | None = None,
) -> dict:
    """Verify an exported model against Keras and measure it: the numbers of its export.json.

    A float export (`float_artifact` None) is bounded on the validation split: every label equal, and
    probabilities within `FLOAT_MAX_PROBABILITY_DIFFERENCE`. A quantized export is bounded on accuracy:
    at most `QUANTIZED_MAX_ACCURACY_DROP` below the Keras model's on the test split, or on the validation
    split when the data folder has no test split; its label agreement and probability difference on
    validation are recorded, not bounded, and its float32 counterpart is measured beside it.

    Args:
        keras_model: the source model.
        artifact: runs the exported model.
        data_dir: the prepared folder with a validation split (and, usually, a test split).
        class_names: the model's classes, in label order.
        image_size: (height, width).
        batch_size: images per model call.
        threshold: the decision threshold on P(class 1), for two classes.
        float_artifact: for a quantized export, runs the float32 artifact of the same format.

    Returns:
        {"bounds", "validation", "test", "accuracy", "speed", "float32", "failures"}; "accuracy" and
        "float32" are None for a float export, "test" is None without a test split.
    """
    quantized = float_artifact is not None

    def batches(split):
        paths, labels = list_split(Path(data_dir) / split, class_names=class_names)
        return len(paths), pixel_batches(paths, labels, image_size=image_size, batch_size=batch_size)

    count, validation_batches = batches("validation")
    validation, sample = compare(keras_model, artifact, validation_batches, threshold=threshold)
    validation = {"split": "validation", "unreadable": count - validation["images"], **validation}
    test = None
    has_test = (Path(data_dir) / "test").is_dir()
    if has_test and quantized:
        count, test_batches = batches("test")
        numbers, _ = compare(keras_model, artifact, test_batches, threshold=threshold)
        test = {"split": "test", "accuracy": numbers["artifact_accuracy"], **numbers}
    elif has_test:
        test = {"split": "test", **accuracy(artifact, batches("test")[1], threshold=threshold)}
    speed = measure_speed(artifact, sample) if sample is not None else None
    if not quantized:
        bounds = {
            "label_agreement": FLOAT_LABEL_AGREEMENT,
            "max_probability_difference": FLOAT_MAX_PROBABILITY_DIFFERENCE,
        }
        return {
            "bounds": bounds,
            "validation": validation,
            "test": test,
            "accuracy": None,
            "speed": speed,
            "float32": None,
            "failures": failures(validation),
        }
    checked = test if test is not None else validation
    split = checked["split"]
    accuracy_check = {
        "split": split,
        "images": checked["images"],
        "keras": checked["keras_accuracy"],
        "artifact": checked["artifact_accuracy"],
        "drop_points": (
            (checked["keras_accuracy"] - checked["artifact_accuracy"]) * 100 if checked["images"] else None
        ),
        "note": None if test is not None else "no test split: the accuracy bound is checked on the validation split",
    }
    float_numbers = accuracy(float_artifact, batches(split)[1], threshold=threshold)
    float32 = {
        "accuracy": float_numbers["accuracy"],
        "split": split,
        "speed": measure_speed(float_artifact, sample) if sample is not None else None,
    }
    reasons = ["no validation image could be read"] if not validation["images"] else []
    reasons += [reason for reason in quantized_failures(accuracy_check) if reason not in reasons]
    return {
        "bounds": {"max_accuracy_drop": QUANTIZED_MAX_ACCURACY_DROP, "accuracy_split": split},
        "validation": validation,
        "test": test,
        "accuracy": accuracy_check,
        "speed": speed,
        "float32": float32,
        "failures": reasons,
    }
