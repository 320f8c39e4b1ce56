"""Prediction with a trained model: `Predictor` (one image path, one decision rule), zero-shot, files and formats.

`from catsdogs.inference import Predictor` is the public entry point; it works
as it did before the package was split.
"""

from catsdogs.inference.files import expand_inputs, format_predictions, predict_files
from catsdogs.inference.predictor import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_THRESHOLD,
    Prediction,
    Predictor,
    check_threshold,
    decide,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_THRESHOLD",
    "Prediction",
    "Predictor",
    "check_threshold",
    "decide",
    "expand_inputs",
    "format_predictions",
    "predict_files",
]
