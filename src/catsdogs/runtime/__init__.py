"""Prediction without TensorFlow: numpy, Pillow, onnxruntime and (for TFLite) ai-edge-litert only.

`OnnxPredictor.from_export_dir(path)` and `TflitePredictor.from_export_dir(path)`
predict with an export folder made by `catsdogs export`, and
`open_export_predictor(path)` picks the one that runs the folder's format
(`is_export_dir` tells such a folder apart, `read_export` checks and reads it,
`export_format` names its format); `load_pixels` gives, for any photo, the
pixels that training feeds the model (`images.clean_image_bytes`, then
`images.decode_and_resize`).
`Prediction`, the decision rule `decide` and the batching with its error rows
(`ImagePredictor`) are shared with the Keras `inference.Predictor`. Nothing in
this package may import TensorFlow or Keras: tests block both imports, load a
photo and predict.
"""

from catsdogs.runtime.export_folder import (
    ExportContents,
    export_format,
    is_export_dir,
    open_export_predictor,
    read_export,
)
from catsdogs.runtime.onnx_predictor import OnnxPredictor
from catsdogs.runtime.predictions import ImagePredictor, Prediction, check_threshold, class_probabilities, decide
from catsdogs.runtime.preprocess import load_pixels, resize_bilinear_antialiased, resize_to_uint8
from catsdogs.runtime.tflite_predictor import TflitePredictor

__all__ = [
    "ExportContents",
    "ImagePredictor",
    "OnnxPredictor",
    "Prediction",
    "TflitePredictor",
    "check_threshold",
    "class_probabilities",
    "decide",
    "export_format",
    "is_export_dir",
    "load_pixels",
    "open_export_predictor",
    "read_export",
    "resize_bilinear_antialiased",
    "resize_to_uint8",
]
