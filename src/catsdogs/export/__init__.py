"""Inference-only artifacts of a run, verified against the Keras model: `export_run(RUN, format_name="onnx")`.

An export folder (RUN/export/<format>/) carries the artifact and its SHA-256,
labels.json, preprocessing.json and export.json, the record of its check
against Keras. TensorFlow is imported only when an export runs.
"""

from catsdogs.export.exporter import BUILT_FORMATS, ExportResult, check_export_format, export_run

__all__ = ["BUILT_FORMATS", "ExportResult", "check_export_format", "export_run"]
