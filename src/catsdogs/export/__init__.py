"""Inference-only artifacts of a run, verified against the Keras model: `export_run(RUN, format_name="onnx")`.

An export folder (RUN/export/<format>/, or <format>-<quantize>/ for an int8 or
float16 export) carries the artifact and its SHA-256, labels.json,
preprocessing.json and export.json, the record of its check against Keras.
Formats: onnx, saved_model and tflite. TensorFlow is imported only when an
export runs.
"""

from catsdogs.export.exporter import BUILT_FORMATS, ExportResult, check_export_format, check_quantize, export_run

__all__ = ["BUILT_FORMATS", "ExportResult", "check_export_format", "check_quantize", "export_run"]
