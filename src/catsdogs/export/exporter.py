"""`export_run`: turn a run's model into a verified, inference-only artifact in its own folder.

The export folder (RUN/export/<format>/ by default; file names from
`runs.ExportDir`) holds the artifact with its SHA-256, labels.json,
preprocessing.json (everything a client needs to feed the model) and
export.json (the verification against Keras, sizes, speeds and versions).
It is built in a temporary folder beside its destination and moved into
place with `os.replace`, so an interrupted export leaves nothing half-written
under the real name. An export that misses its bounds is still written, marked
`"verified": false`, so its numbers can be inspected.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import shutil
import tempfile
import time
import typing
from collections.abc import Sequence
from pathlib import Path

from catsdogs.choices import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLD, EXPORT_FORMATS
from catsdogs.errors import CatsdogsError
from catsdogs.fileio import atomic_write_json, checksum_path, write_checksum
from catsdogs.runs import LABELS_FILE, MODEL_FILE, ExportDir, RunDir

if typing.TYPE_CHECKING:
    import onnxruntime

# The formats of `choices.EXPORT_FORMATS` that are built so far.
BUILT_FORMATS = ("onnx",)


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
        f"Unknown export format.{hint} Expected one of {', '.join(EXPORT_FORMATS)} (working today: {built}). "
        f"Received: format={format_name}"
    )


def export_run(
    run_dir: str | os.PathLike,
    *,
    format_name: str = "onnx",
    out_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threshold: float = DEFAULT_THRESHOLD,
) -> ExportResult:
    """Export a run's verified model, check it against Keras on the validation split, and write its folder.

    Args:
        run_dir: the run folder made by `catsdogs train`.
        format_name: one of `BUILT_FORMATS`.
        out_dir: the export folder to write; default RUN/export/<format>/. An existing export there is replaced.
        data_dir: the prepared folder whose validation (and test) split checks the export; default the
            run's own data folder, as recorded in run.json.
        batch_size: images per model call while checking.
        threshold: the decision threshold on P(class 1) under which labels are compared (two classes).

    Returns:
        An `ExportResult`; `result.verified` is False when the export missed its bounds (it is written anyway).

    Raises:
        CatsdogsError: for an unknown or unbuilt format, an incomplete run folder, a model that fails its
            SHA-256 check, a missing data folder or validation split, or an `out_dir` that holds other files.
    """
    from catsdogs.config import config_from_dict
    from catsdogs.fileio import verify_checksum
    from catsdogs.models.saving import load_model

    check_export_format(format_name)
    run = _open_complete_run(run_dir)
    data_dir = _resolve_data_dir(run, data_dir)
    class_names = run.read_labels()
    config = config_from_dict(run.read_config())
    data_config = config.data
    image_size = tuple(data_config.image_size)
    source_model_sha256 = verify_checksum(run.model_path, what="model")
    model = load_model(run.model_path)
    destination = Path(out_dir) if out_dir is not None else run.export_dir(format_name)
    _check_destination(destination, format_name)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.tmp-"))
    try:
        building = ExportDir(temporary, format_name=format_name)
        record = _build(
            building,
            model,
            class_names=class_names,
            image_size=image_size,
            source_model_sha256=source_model_sha256,
            data_dir=data_dir,
            batch_size=batch_size,
            threshold=threshold,
            limits={"max_pixels": data_config.max_pixels, "min_side": data_config.min_side},
            test_time_augmentation=config.model.test_time_augmentation,
        )
        # mkdtemp makes the folder private (0700); an export is meant to be copied and shared.
        os.chmod(temporary, 0o777 & ~_current_umask())
        _move_into_place(temporary, destination)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _rewrite_report(run, destination)
    return ExportResult(ExportDir(destination, format_name=format_name), record)


def _build(
    export_dir,
    model,
    *,
    class_names,
    image_size,
    source_model_sha256,
    data_dir,
    batch_size,
    threshold,
    limits,
    test_time_augmentation,
):
    """Write the artifact and its files into `export_dir`, verify it, and return export.json's contents."""
    import keras

    from catsdogs import __version__
    from catsdogs.export import onnx as onnx_format
    from catsdogs.export import verify
    from catsdogs.runtime.onnx_predictor import open_session

    onnx_format.export_onnx(
        model,
        export_dir.artifact_path,
        image_size=image_size,
        class_names=class_names,
        source_model_sha256=source_model_sha256,
    )
    artifact_sha256 = write_checksum(export_dir.artifact_path)
    atomic_write_json(export_dir.labels_path, list(class_names))
    session = open_session(export_dir.artifact_path)
    atomic_write_json(
        export_dir.preprocessing_path,
        preprocessing_description(
            session,
            image_size=image_size,
            class_names=class_names,
            threshold=threshold,
            limits=limits,
            test_time_augmentation=test_time_augmentation,
        ),
    )

    def artifact(pixels):
        return onnx_format.run_session(session, pixels)

    paths, labels = verify.list_split(Path(data_dir) / "validation", class_names=class_names)
    batches = verify.pixel_batches(paths, labels, image_size=image_size, batch_size=batch_size)
    validation, sample = verify.compare(model, artifact, batches, threshold=threshold)
    validation = {"split": "validation", "unreadable": len(paths) - validation["images"], **validation}
    test = None
    if (Path(data_dir) / "test").is_dir():
        paths, labels = verify.list_split(Path(data_dir) / "test", class_names=class_names)
        batches = verify.pixel_batches(paths, labels, image_size=image_size, batch_size=batch_size)
        test = {"split": "test", **verify.accuracy(artifact, batches, threshold=threshold)}
    reasons = verify.failures(validation)
    record = {
        "format": export_dir.format_name,
        "verified": not reasons,
        "failures": reasons,
        "artifact": export_dir.artifact_path.name,
        "artifact_sha256": artifact_sha256,
        "file_size_bytes": export_dir.artifact_path.stat().st_size,
        "bounds": {
            "label_agreement": verify.FLOAT_LABEL_AGREEMENT,
            "max_probability_difference": verify.FLOAT_MAX_PROBABILITY_DIFFERENCE,
        },
        "validation": validation,
        "test": test,
        "speed": verify.measure_speed(artifact, sample) if sample is not None else None,
        # The run's own setting: `OnnxPredictor.from_export_dir` takes it from here unless told otherwise.
        "test_time_augmentation": bool(test_time_augmentation),
        "data_dir": str(Path(data_dir).resolve()),
        "source_model": {"file": MODEL_FILE, "sha256": source_model_sha256},
        "versions": {"catsdogs": __version__, "keras": keras.__version__, **_runtime_versions()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_json(export_dir.record_path, record)
    return record


def preprocessing_description(
    session: onnxruntime.InferenceSession,
    *,
    image_size: Sequence[int],
    class_names: Sequence[str],
    threshold: float,
    limits: dict,
    test_time_augmentation: bool = False,
) -> dict:
    """Return preprocessing.json: everything a client outside catsdogs needs to feed the model and read it.

    Args:
        session: the artifact's ONNX Runtime session (for its input and output names and shapes).
        image_size: (height, width).
        class_names: class names in label order.
        threshold: the decision threshold on P(class 1) used for two classes.
        limits: {"max_pixels", "min_side"}: the images the run accepts, as `prepare` checked its photos.
        test_time_augmentation: the run's `model.test_time_augmentation`: whether its predictions average
            each image with its mirror image.
    """
    height, width = (int(side) for side in image_size)
    model_input, model_output = session.get_inputs()[0], session.get_outputs()[0]
    two_classes = len(class_names) == 2
    return {
        "image_size": [height, width],
        # Larger or smaller images are refused, as the run's own `predict` refuses them.
        "max_pixels": int(limits["max_pixels"]),
        "min_side": int(limits["min_side"]),
        "input": {
            "name": model_input.name,
            "shape": [None, height, width, 3],
            "dtype": "float32",
            "layout": "NHWC",
            "channel_order": "RGB",
            "value_range": [0, 255],
            "scaling": "none: the model rescales inside itself, so feed the 0..255 values as they are",
        },
        "decode": (
            "8-bit RGB: EXIF rotation applied, CMYK and grayscale converted to RGB, transparency composited on "
            "white, the first frame of an animation (catsdogs.images.clean_image_bytes); training decodes JPEG "
            "with libjpeg's fast integer DCT (TensorFlow's default), and a decoder with the accurate DCT "
            "(Pillow) differs by up to 4 of 255 levels per value (docs/benchmarks.md)"
        ),
        "resize": {
            "method": "bilinear",
            "half_pixel_centers": True,
            "antialias": True,
            "aspect_ratio": "not kept: the image is stretched to height x width",
            "rounding": "round to the nearest integer and clip to 0..255 (uint8), then convert to float32",
            "reference": "tf.image.resize(image, [height, width], method='bilinear', antialias=True)",
        },
        "output": {
            "name": model_output.name,
            "shape": [None, 1 if two_classes else len(class_names)],
            "meaning": (
                f"the sigmoid probability of class 1 ({class_names[1]!r}); class 0 has 1 - p"
                if two_classes
                else "softmax probabilities, one per class in labels order"
            ),
        },
        "decision": (
            f"class 1 when its probability is at least {threshold}, else class 0"
            if two_classes
            else "the most probable class"
        ),
        "threshold": threshold if two_classes else None,
        "test_time_augmentation": bool(test_time_augmentation),
        "test_time_augmentation_method": (
            "when true, run the model on the image and on its mirror image (flipped left to right, along the "
            "width axis) and average the two outputs before deciding; twice the model calls"
        ),
        "labels": list(class_names),
    }


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
    for name in ("onnxruntime", "onnx", "tf2onnx", "tensorflow"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return versions
