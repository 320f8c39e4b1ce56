"""Reading an export folder without TensorFlow: is this an export, is it complete, what does it say.

An export folder (made by `catsdogs export`; file names from `runs.ExportDir`)
carries the model with its SHA-256, labels.json, preprocessing.json and
export.json. `is_export_dir` tells it apart from a run folder or a folder of
photos, as `runs.is_run_dir` does for runs; `read_export` checks that nothing
is missing or tampered with before anything in it is trusted.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from catsdogs.choices import default
from catsdogs.errors import CatsdogsError
from catsdogs.fileio import verify_checksum
from catsdogs.runs import EXPORT_ARTIFACT_FILES, EXPORT_RECORD_FILE, PREPROCESSING_FILE, ExportDir


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
    """

    export_dir: ExportDir
    class_names: list[str]
    image_size: tuple[int, int]
    max_pixels: int | None
    min_side: int | None
    verified: bool
    test_time_augmentation: bool = False


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
    present = [name for name in (*markers, *EXPORT_ARTIFACT_FILES.values()) if (folder / name).is_file()]
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
    _check_complete(export_dir)
    record = _read_json(export_dir.record_path, expected="an object", kind=dict)
    if record.get("format", format_name) != format_name:
        raise CatsdogsError(
            f"This export is not in the {format_name} format this predictor runs. Export the run with "
            f"`catsdogs export RUN --format {format_name}`. Received: path={export_dir.path}, "
            f"format={record.get('format')}"
        )
    verify_checksum(export_dir.artifact_path, what=f"{format_name} model")
    class_names = _read_labels(export_dir)
    preprocessing = _read_json(export_dir.preprocessing_path, expected="an object", kind=dict)
    if preprocessing.get("labels", class_names) != class_names:
        raise CatsdogsError(
            f"The export's {export_dir.labels_path.name} and {export_dir.preprocessing_path.name} name different "
            f"classes, so it is unclear what the model answers. Copy the export folder again or export again. "
            f"Received: labels={class_names}, preprocessing_labels={preprocessing.get('labels')}"
        )
    return ExportContents(
        export_dir=export_dir,
        class_names=class_names,
        image_size=_read_image_size(export_dir, preprocessing),
        max_pixels=preprocessing.get("max_pixels"),
        min_side=preprocessing.get("min_side"),
        verified=bool(record.get("verified", False)),
        test_time_augmentation=_read_test_time_augmentation(export_dir, preprocessing),
    )


def _check_complete(export_dir):
    """Refuse a missing folder, or one that lacks any file of a complete export, naming what is missing."""
    if not export_dir.path.is_dir():
        raise CatsdogsError(
            f"The export folder does not exist. Make one with `catsdogs export RUN --format {export_dir.format_name}`; "
            f"it is written to RUN/export/{export_dir.format_name}/. Received: path={export_dir.path}"
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
