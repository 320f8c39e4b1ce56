"""One rule for "does this engine agree with Keras": the relative difference of their outputs and its bound.

Feature extraction (`training.features`) and prediction from a run folder
(`inference.engines`) both run a Keras model in ONNX Runtime after checking a
first batch against Keras, and both judge that check here, so the two never
drift apart. The module needs numpy alone: it lives in the TensorFlow-free
runtime, the layer below both of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy
import numpy.typing

# ONNX Runtime and Keras differ by about 1e-5 on EfficientNet-Lite0 logits; more means a broken conversion.
AGREEMENT_TOLERANCE = 1e-3


def relative_difference(
    expected: numpy.typing.ArrayLike | Sequence[numpy.typing.ArrayLike],
    actual: numpy.typing.ArrayLike | Sequence[numpy.typing.ArrayLike],
) -> float:
    """Return how far `actual` is from `expected`, relative to the size of `expected`.

    For each output, the largest absolute difference is divided by one plus the largest absolute
    expected value, so that small outputs (probabilities) are compared absolutely and large ones
    (logits, activations) relatively; the worst output decides.

    Args:
        expected: the reference output (Keras), or a list or tuple of outputs.
        actual: the other engine's output for the same inputs, in the same structure and shapes.

    Returns:
        The worst relative difference, a float >= 0, or NaN when either side has a NaN where the other
        has a number.

    Raises:
        ValueError: if the two have a different number of outputs or different shapes.
    """
    expected_outputs = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    actual_outputs = list(actual) if isinstance(actual, (list, tuple)) else [actual]
    if len(expected_outputs) != len(actual_outputs):
        raise ValueError(
            "The two engines return a different number of outputs, so they cannot be compared. "
            f"Received: expected_outputs={len(expected_outputs)}, actual_outputs={len(actual_outputs)}"
        )
    worst = 0.0
    for expected_output, actual_output in zip(expected_outputs, actual_outputs):
        expected_array = numpy.asarray(expected_output, dtype=numpy.float64)
        actual_array = numpy.asarray(actual_output, dtype=numpy.float64)
        if expected_array.shape != actual_array.shape:
            raise ValueError(
                "The two engines return outputs of different shapes, so they cannot be compared. "
                f"Received: expected_shape={expected_array.shape}, actual_shape={actual_array.shape}"
            )
        if expected_array.size == 0:
            continue
        scale = 1.0 + float(numpy.max(numpy.abs(expected_array)))
        difference = float(numpy.max(numpy.abs(expected_array - actual_array))) / scale
        if numpy.isnan(difference):
            # A NaN anywhere is the worst disagreement there is; max() would quietly drop it.
            return difference
        worst = max(worst, difference)
    return worst


def agrees(difference: float, tolerance: float = AGREEMENT_TOLERANCE) -> bool:
    """Whether a `relative_difference` is within `tolerance` (a NaN difference never is)."""
    return bool(difference <= tolerance)
