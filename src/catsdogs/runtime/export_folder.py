"""Reading an export folder without TensorFlow: is this an export, is it complete, what does it say.

An export folder (made by `catsdogs export`; file names from `runs.ExportDir`)
carries the model with its SHA-256, labels.json, preprocessing.json and
export.json. `is_export_dir` tells it apart from a run folder or a folder of
photos, as `runs.is_run_dir` does for runs; `read_export` checks that nothing
is missing or tampered with before anything in it is trusted; `export_format`
says which format a folder holds, and `open_export_predictor` opens the
predictor that runs it (ONNX or TFLite; a SavedModel needs TensorFlow).
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path

from catsdogs.choices import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLD, EXPORT_FORMATS, default
from catsdogs.errors import CatsdogsError
from catsdogs.fileio import checksum_path, verify_checksum
from catsdogs.runs import EXPORT_ARTIFACT_FILES, EXPORT_RECORD_FILE, PREPROCESSING_FILE, ExportDir

if typing.TYPE_CHECKING:
    from catsdogs.runtime.answers import AbstainRule
    from catsdogs.runtime.predictions import ImagePredictor

# The formats this package runs without TensorFlow, and the module and class of each predictor.
RUNTIME_PREDICTORS = {
    "onnx": ("catsdogs.runtime.onnx_predictor", "OnnxPredictor"),
    "tflite": ("catsdogs.runtime.tflite_predictor", "TflitePredictor"),
}


@dataclasses.dataclass(frozen=True)
class ExportContents:
    """What an export folder says about its model.

    Attributes:
        export_dir: the folder and the paths of its files.
        class_names: class names in label order (labels.json).
        image_size: (height, width) the model takes (preprocessing.json).
        max_pixels: largest accepted image, or None where preprocessing.json does not record it.
        min_side: smallest accepted image side, or None where preprocessing.json does not record it.
        verified: whether `catsdogs export` found the model in agreement with Keras (export.json).
        test_time_augmentation: the run's `model.test_time_augmentation` (preprocessing.json), or the default
            config's where an older export does not record it.
        precision: float32, float16 or int8 (export.json; float32 where an older export does not record it).
        abstain_rule: the calibration and "unsure" threshold (abstain.json, `runtime.answers`); None without one.
        abstain_note: why abstaining is off, in words, when it is; None when the rule applies.
    """

    export_dir: ExportDir
    class_names: list[str]
    image_size: tuple[int, int]
    max_pixels: int | None
    min_side: int | None
    verified: bool
    test_time_augmentation: bool = False
    precision: str = "float32"
    abstain_rule: AbstainRule | None = None
    abstain_note: str | None = None


def is_export_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is an export folder made by `catsdogs export` (it has preprocessing.json and export.json).

    Raises:
        CatsdogsError: for a folder that has some of an export's own files (the model, preprocessing.json,
            export.json) but not both of preprocessing.json and export.json, so that a partial export is
            reported rather than taken for photos.
    """
    folder = Path(path)
    if not folder.is_dir():
        return False
    markers = (PREPROCESSING_FILE, EXPORT_RECORD_FILE)
    present = [name for name in markers if (folder / name).is_file()]
    # A SavedModel artifact is a folder: it counts only with its checksum beside it, so that a folder of
    # photos with a subfolder that happens to be called saved_model is not taken for an export.
    present += [
        name
        for name in EXPORT_ARTIFACT_FILES.values()
        if (folder / name).is_file() or ((folder / name).is_dir() and checksum_path(folder / name).is_file())
    ]
    missing = [name for name in markers if name not in present]
    if present and missing:
        raise CatsdogsError(
            f"The folder looks like an export (it has {', '.join(present)}) but has no {', '.join(missing)}, so it "
            "cannot be used. Copy the whole export folder, or export again with `catsdogs export RUN`. "
            f"Received: path={folder}, missing={', '.join(missing)}"
        )
    return not missing


def read_export(path: str | os.PathLike, *, format_name: str) -> ExportContents:
    """Check an export folder and its model's SHA-256, then read its labels, preprocessing and record.

    Args:
        path: the export folder, e.g. RUN/export/onnx/.
        format_name: the format the caller can run, e.g. "onnx".

    Returns:
        The folder's `ExportContents`.

    Raises:
        CatsdogsError: if the folder does not exist or lacks a file (the error names it), holds another
            format, has a model that fails its SHA-256 check, or has unreadable or inconsistent labels.json
            or preprocessing.json.
    """
    export_dir = ExportDir(path, format_name=format_name)
    # Another format's folder lacks this format's model file: say so before calling the folder incomplete.
    if export_dir.record_path.is_file():
        recorded = _read_json(export_dir.record_path, expected="an object", kind=dict).get("format", format_name)
        if recorded != format_name:
            raise CatsdogsError(
                f"This export is not in the {format_name} format this predictor runs. Open it with "
                f"`runtime.open_export_predictor`, which picks the predictor by format, or export the run with "
                f"`catsdogs export RUN --format {format_name}`. Received: path={export_dir.path}, format={recorded}"
            )
    _check_complete(export_dir)
    record = _read_json(export_dir.record_path, expected="an object", kind=dict)
    verify_checksum(export_dir.artifact_path, what=f"{format_name} model")
    class_names = _read_labels(export_dir)
    preprocessing = _read_json(export_dir.preprocessing_path, expected="an object", kind=dict)
    if preprocessing.get("labels", class_names) != class_names:
        raise CatsdogsError(
            f"The export's {export_dir.labels_path.name} and {export_dir.preprocessing_path.name} name different "
            f"classes, so it is unclear what the model answers. Copy the export folder again or export again. "
            f"Received: labels={class_names}, preprocessing_labels={preprocessing.get('labels')}"
        )
    from catsdogs.runtime.answers import read_abstain_rule

    source = record.get("source_model")
    abstain_rule, abstain_note = read_abstain_rule(
        export_dir.abstain_path,
        class_names=class_names,
        model_sha256=source.get("sha256") if isinstance(source, dict) else None,
        where="export",
    )
    return ExportContents(
        export_dir=export_dir,
        class_names=class_names,
        image_size=_read_image_size(export_dir, preprocessing),
        max_pixels=preprocessing.get("max_pixels"),
        min_side=preprocessing.get("min_side"),
        verified=bool(record.get("verified", False)),
        test_time_augmentation=_read_test_time_augmentation(export_dir, preprocessing),
        precision=str(record.get("precision", "float32")),
        abstain_rule=abstain_rule,
        abstain_note=abstain_note,
    )


def abstain_setting(contents: ExportContents, abstain: bool = True) -> tuple[AbstainRule | None, str | None]:
    """The (rule, note) a predictor of this export uses: the export's rule, or none with why not.

    Args:
        contents: what `read_export` read.
        abstain: False when the caller asked for the plain label.
    """
    from catsdogs.runtime.answers import OFF_BY_REQUEST

    if not abstain:
        return None, OFF_BY_REQUEST
    # A rule that certified no threshold still calibrates; it never abstains, and the note says why.
    return contents.abstain_rule, contents.abstain_note


def export_format(path: str | os.PathLike) -> str:
    """Return the format an export folder holds, as its export.json records it ("onnx", "tflite", ...).

    Raises:
        CatsdogsError: if export.json is missing or unreadable, or names no format catsdogs knows.
    """
    record_path = Path(path) / EXPORT_RECORD_FILE
    if not record_path.is_file():
        raise CatsdogsError(
            f"The export folder has no {EXPORT_RECORD_FILE}, so its format is unknown. Copy the whole export "
            f"folder, or export again with `catsdogs export RUN`. Received: path={path}"
        )
    format_name = _read_json(record_path, expected="an object", kind=dict).get("format")
    if format_name not in EXPORT_FORMATS:
        raise CatsdogsError(
            f"The export's {EXPORT_RECORD_FILE} names no format catsdogs knows. Expected one of "
            f"{', '.join(EXPORT_FORMATS)}; export again with `catsdogs export RUN`. "
            f"Received: path={path}, format={format_name!r}"
        )
    return format_name


def open_export_predictor(
    path: str | os.PathLike,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = DEFAULT_BATCH_SIZE,
    test_time_augmentation: bool | None = None,
    abstain: bool = True,
) -> ImagePredictor:
    """Open the predictor that runs an export folder's format: `OnnxPredictor` or `TflitePredictor`.

    Args:
        path: the export folder, e.g. RUN/export/onnx/ or RUN/export/tflite-int8/.
        threshold: for two classes, the probability of the second class at or above which it is predicted.
        batch_size: images per model call.
        test_time_augmentation: also average over the mirror image of each photo; None takes the export's
            recorded setting.
        abstain: answer "unsure" where the export's abstain.json says so; False gives the plain label.

    Returns:
        The predictor, checked as its `from_export_dir` checks it.

    Raises:
        CatsdogsError: for a SavedModel export (it needs TensorFlow, which this package never imports), and
            for everything the predictor's `from_export_dir` refuses.
    """
    import importlib

    format_name = export_format(path)
    if format_name not in RUNTIME_PREDICTORS:
        raise CatsdogsError(
            f"A {format_name} export runs in TensorFlow (`tf.saved_model.load(path)`), and catsdogs predicts "
            f"exports without TensorFlow. Export the run with `catsdogs export RUN --format onnx` or "
            f"`--format tflite` to predict with catsdogs. Received: path={path}, format={format_name}"
        )
    module_name, class_name = RUNTIME_PREDICTORS[format_name]
    predictor_class = getattr(importlib.import_module(module_name), class_name)
    return predictor_class.from_export_dir(
        path,
        threshold=threshold,
        batch_size=batch_size,
        test_time_augmentation=test_time_augmentation,
        abstain=abstain,
    )


def _check_complete(export_dir):
    """Refuse a missing folder, or one that lacks any file of a complete export, naming what is missing."""
    if not export_dir.path.is_dir():
        raise CatsdogsError(
            f"The export folder does not exist. Make one with `catsdogs export RUN --format {export_dir.format_name}`; "
            f"it is written to RUN/export/{export_dir.format_name}[-<quantize>]/. Received: path={export_dir.path}"
        )
    missing = export_dir.missing_files()
    if missing:
        raise CatsdogsError(
            f"The export folder is incomplete: it has no {', '.join(missing)}, so the model cannot be trusted or "
            f"fed. Copy the whole export folder, or export again with `catsdogs export RUN --format "
            f"{export_dir.format_name}`. "
            f"Received: path={export_dir.path}, missing={', '.join(missing)}"
        )


def _read_json(path, *, expected, kind):
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CatsdogsError(
            f"The export's {Path(path).name} cannot be read as JSON. Copy the export folder again or export again. "
            f"Received: path={path}, error={error}"
        ) from None
    if not isinstance(value, kind):
        raise CatsdogsError(
            f"The export's {Path(path).name} should hold {expected}. Copy the export folder again or export again. "
            f"Received: path={path}, type={type(value).__name__}"
        )
    return value


def _read_labels(export_dir):
    class_names = _read_json(export_dir.labels_path, expected="a list of class names", kind=list)
    if len(class_names) < 2 or not all(isinstance(name, str) for name in class_names):
        raise CatsdogsError(
            f"The export's {export_dir.labels_path.name} should list at least two class names in label order, "
            f'e.g. ["cats", "dogs"]. Copy the export folder again or export again. Received: labels={class_names}'
        )
    return class_names


def _read_test_time_augmentation(export_dir, preprocessing):
    # Exports made before the setting was recorded take the default config's, as a run's config would.
    setting = preprocessing.get("test_time_augmentation", default("model.test_time_augmentation"))
    if not isinstance(setting, bool):
        raise CatsdogsError(
            f"The export's {export_dir.preprocessing_path.name} should give test_time_augmentation as true or "
            f"false. Copy the export folder again or export again. Received: test_time_augmentation={setting!r}"
        )
    return setting


def _read_image_size(export_dir, preprocessing):
    image_size = preprocessing.get("image_size")
    valid = (
        isinstance(image_size, list)
        and len(image_size) == 2
        and all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in image_size)
    )
    if not valid:
        raise CatsdogsError(
            f"The export's {export_dir.preprocessing_path.name} should give the model's image size as [height, "
            f"width], e.g. [180, 180]. Copy the export folder again or export again. Received: image_size={image_size}"
        )
    return tuple(image_size)
