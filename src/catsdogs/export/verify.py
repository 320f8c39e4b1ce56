"""Check an exported model against the Keras model it came from, and measure it.

The check runs both models on the run's validation split, with pixels from
`images.decode_and_resize` exactly as training sees them, and compares their
labels (through `inference.decide`, the one decision rule) and probabilities.
It also measures the artifact: test accuracy when the data folder has a test
split, file size, batch-1 latency and batch-32 throughput on this machine.
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

    from catsdogs.images import decode_and_resize

    size = tuple(int(side) for side in image_size)
    dataset = (
        tf.data.Dataset.from_tensor_slices((list(paths), numpy.asarray(labels, "int64")))
        .map(lambda path, label: (decode_and_resize(tf.io.read_file(path), size), label))
        .ignore_errors()
        .batch(batch_size)
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
        (numbers, first batch of pixels): images, label agreement, disagreements and the largest
        absolute probability difference; the pixels (None for an empty split) serve the speed test.
    """
    images = agreeing = 0
    largest_difference = 0.0
    first_pixels = None
    for pixels, _ in batches:
        first_pixels = pixels if first_pixels is None else first_pixels
        expected = class_probabilities(keras_model.predict_on_batch(pixels))
        exported = class_probabilities(artifact(pixels))
        images += len(pixels)
        agreeing += int(numpy.sum(decide(expected, threshold) == decide(exported, threshold)))
        largest_difference = max(largest_difference, float(numpy.max(numpy.abs(expected - exported))))
    numbers = {
        "images": images,
        "label_agreement": agreeing / images if images else None,
        "disagreements": images - agreeing,
        "max_probability_difference": largest_difference if images else None,
        "threshold": threshold,
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


def format_table(record: dict, *, export_path: str | os.PathLike) -> str:
    """Return the verification of an export (its export.json) as a plain-text table.

    Args:
        record: the contents of export.json.
        export_path: the export folder, for the first line.
    """
    validation, test, speed = record["validation"], record.get("test"), record["speed"]
    bounds = record["bounds"]
    agreement = validation["label_agreement"]
    difference = validation["max_probability_difference"]
    rows = [
        ("format", record["format"], ""),
        (
            "label agreement (validation)",
            "n/a" if agreement is None else f"{agreement:.2%} of {validation['images']} images",
            f">= {bounds['label_agreement']:.0%}",
        ),
        (
            "max |difference in probability|",
            "n/a" if difference is None else f"{difference:.2e}",
            f"<= {bounds['max_probability_difference']:g}",
        ),
        ("test accuracy (artifact)", _test_accuracy(test), ""),
        ("file size", f"{record['file_size_bytes']:,} bytes", ""),
        (
            "batch-1 latency",
            f"{speed['latency_batch1_ms']:.2f} ms (median of {speed['latency_calls']})" if speed else "n/a",
            "",
        ),
        (
            "batch-32 throughput",
            f"{speed['throughput_batch32_photos_per_second']:.1f} photos/s" if speed else "n/a",
            "",
        ),
    ]
    width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    lines = [f"export: {Path(export_path) / record['artifact']}"]
    lines += [f"  {name:<{width}}  {value:<{value_width}}  {bound}".rstrip() for name, value, bound in rows]
    verdict = "yes" if record["verified"] else "NO: " + "; ".join(record["failures"])
    lines.append(f"  {'verified':<{width}}  {verdict}")
    return "\n".join(lines) + "\n"


def _test_accuracy(test):
    if not test:
        return "no test split"
    if test["accuracy"] is None:
        return "n/a (no test image could be read)"
    return f"{test['accuracy']:.4f} of {test['images']} images"
