"""`export_run`: turn a run's model into a verified, inference-only artifact in its own folder.

The export folder (RUN/export/<format>/, or <format>-<quantize>/ when quantized,
by default; file names from `runs.ExportDir`) holds the artifact with its
SHA-256, labels.json, preprocessing.json (everything a client needs to feed
the model) and export.json (the verification against Keras, precision and
quantization settings, sizes, speeds and versions). The per-format writers are
in `export.formats`, the checks in `export.verify`. The folder is built in a
temporary folder beside its destination and moved into place with
`os.replace`, so an interrupted export leaves nothing half-written under the
real name. An export that misses its bounds is still written, marked
`"verified": false`, so its numbers can be inspected.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from catsdogs.choices import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_THRESHOLD,
    EXPORT_CALIBRATION_IMAGES,
    EXPORT_FORMATS,
    EXPORT_QUANTIZATIONS,
)
from catsdogs.errors import CatsdogsError
from catsdogs.fileio import atomic_write_json, checksum_path, write_checksum
from catsdogs.runs import LABELS_FILE, MODEL_FILE, ExportDir, RunDir

# The formats of `choices.EXPORT_FORMATS` that are built so far: all of them.
BUILT_FORMATS = ("onnx", "saved_model", "tflite")
# Formats that can be quantized; a SavedModel stays float32 (TensorFlow's quantizers write TFLite).
QUANTIZABLE_FORMATS = ("onnx", "tflite")


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """A finished export.

    Attributes:
        export_dir: the export folder and the paths of its files.
        record: the contents of its export.json.
    """

    export_dir: ExportDir
    record: dict

    @property
    def verified(self) -> bool:
        return bool(self.record["verified"])


def check_export_format(format_name: str) -> str:
    """Return `format_name` if it can be exported now.

    Raises:
        CatsdogsError: for an unknown format (with a did-you-mean) or one that is not built yet.
    """
    if format_name in BUILT_FORMATS:
        return format_name
    built = ", ".join(BUILT_FORMATS)
    if format_name in EXPORT_FORMATS:
        raise CatsdogsError(
            f"The {format_name} export is not built yet; the formats that work today are: {built}. "
            f"Use --format onnx. Received: format={format_name}"
        )
    close = difflib.get_close_matches(str(format_name), EXPORT_FORMATS, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]}?" if close else ""
    raise CatsdogsError(
        f"Unknown export format.{hint} Expected one of {', '.join(EXPORT_FORMATS)}. Received: format={format_name}"
    )


def check_quantize(quantize: str, format_name: str = "onnx") -> str:
    """Return `quantize` if `format_name` can be exported at that precision.

    Raises:
        CatsdogsError: for an unknown quantization (with a did-you-mean), or a quantized SavedModel.
    """
    if quantize not in EXPORT_QUANTIZATIONS:
        close = difflib.get_close_matches(str(quantize), EXPORT_QUANTIZATIONS, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise CatsdogsError(
            f"Unknown quantization.{hint} Expected one of {', '.join(EXPORT_QUANTIZATIONS)}. "
            f"Received: quantize={quantize}"
        )
    if quantize != "none" and format_name not in QUANTIZABLE_FORMATS:
        raise CatsdogsError(
            f"A {format_name} export cannot be quantized: it stays float32, because TensorFlow's post-training "
            f"quantizers write TFLite files, not SavedModels. Drop --quantize, or quantize another format: "
            f"--format tflite --quantize {quantize} or --format onnx --quantize {quantize}. "
            f"Received: format={format_name}, quantize={quantize}"
        )
    return quantize


def export_run(
    run_dir: str | os.PathLike,
    *,
    format_name: str = "onnx",
    quantize: str = "none",
    out_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threshold: float = DEFAULT_THRESHOLD,
    calibration_images: int = EXPORT_CALIBRATION_IMAGES,
) -> ExportResult:
    """Export a run's verified model, check it against Keras, and write its folder.

    Args:
        run_dir: the run folder made by `catsdogs train`.
        format_name: one of `BUILT_FORMATS`.
        quantize: one of `choices.EXPORT_QUANTIZATIONS`: "none" (float32), "int8" or "float16".
        out_dir: the export folder to write; default RUN/export/<format>/ (RUN/export/<format>-<quantize>/
            when quantized). An existing export there is replaced.
        data_dir: the prepared folder whose validation (and test) split checks the export, and whose train
            split calibrates an int8 export; default the run's own data folder, as recorded in run.json.
        batch_size: images per model call while checking.
        threshold: the decision threshold on P(class 1) under which labels are compared (two classes).
        calibration_images: training photos that calibrate an int8 export, balanced over the classes.

    Returns:
        An `ExportResult`; `result.verified` is False when the export missed its bounds (it is written anyway).

    Raises:
        CatsdogsError: for an unknown or unbuilt format, an unknown quantization or one the format cannot take,
            an incomplete run folder, a model that fails its SHA-256 check, a missing data folder or validation
            split (or train split, for int8), a model the format cannot hold, or an `out_dir` that holds other
            files.
    """
    from catsdogs.config import config_from_dict
    from catsdogs.fileio import verify_checksum
    from catsdogs.models.saving import load_model

    check_export_format(format_name)
    check_quantize(quantize, format_name)
    run = _open_complete_run(run_dir)
    data_dir = _resolve_data_dir(run, data_dir)
    class_names = run.read_labels()
    config = config_from_dict(run.read_config())
    data_config = config.data
    image_size = tuple(data_config.image_size)
    source_model_sha256 = verify_checksum(run.model_path, what="model")
    model = load_model(run.model_path)
    destination = Path(out_dir) if out_dir is not None else run.export_dir(format_name, quantize)
    _check_destination(destination, format_name)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.tmp-"))
    try:
        # The float32 model that a quantized one starts from is built beside, never inside, the export.
        with tempfile.TemporaryDirectory(prefix="catsdogs-export-") as workspace:
            record = _build(
                ExportDir(temporary, format_name=format_name),
                model,
                quantize=quantize,
                class_names=class_names,
                image_size=image_size,
                source_model_sha256=source_model_sha256,
                data_dir=data_dir,
                batch_size=batch_size,
                threshold=threshold,
                limits={"max_pixels": data_config.max_pixels, "min_side": data_config.min_side},
                test_time_augmentation=config.model.test_time_augmentation,
                calibration_images=calibration_images,
                workspace=workspace,
                abstain_path=run.abstain_path,
            )
        # mkdtemp makes the folder private (0700); an export is meant to be copied and shared.
        os.chmod(temporary, 0o777 & ~_current_umask())
        _move_into_place(temporary, destination)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _rewrite_report(run, destination)
    return ExportResult(ExportDir(destination, format_name=format_name), record)


def _build(export_dir, model, *, quantize, class_names, image_size, data_dir, batch_size, threshold, **options):
    """Write the artifact and its files into `export_dir`, verify it, and return export.json's contents."""
    import keras

    from catsdogs import __version__
    from catsdogs.export import formats, verify

    calibration = calibration_record = None
    if quantize == "int8":
        calibration, calibration_record = formats.calibration_data(
            data_dir,
            class_names=class_names,
            image_size=image_size,
            count=options["calibration_images"],
            batch_size=batch_size,
        )
    built = formats.build_artifact(
        model,
        export_dir,
        quantize=quantize,
        image_size=image_size,
        class_names=class_names,
        source_model_sha256=options["source_model_sha256"],
        workspace=options["workspace"],
        calibration=calibration,
    )
    artifact_sha256 = write_checksum(export_dir.artifact_path)
    atomic_write_json(export_dir.labels_path, list(class_names))
    atomic_write_json(
        export_dir.preprocessing_path,
        formats.preprocessing_description(
            input_name=built.input_name,
            output_name=built.output_name,
            image_size=image_size,
            class_names=class_names,
            threshold=threshold,
            limits=options["limits"],
            test_time_augmentation=options["test_time_augmentation"],
        ),
    )
    checked = verify.check_export(
        model,
        built.runner,
        data_dir=data_dir,
        class_names=class_names,
        image_size=image_size,
        batch_size=batch_size,
        threshold=threshold,
        float_artifact=built.float_runner,
    )
    if checked["float32"] is not None:
        checked["float32"]["file_size_bytes"] = built.float_file_size_bytes
    settings = dict(built.settings)
    quantization = settings.pop("quantization", None)
    if quantization is not None and calibration_record is not None:
        quantization = {**quantization, "calibration": calibration_record}
    reasons = checked.pop("failures")
    record = {
        "format": export_dir.format_name,
        "quantize": quantize,
        "precision": formats.PRECISIONS[quantize],
        "verified": not reasons,
        "failures": reasons,
        "artifact": export_dir.artifact_path.name,
        "artifact_sha256": artifact_sha256,
        "file_size_bytes": _size_bytes(export_dir.artifact_path),
        **checked,
        "quantization": quantization,
        "writer": settings,
        # The run's own setting: the runtime predictors take it from here unless told otherwise.
        "test_time_augmentation": bool(options["test_time_augmentation"]),
        "data_dir": str(Path(data_dir).resolve()),
        "source_model": {"file": MODEL_FILE, "sha256": options["source_model_sha256"]},
        "versions": {"catsdogs": __version__, "keras": keras.__version__, **_runtime_versions()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_json(export_dir.record_path, record)
    _copy_abstain_rule(options.get("abstain_path"), export_dir, options["source_model_sha256"])
    return record


def _copy_abstain_rule(abstain_path, export_dir, source_model_sha256):
    """Copy the run's abstain.json (`runtime.answers`) into the export when it was fitted on this very model."""
    if abstain_path is None or not Path(abstain_path).is_file():
        return
    try:
        rule = json.loads(Path(abstain_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # The runtime says abstaining is off; `catsdogs evaluate` writes a fresh one.
    if isinstance(rule, dict) and rule.get("source_model_sha256") == source_model_sha256:
        shutil.copyfile(abstain_path, export_dir.abstain_path)


def _size_bytes(path):
    """The size of a file, or the total size of the files in a folder (a SavedModel)."""
    path = Path(path)
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size


def _rewrite_report(run, destination):
    """Render the run's report.html again, so that its Deployment section lists the new export."""
    from catsdogs.report import write_report

    # The report lists only the exports inside the run folder; one written elsewhere with --out
    # leaves the report as it was, and a run folder that may be read-only is not written to.
    if destination.resolve().is_relative_to(run.path.resolve()):
        write_report(run)


def _open_complete_run(run_dir):
    """Open a run folder and check that it has every file an export needs, naming the missing ones."""
    run = RunDir.open(run_dir)
    needed = (run.labels_path, run.model_path, checksum_path(run.model_path))
    missing = [path.name for path in needed if not path.is_file()]
    if missing:
        raise CatsdogsError(
            f"The run folder is incomplete: it has no {', '.join(missing)}, so there is nothing trustworthy to "
            f"export. Expected {LABELS_FILE}, {MODEL_FILE} and its .sha256 from a finished `catsdogs train`; copy "
            f"the whole run folder or train again. Received: path={run.path}, missing={', '.join(missing)}"
        )
    return run


def _resolve_data_dir(run, data_dir):
    recorded = run.read_run_info().get("data_dir")
    chosen = Path(data_dir) if data_dir is not None else Path(recorded) if recorded else None
    if chosen is None:
        raise CatsdogsError(
            "The export is verified on the run's validation split, but the run folder does not record its data "
            f"folder. Pass the prepared folder with --data DIR. Received: run={run.path}"
        )
    if not (chosen / "validation").is_dir():
        what = "does not exist" if not chosen.is_dir() else "has no validation split"
        raise CatsdogsError(
            f"The data folder {what}, so the export cannot be checked against the Keras model. Pass a folder "
            f"made by `catsdogs prepare` (with a validation split and the run's classes) with --data DIR. "
            f"Received: data_dir={chosen}"
        )
    return chosen


def _check_destination(destination, format_name):
    # Replacing a folder deletes it: only an earlier export (or nothing) may stand where the export goes.
    if not destination.exists():
        return
    earlier = ExportDir(destination, format_name=format_name)
    if destination.is_dir() and (not any(destination.iterdir()) or earlier.record_path.is_file()):
        return
    raise CatsdogsError(
        "The output folder already holds something that is not an export, and exporting would replace it. "
        f"Pass --out a new or empty folder. Received: out={destination}"
    )


def _move_into_place(temporary, destination):
    """Put the finished folder at `destination`, replacing an earlier export there."""
    if not destination.exists():
        os.replace(temporary, destination)
        return
    # A folder cannot be renamed over a non-empty one, so the old export steps aside first.
    old = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.old-"))
    os.replace(destination, old / destination.name)
    try:
        os.replace(temporary, destination)
    except BaseException:
        # Put the earlier export back rather than leave no export at all.
        os.replace(old / destination.name, destination)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _current_umask():
    # The only way to read the umask is to set it; put it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _runtime_versions():
    versions = {}
    for name in ("onnxruntime", "onnx", "tf2onnx", "tensorflow", "ai_edge_litert"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return versions
