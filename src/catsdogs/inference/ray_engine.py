"""`catsdogs predict MODEL SOURCE --engine ray`: label a photo collection with Ray Data, on one machine or many.

The photos' paths form a Ray dataset (`ray.data.from_items`; URIs are read by
`ray.data.read_binary_files(..., include_paths=True)`), labelled in `map_batches` by an actor pool of
`runtime.ray_workers.PhotoPredictor` (one actor per cluster CPU, each opening the ONNX model once and
reading its photos) and streamed back to the driver, which writes one Parquet or CSV file with a row per
photo. A photo that cannot be read or used is an error row with its reason, as in single-process
`predict`; it never fails the job.

The model is always ONNX, run by ONNX Runtime through the same `OnnxPredictor` and the same image path
(`runtime.load_pixels`) as single-process `predict`, so both give the same labels and probabilities:

- an ONNX export folder (`catsdogs export RUN`) is used as it is;
- a run folder uses its verified float32 `export/onnx` of this very model.keras (the rule of
  `inference.engines`), and otherwise its model is converted to ONNX here and checked against Keras on a
  seeded batch; a conversion that disagrees stops the job (`--engine ray` never falls back to Keras,
  which the workers do not have).

The driver reads the model once and puts its bytes in Ray's object store, so the workers need catsdogs
with the base install and the `scale` extra, and the photos at the same path (or URI), nothing else.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy

from catsdogs.choices import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLD
from catsdogs.errors import CatsdogsError
from catsdogs.runtime.agreement import agrees, relative_difference
from catsdogs.runtime.predictions import Prediction, check_threshold
from catsdogs.runtime.ray_workers import (
    PhotoPredictor,
    PredictorSpec,
    cluster_cpus,
    connect,
    import_ray,
    list_photo_files,
    map_with_actors,
    prediction_table,
    quiet_progress,
    read_photo_files,
)

WHAT = "`catsdogs predict --engine ray`"
OUTPUT_FORMATS = {".parquet": "parquet", ".csv": "csv"}
# Images of the seeded batch that a converted model must agree on with Keras, as `inference.engines` checks.
CHECK_IMAGES = 4


@dataclasses.dataclass(frozen=True)
class RayModel:
    """The model the actors run: a `PredictorSpec` (model bytes still in memory) and where it came from."""

    spec: PredictorSpec
    description: str
    verified: bool = True


@dataclasses.dataclass(frozen=True)
class RayPredictionSummary:
    """What `predict_with_ray` did: the output file, its row counts, the model, the actors and the times.

    `start_seconds` is the time to start or join the cluster; `seconds` the job's, from reading the first
    photo to the output file in place.
    """

    output: Path
    inputs: int
    predicted: int
    failed: int
    model: str
    actors: int
    start_seconds: float
    seconds: float


def output_format(output: str | os.PathLike | None) -> str:
    """Return "parquet" or "csv" from the output file's extension.

    Raises:
        CatsdogsError: when there is no output file, or its extension is neither.
    """
    suffix = Path(output).suffix.lower() if output else ""
    if suffix not in OUTPUT_FORMATS:
        raise CatsdogsError(
            f"{WHAT} writes one row per photo to a file: pass --output FILE.parquet or --output FILE.csv "
            f"(its extension picks the format). Received: output={output}"
        )
    return OUTPUT_FORMATS[suffix]


def open_ray_model(
    path: str | os.PathLike,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = DEFAULT_BATCH_SIZE,
    test_time_augmentation: bool | None = None,
) -> RayModel:
    """Read the ONNX model and its image settings from an export folder or a run folder (module docstring).

    Args:
        path: an ONNX export folder, or a run folder made by `catsdogs train`.
        threshold: for two classes, the probability of the second class at or above which it is predicted.
        batch_size: images per model call.
        test_time_augmentation: average over each photo and its mirror image; None takes the model's setting.

    Returns:
        A `RayModel`.

    Raises:
        CatsdogsError: for a folder that is neither, an export in another format than ONNX, a model that fails
            its SHA-256 check, or a converted model that disagrees with Keras.
    """
    from catsdogs.runs import is_run_dir
    from catsdogs.runtime.export_folder import export_format, is_export_dir, read_export

    check_threshold(threshold)
    if is_export_dir(path):
        format_name = export_format(path)
        if format_name != "onnx":
            raise CatsdogsError(
                f"{WHAT} runs ONNX models, and this export holds a {format_name} model. Export the run with "
                f"`catsdogs export RUN --format onnx` and pass RUN/export/onnx, or pass the run folder itself. "
                f"Received: path={path}, format={format_name}"
            )
        contents = read_export(path, format_name="onnx")
        spec = PredictorSpec(
            model=contents.export_dir.artifact_path.read_bytes(),
            class_names=tuple(contents.class_names),
            image_size=tuple(contents.image_size),
            threshold=threshold,
            max_pixels=contents.max_pixels,
            min_side=contents.min_side,
            batch_size=batch_size,
            test_time_augmentation=(
                contents.test_time_augmentation if test_time_augmentation is None else bool(test_time_augmentation)
            ),
        )
        return RayModel(spec, f"the export's model.onnx ({path})", verified=contents.verified)
    if is_run_dir(path):
        return _run_model(
            path, threshold=threshold, batch_size=batch_size, test_time_augmentation=test_time_augmentation
        )
    raise CatsdogsError(
        f"{WHAT} needs a run folder made by `catsdogs train` or an ONNX export folder made by `catsdogs export` "
        f"as its first argument (the zero-shot model runs in Keras only). Received: path={path}"
    )


def _run_model(path, *, threshold, batch_size, test_time_augmentation):
    """A run folder's model as ONNX: its verified export when it fits, else converted and checked here."""
    from catsdogs.config import config_from_dict
    from catsdogs.fileio import verify_checksum
    from catsdogs.inference.engines import _open_run_export
    from catsdogs.runs import ExportDir, RunDir

    run_dir = RunDir.open(path)
    config = config_from_dict(run_dir.read_config())
    image_size = tuple(config.data.image_size)
    model_sha256 = verify_checksum(run_dir.model_path, what="model")
    session, reason = _open_run_export(run_dir, image_size=image_size, model_sha256=model_sha256)
    if session is not None:
        model_bytes = ExportDir(run_dir.export_dir("onnx"), format_name="onnx").artifact_path.read_bytes()
        description = reason
    else:
        model_bytes, difference = convert_to_onnx(run_dir.model_path, image_size)
        description = (
            f"{reason}, so the model was converted to ONNX and agrees with Keras on a seeded batch (relative "
            f"difference {difference:.1g}); `catsdogs export RUN` saves the conversion"
        )
    spec = PredictorSpec(
        model=model_bytes,
        class_names=tuple(run_dir.read_labels()),
        image_size=image_size,
        threshold=threshold,
        max_pixels=config.data.max_pixels,
        min_side=config.data.min_side,
        batch_size=batch_size,
        test_time_augmentation=(
            config.model.test_time_augmentation if test_time_augmentation is None else bool(test_time_augmentation)
        ),
    )
    return RayModel(spec, description)


def convert_to_onnx(model_path: str | os.PathLike, image_size: Sequence[int]) -> tuple[bytes, float]:
    """Convert a run's model.keras to ONNX bytes and check it against Keras on `CHECK_IMAGES` seeded images.

    Returns:
        (the ONNX model's bytes, the relative difference from Keras).

    Raises:
        CatsdogsError: when the conversion fails or disagrees with Keras (`runtime.agreement`'s rule).
    """
    from catsdogs.models.saving import load_model
    from catsdogs.runtime.ray_workers import open_session_from_bytes

    model = load_model(model_path, verify=False)
    pixels = numpy.random.default_rng(0).uniform(0.0, 255.0, (CHECK_IMAGES, *image_size, 3)).astype(numpy.float32)
    with tempfile.TemporaryDirectory(prefix="catsdogs-ray-") as folder:
        onnx_path = Path(folder) / "model.onnx"
        try:
            # Keras exports a model only after it has been called once.
            expected = numpy.asarray(model.predict_on_batch(pixels))
            model.export(str(onnx_path), format="onnx", verbose=False)
            model_bytes = onnx_path.read_bytes()
        except Exception as error:  # The converter raises many types; the message names the fix.
            raise CatsdogsError(
                f"{WHAT} runs ONNX models, and converting this run's model to ONNX failed. Export it with "
                f"`catsdogs export RUN` to see why, or predict without --engine ray. "
                f"Received: path={model_path}, error={type(error).__name__}: {error}"
            ) from None
    session = open_session_from_bytes(model_bytes, threads=1)
    difference = relative_difference(expected, session.run(None, {session.get_inputs()[0].name: pixels})[0])
    if not agrees(difference):
        raise CatsdogsError(
            f"{WHAT} runs ONNX models, and this run's model converted to ONNX differs from Keras by "
            f"{difference:.2g} (relative) on a seeded batch. Predict without --engine ray (Keras runs it), and "
            f"report the model if it persists. Received: path={model_path}, difference={difference:.3g}"
        )
    return model_bytes, difference


def split_sources(patterns: Sequence[str]) -> tuple[list[str], list[str], list[Prediction]]:
    """Return (local files, URIs, error rows): local patterns expanded as single-process `predict` does.

    Files, folders (recursively, photo extensions only, hidden files skipped) and globs on this machine are
    expanded here, so both engines read the same files; a pattern that names nothing becomes an error row.
    A URI (`s3://bucket/photos/`) is listed by Ray Data itself, keeping the photo extensions.
    """
    from catsdogs.inference.files import expand_inputs

    uris = [str(pattern) for pattern in patterns if "://" in str(pattern)]
    entries = expand_inputs([pattern for pattern in patterns if "://" not in str(pattern)])
    files = [os.path.abspath(entry) for entry in entries if isinstance(entry, str)]
    return files, uris, [entry for entry in entries if isinstance(entry, Prediction)]


def predict_with_ray(
    model: RayModel,
    patterns: Sequence[str],
    *,
    output: str | os.PathLike,
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int | None = None,
    progress: bool = False,
) -> RayPredictionSummary:
    """Label every photo that `patterns` name on a Ray cluster and write one row per photo to `output`.

    Args:
        model: from `open_ray_model`.
        patterns: files, folders, globs, or URIs Ray Data reads (s3://, gs://, ...).
        output: FILE.parquet or FILE.csv, written atomically (columns of `predict --format csv`; the file
            column holds absolute paths, in the order the actors finish).
        address: the cluster to join; None starts a local one (see `runtime.ray_workers.connect`).
        num_cpus: CPUs of a local cluster; default every CPU this process may use.
        actors: actors in the pool, one CPU each; default one per CPU of the cluster.
        progress: show Ray Data's progress (off: Ray's warnings and errors only).

    Returns:
        A `RayPredictionSummary`.

    Raises:
        CatsdogsError: when Ray is not installed, the cluster cannot be reached, or the output is not
            .parquet or .csv.
    """
    file_format = output_format(output)
    files, uris, error_rows = split_sources(patterns)
    ray = import_ray(WHAT)
    clock = time.monotonic()
    started = connect(address, num_cpus=num_cpus, what=WHAT)
    start_seconds = time.monotonic() - clock
    quiet_progress(progress)
    clock = time.monotonic()
    try:
        size = actors or cluster_cpus()
        spec = dataclasses.replace(model.spec, model=ray.put(model.spec.model), threads=1)
        batches = [
            map_with_actors(
                photos, PhotoPredictor, spec, batch_size=spec.batch_size, actors=size, what=WHAT
            ).iter_batches(batch_size=None, batch_format="pyarrow")
            for photos in _photo_datasets(files, uris, batch_size=spec.batch_size, actors=size)
        ]
        # Streamed: the driver holds one block of rows at a time, whatever the number of photos.
        tables = itertools.chain(*batches, [prediction_table(error_rows, model.spec.class_names)])
        inputs, failed = _write(tables, output, file_format, model.spec.class_names)
        seconds = time.monotonic() - clock
    finally:
        if started:
            ray.shutdown()
    return RayPredictionSummary(
        Path(output), inputs, inputs - failed, failed, model.description, size, start_seconds, seconds
    )


def _photo_datasets(files, uris, *, batch_size, actors):
    """The datasets to label: {"path"} rows of the local files (the actors read them), {"bytes", "path"} of URIs."""
    from catsdogs.images import PHOTO_EXTENSIONS

    datasets = []
    if files:
        datasets.append(list_photo_files(files, what=WHAT, batch_size=batch_size, actors=actors))
    if uris:
        extensions = sorted({extension.lstrip(".") for extension in PHOTO_EXTENSIONS})
        datasets.append(read_photo_files(uris, what=WHAT, file_extensions=extensions))
    return datasets


def _write(tables, output, file_format, class_names):
    """Stream the result tables into `output` through a temporary file; return (rows, failed rows)."""
    import pyarrow

    schema = prediction_table([], class_names).schema
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    os.close(descriptor)
    rows = failed = 0
    try:
        with _writer(temporary, file_format, schema) as write:
            for table in tables:
                table = pyarrow.table(table).select(schema.names).cast(schema)
                rows += table.num_rows
                failed += table.num_rows - table.column("error").null_count
                write(table)
        os.replace(temporary, output)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return rows, failed


class _writer:
    """Context manager giving `write(table)` for one Parquet file, or one CSV like `predict --format csv`."""

    def __init__(self, path, file_format, schema):
        self.path, self.file_format, self.schema = path, file_format, schema

    def __enter__(self):
        if self.file_format == "parquet":
            import pyarrow.parquet

            self.handle = pyarrow.parquet.ParquetWriter(self.path, self.schema)
            return self.handle.write_table
        self.handle = open(self.path, "w", encoding="utf-8", newline="")
        self.csv = csv.writer(self.handle, lineterminator="\n")
        self.csv.writerow(self.schema.names)
        return self._write_csv

    def _write_csv(self, table):
        # Six decimals, as `inference.files.format_predictions` writes its CSV.
        for row in zip(*(table.column(name).to_pylist() for name in self.schema.names)):
            self.csv.writerow(["" if v is None else f"{v:.6f}" if isinstance(v, float) else v for v in row])

    def __exit__(self, *exc_info):
        self.handle.close()
