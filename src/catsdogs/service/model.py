"""What the service serves: a run folder or an export folder, resolved to a checked, loaded, warm ONNX model.

`resolve_source` turns RUN_OR_EXPORT into an export folder. An export folder is
served as it is. A run folder is served through its ONNX export
(RUN/export/onnx, or RUN/export/onnx-<precision> for a quantized one), which
is used when it exists, passed its check against Keras and was made from the
run's current model (the SHA-256 that export.json records equals the run's);
otherwise `catsdogs export` makes it first, in a child process, so that the
serving process never imports TensorFlow for it.

`load_model` then checks the export and its model's SHA-256, opens one ONNX
Runtime session per inference worker from the very bytes it checked, and warms
each one up with a call.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy

from catsdogs.errors import CatsdogsError
from catsdogs.fileio import checksum_path, sha256_bytes, verify_checksum
from catsdogs.runs import CONFIG_FILE, EXPORT_DIR, EXPORT_RECORD_FILE, RunDir, is_run_dir
from catsdogs.runtime import OnnxPredictor, is_export_dir, read_export
from catsdogs.service.settings import ServiceSettings

ONNX_FORMAT = "onnx"
FLOAT_PRECISION = "float32"
# `catsdogs export` exits 1 when it wrote the export but the export missed its check against Keras.
_EXPORT_WRITTEN_UNVERIFIED = 1


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where the served model comes from.

    Attributes:
        export_dir: the export folder that is served.
        run_dir: the run folder whose model.keras the export was made from (checked by SHA-256), or None;
            Grad-CAM needs it.
    """

    export_dir: Path
    run_dir: Path | None


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What `GET /v1/model` says about the served model.

    Attributes:
        name: the run folder's name, or the export folder's when it sits in no run.
        architecture: the model's registry name (e.g. "efficientnet_lite0"), when the run records it.
        classes: class names in label order.
        image_size: (height, width) the model takes.
        sha256: the SHA-256 of the served model file.
        format: the export format ("onnx").
        precision: "float32", or the quantization of the export (e.g. "int8").
        test_accuracy: the export's accuracy on the run's test split (or the run's, when the export does not
            record it); None when neither was measured.
        verified: whether the export passed its check against the Keras model.
        threshold: the decision threshold on the second class's probability (two classes).
        test_time_augmentation: whether each photo is also predicted mirrored and the two averaged.
        max_pixels: largest accepted photo, in pixels.
        min_side: smallest accepted photo side, in pixels.
    """

    name: str
    architecture: str | None
    classes: list[str]
    image_size: tuple[int, int]
    sha256: str
    format: str
    precision: str
    test_accuracy: float | None
    verified: bool
    threshold: float
    test_time_augmentation: bool
    max_pixels: int
    min_side: int


def export_folder(run_dir: str | os.PathLike, precision: str) -> Path:
    """The folder of a run's ONNX export at `precision`: RUN/export/onnx, or RUN/export/onnx-<precision>."""
    return RunDir(run_dir).export_dir(ONNX_FORMAT, "none" if precision == FLOAT_PRECISION else precision)


def export_in_child_process(run_dir: Path, precision: str) -> None:
    """Make a run's ONNX export with `catsdogs export` in a child process, which prints its own progress.

    Raises:
        CatsdogsError: when the export fails (its own message is printed above).
    """
    command = [sys.executable, "-m", "catsdogs", "export", str(run_dir), "--format", ONNX_FORMAT]
    if precision != FLOAT_PRECISION:
        command += ["--quantize", precision]
    status = subprocess.run(command, check=False).returncode
    if status not in (0, _EXPORT_WRITTEN_UNVERIFIED):
        raise CatsdogsError(
            "The run could not be exported to ONNX, so there is nothing to serve; the export's message is above. "
            f"Fix what it says, or export by hand with `{' '.join(command[3:])}`. "
            f"Received: run={run_dir}, exit_status={status}"
        )


def resolve_source(
    path: str | os.PathLike,
    *,
    precision: str = FLOAT_PRECISION,
    make_export: Callable[[Path, str], None] = export_in_child_process,
    progress: Callable[[str], None] = print,
) -> ModelSource:
    """Turn RUN_OR_EXPORT into the export folder to serve, making a run's export first when it is missing or stale.

    Args:
        path: a run folder (made by `catsdogs train`) or an export folder (made by `catsdogs export`).
        precision: for a run folder: which export to serve ("float32", or a quantization such as "int8").
        make_export: makes the export of a run folder at a precision (default: `catsdogs export` in a child
            process).
        progress: called with a line of progress for the operator.

    Returns:
        A `ModelSource`.

    Raises:
        CatsdogsError: for a path that is neither a run nor an export folder, a run whose model fails its
            SHA-256 check, or an export that cannot be made.
    """
    path = Path(path)
    if is_export_dir(path):
        return ModelSource(path, _source_run(path))
    if not is_run_dir(path):
        raise CatsdogsError(
            "Serve a run folder made by `catsdogs train` or an export folder made by `catsdogs export` "
            f"(RUN/export/onnx). The path is neither. Received: path={path}"
        )
    run = RunDir.open(path)
    run_sha256 = verify_checksum(run.model_path, what="model")
    export_dir = export_folder(run.path, precision)
    stale = _why_not_usable(export_dir, run_sha256)
    if stale:
        progress(f"The run's {export_dir.name} export {stale}; exporting it now (this loads TensorFlow once).")
        make_export(run.path, precision)
        stale = _why_not_usable(export_dir, run_sha256, require_verified=False)
        if stale:
            raise CatsdogsError(
                f"The run's export was made but still cannot be served: it {stale}. Export by hand with "
                f"`catsdogs export RUN --format onnx` and read its message. Received: export={export_dir}"
            )
    return ModelSource(export_dir, run.path)


def load_model(source: ModelSource, *, settings: ServiceSettings) -> tuple[ModelInfo, list[OnnxPredictor]]:
    """Check the export and its model's SHA-256, open one session per worker, and warm each one up.

    Args:
        source: the export to serve.
        settings: the service settings (workers, threads, threshold, pixel limit).

    Returns:
        (the model's `ModelInfo`, one `OnnxPredictor` per inference worker).

    Raises:
        CatsdogsError: for an incomplete or tampered export, a model ONNX Runtime cannot open, or a model
            whose output does not fit its classes.
    """
    contents = read_export(source.export_dir, format_name=ONNX_FORMAT)
    record = _read_record(source.export_dir)
    model_path = contents.export_dir.artifact_path
    model_bytes = model_path.read_bytes()
    # Check the very bytes the sessions are built from, so a file swapped after `read_export` is refused too.
    sha256 = sha256_bytes(model_bytes)
    expected = checksum_path(model_path).read_text(encoding="utf-8").split()[0].lower()
    if sha256 != expected:
        raise CatsdogsError(
            "The ONNX model changed while it was being loaded (its SHA-256 no longer matches), so it is not "
            f"served. Copy the export folder again. Received: path={model_path}, sha256={sha256}"
        )
    max_pixels = min(settings.max_pixels, contents.max_pixels or settings.max_pixels)
    predictors = [
        OnnxPredictor(
            _open_session(model_bytes, threads=settings.session_threads, path=model_path),
            class_names=contents.class_names,
            image_size=contents.image_size,
            threshold=settings.threshold,
            max_pixels=max_pixels,
            min_side=contents.min_side,
            batch_size=settings.max_batch_size,
            test_time_augmentation=contents.test_time_augmentation,
            verified=contents.verified,
        )
        for _ in range(settings.worker_count)
    ]
    for predictor in predictors:
        # Calibration and the "unsure" threshold, when the export carries abstain.json fitted on this model.
        predictor.use_abstain_rule(contents.abstain_rule, contents.abstain_note)
        warm_up(predictor)
    first = predictors[0]
    info = ModelInfo(
        name=_model_name(source),
        architecture=_architecture(source),
        classes=list(contents.class_names),
        image_size=tuple(contents.image_size),
        sha256=sha256,
        format=ONNX_FORMAT,
        precision=_precision(record),
        test_accuracy=_test_accuracy(record, source),
        verified=contents.verified,
        threshold=first.threshold,
        test_time_augmentation=first.test_time_augmentation,
        max_pixels=first.max_pixels,
        min_side=first.min_side,
    )
    return info, predictors


def warm_up(predictor: OnnxPredictor) -> None:
    """Run one call on a blank photo, so the first client does not pay for ONNX Runtime's first-call set-up.

    Raises:
        CatsdogsError: when the model's answer does not have one probability per class.
    """
    height, width = predictor.image_size
    probabilities = predictor.predict_pixels(numpy.zeros((1, height, width, 3), numpy.float32))
    expected = (1, len(predictor.class_names))
    if probabilities.shape != expected:
        raise CatsdogsError(
            f"The model's answer does not fit the export's {len(predictor.class_names)} classes, so it cannot be "
            f"served. Export the run again. Received: output_shape={probabilities.shape}, expected={expected}"
        )


def _open_session(model_bytes, *, threads, path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(threads)
    # Each worker runs one call at a time; inter-op threads would only compete with the other workers.
    options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise CatsdogsError(
            f"ONNX Runtime cannot open the model ({type(error).__name__}: {str(error)[:300]}). Export the run "
            f"again with `catsdogs export RUN`. Received: path={path}"
        ) from None


def _why_not_usable(export_dir, run_sha256, *, require_verified=True):
    """Say why a run's export cannot be served as it is, or return "" when it can."""
    if not export_dir.is_dir():
        return "does not exist"
    try:
        if not is_export_dir(export_dir):
            return "is incomplete"
    except CatsdogsError:
        return "is incomplete"
    record = _read_record(export_dir)
    if require_verified and not record.get("verified", False):
        return "did not pass its check against the Keras model"
    if (record.get("source_model") or {}).get("sha256") != run_sha256:
        return "was made from an earlier model of this run"
    return ""


def _source_run(export_dir):
    """The run folder an export sits in, when its model.keras is the one the export was made from."""
    candidate = export_dir.resolve().parent.parent
    if export_dir.resolve().parent.name != EXPORT_DIR or not (candidate / CONFIG_FILE).is_file():
        return None
    run = RunDir(candidate)
    recorded = (_read_record(export_dir).get("source_model") or {}).get("sha256")
    try:
        current = run.model_checksum_path.read_text(encoding="utf-8").split()[0].lower()
    except (OSError, IndexError):
        return None
    return candidate if recorded and recorded == current else None


def _read_record(export_dir):
    try:
        record = json.loads((Path(export_dir) / EXPORT_RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _run_for(source):
    """The run folder that names the model: the source run, or the run an export folder sits in."""
    if source.run_dir is not None:
        return RunDir(source.run_dir)
    parent = source.export_dir.resolve().parent
    if parent.name == EXPORT_DIR and (parent.parent / CONFIG_FILE).is_file():
        return RunDir(parent.parent)
    return None


def _model_name(source):
    run = _run_for(source)
    return run.path.name if run is not None else source.export_dir.resolve().name


def _architecture(source):
    run = _run_for(source)
    if run is None:
        return None
    try:
        name = run.read_run_info().get("model")
    except (OSError, ValueError):
        return None
    return name if isinstance(name, str) else None


def _precision(record):
    quantize = record.get("quantize", "none")
    return FLOAT_PRECISION if quantize in (None, "none") else str(quantize)


def _test_accuracy(record, source):
    # The export's own accuracy is the served model's (a quantized export's differs from the run's).
    accuracy = (record.get("test") or {}).get("accuracy")
    if isinstance(accuracy, (int, float)):
        return float(accuracy)
    run = _run_for(source)
    if run is None:
        return None
    try:
        accuracy = (run.read_metrics().get("test") or {}).get("accuracy")
    except (OSError, ValueError, AttributeError):
        return None
    return float(accuracy) if isinstance(accuracy, (int, float)) else None
