"""Prediction without TensorFlow: numpy, Pillow and onnxruntime only.

`OnnxPredictor.from_export_dir(path)` predicts with an export folder made by
`catsdogs export` (`is_export_dir` tells such a folder apart, `read_export`
checks and reads it); `load_pixels` gives, for any photo, the pixels that training
feeds the model (`images.clean_image_bytes`, then `images.decode_and_resize`).
`Prediction`, the decision rule `decide` and the batching with its error rows
(`ImagePredictor`) are shared with the Keras `inference.Predictor`. Nothing in
this package may import TensorFlow or Keras: tests block both imports, load a
photo and predict.
"""

from catsdogs.runtime.export_folder import ExportContents, is_export_dir, read_export
from catsdogs.runtime.onnx_predictor import OnnxPredictor
from catsdogs.runtime.predictions import ImagePredictor, Prediction, check_threshold, class_probabilities, decide
from catsdogs.runtime.preprocess import load_pixels, resize_bilinear_antialiased, resize_to_uint8

__all__ = [
    "ExportContents",
    "ImagePredictor",
    "OnnxPredictor",
    "Prediction",
    "check_threshold",
    "class_probabilities",
    "decide",
    "is_export_dir",
    "load_pixels",
    "read_export",
    "resize_bilinear_antialiased",
    "resize_to_uint8",
]
