"""Ray's side of catsdogs: join or start a cluster, and the actors that run an ONNX model on photo bytes.

Two callers in two layers use Ray: `inference.ray_engine` (`catsdogs predict --engine ray`) and
`training.ray_features` (transfer features computed by a cluster). Neither may import the other, so what
they share lives here, in the TensorFlow-free runtime: a Ray worker that runs these actors imports numpy,
Pillow, ONNX Runtime and pyarrow, never TensorFlow, and feeds the model through `runtime.load_pixels`, the
training image path.

Each actor is a callable class for `Dataset.map_batches(..., compute=ActorPoolStrategy(size=n))`: Ray
builds it once per actor, so the ONNX model is fetched from the object store and opened once per actor,
not once per batch. The model travels as bytes put into the object store once by the driver, so the
workers need no copy of the run or export folder, only the photos (at the same paths, or under a URI).

Ray itself is imported inside `import_ray` alone, so this module imports on the base install and a
missing Ray is reported with the extra that brings it (`catsdogs[scale]`).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import typing
from collections.abc import Sequence

import numpy

from catsdogs.errors import CatsdogsError
from catsdogs.runtime.onnx_predictor import OnnxPredictor
from catsdogs.runtime.preprocess import load_pixels

if typing.TYPE_CHECKING:
    import onnxruntime
    import pyarrow

    from catsdogs.runtime.predictions import Prediction

logger = logging.getLogger("catsdogs.runtime.ray_workers")

# pyproject.toml's optional extra that installs Ray Data.
RAY_EXTRA = "scale"
# Feature extraction reads prepared photos, which `prepare` has already bounded; training's own path
# (`images.decode_and_resize`) applies no size limits, so neither does the Ray path.
FEATURE_MAX_PIXELS = 2**40
FEATURE_MIN_SIDE = 1
# Ray Data starts an actor pool before the read tasks; actors that reserved every CPU would leave none for
# reading, and the job would hang (ray-project/ray#44687). So each actor, one per CPU, reserves a little less
# than one, and a read task (file I/O, no decoding) the rest. Reservations are bookkeeping: the actors
# still use a whole core each.
ACTOR_CPUS = 0.9
READ_CPUS = 0.1


def import_ray(what: str):
    """Return the `ray` module with `ray.data` loaded, or say which extra installs it.

    Args:
        what: what needs Ray, for the message, e.g. "`catsdogs predict --engine ray`".

    Raises:
        CatsdogsError: when Ray or Ray Data is not installed.
    """
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data brings pyarrow and pandas; `ray` alone lacks them)
    except ModuleNotFoundError as error:
        raise CatsdogsError(
            f"{what} needs Ray Data, which is not installed. Install it with: pip install 'catsdogs[{RAY_EXTRA}]' "
            f"(in a clone of the repository: pip install -e '.[{RAY_EXTRA}]'). "
            f"Received: missing module={(error.name or 'ray').partition('.')[0]}"
        ) from None
    return ray


def available_cpus() -> int:
    """The CPUs this process may use: what a local cluster gets, so it never oversubscribes a pinned process."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def connect(address: str | None = None, *, num_cpus: int | None = None, what: str) -> bool:
    """Join the Ray cluster at `address`, or start a local one; do nothing when Ray is already initialised.

    Without `address`, Ray's own rule applies first: a `RAY_ADDRESS` environment variable names the cluster
    to join (this is how `train.feature_engine = "ray"` finds one). Otherwise a local cluster starts with
    `num_cpus` CPUs, default `available_cpus()`.

    Args:
        address: "HOST:PORT" of a running cluster's head (`ray start --head` prints it), "auto", or
            "ray://HOST:10001" for Ray Client; None for the rule above.
        num_cpus: CPUs of a local cluster; ignored when joining one.
        what: what needs Ray, for the messages.

    Returns:
        True if this call started or joined the cluster (the caller may `ray.shutdown()` it after), False
        when Ray was already initialised in this process.

    Raises:
        CatsdogsError: when Ray is not installed, or the cluster at `address` cannot be reached.
    """
    ray = import_ray(what)
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            # A cluster catsdogs starts for itself reports no usage statistics to Ray's servers (Ray's documented
            # opt-out; RAY_USAGE_STATS_ENABLED=1 in the environment opts back in).
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(num_cpus=num_cpus or available_cpus(), include_dashboard=False, logging_level=logging.WARNING)
    except ConnectionError as error:
        cause = f" ({type(error.__cause__).__name__})" if error.__cause__ is not None else ""
        raise CatsdogsError(
            f"{what} could not reach the Ray cluster at {address}. Start one with `ray start --head` and pass "
            f"the address it prints (HOST:6379), or leave --address out to start a local cluster. A cluster with "
            f"token authentication (on by default in recent Ray) also needs RAY_AUTH_MODE=token and its token "
            f"(~/.ray/auth_token or RAY_AUTH_TOKEN_PATH) where catsdogs runs. "
            f"Received: address={address}, error={error}{cause}"
        ) from None
    return True


def cluster_cpus() -> int:
    """The CPUs of the Ray cluster this process is connected to (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def open_session_from_bytes(model_bytes: bytes, *, threads: int) -> onnxruntime.InferenceSession:
    """Open an ONNX model held in memory on the CPU with `threads` threads (one per CPU its actor reserved)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _resolve(model):
    """The model's bytes: as given, or fetched once from the object store when the driver put them there."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    import ray

    return ray.get(model)


@dataclasses.dataclass(frozen=True)
class PredictorSpec:
    """Everything a prediction actor needs to build its `OnnxPredictor`, picklable and folder-free.

    Attributes:
        model: the ONNX model's bytes, or the `ray.ObjectRef` the driver put them under.
        class_names: class names in label order.
        image_size: (height, width) the model takes.
        threshold: the decision threshold for two classes.
        max_pixels: largest accepted image, as in `prepare`.
        min_side: smallest accepted image side, as in `prepare`.
        batch_size: images per model call.
        test_time_augmentation: average each photo with its mirror image.
        threads: ONNX Runtime threads per actor (the CPUs each actor reserves).
    """

    model: typing.Any
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    threshold: float
    max_pixels: int | None
    min_side: int | None
    batch_size: int
    test_time_augmentation: bool
    threads: int = 1


def prediction_table(predictions: Sequence[Prediction], class_names: Sequence[str]) -> pyarrow.Table:
    """Predictions as the output's rows: file, label, probability, probability_<class>..., error (nulls on error).

    These are the columns of `predict --format csv`, so a Parquet or CSV file from `--engine ray` reads
    like the single-process CSV.
    """
    import pyarrow

    columns = {
        "file": pyarrow.array([p.source for p in predictions], pyarrow.string()),
        "label": pyarrow.array([p.label for p in predictions], pyarrow.string()),
        "probability": pyarrow.array([p.probability for p in predictions], pyarrow.float64()),
    }
    for name in class_names:
        columns[f"probability_{name}"] = pyarrow.array(
            [p.probabilities[name] if p.probabilities else None for p in predictions], pyarrow.float64()
        )
    columns["error"] = pyarrow.array([p.error for p in predictions], pyarrow.string())
    return pyarrow.table(columns)


class PhotoPredictor:
    """Ray Data actor: label a batch of photo files ({"path"}, or {"bytes", "path"} for URIs) with one ONNX model.

    Built once per actor from a `PredictorSpec`; each call is `OnnxPredictor.predict` on the files (paths, or
    the bytes Ray read), so the rows, error rows and numbers are those of single-process `catsdogs predict`.
    """

    def __init__(self, spec: PredictorSpec) -> None:
        session = open_session_from_bytes(_resolve(spec.model), threads=spec.threads)
        self.predictor = OnnxPredictor(
            session,
            class_names=spec.class_names,
            image_size=spec.image_size,
            threshold=spec.threshold,
            max_pixels=spec.max_pixels,
            min_side=spec.min_side,
            batch_size=spec.batch_size,
            test_time_augmentation=spec.test_time_augmentation,
        )

    def __call__(self, batch: dict) -> pyarrow.Table:
        paths, images = batch_images(batch)
        # A broken or unreadable file is an error row from `predict`, never an exception that fails the job.
        predictions = self.predictor.predict(images, sources=paths)
        return prediction_table(predictions, self.predictor.class_names)


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Everything a feature actor needs: the feature model as ONNX and how to feed it.

    Attributes:
        model: the ONNX model's bytes, or the `ray.ObjectRef` the driver put them under.
        image_size: (height, width) the model takes.
        flip: mirror every photo horizontally after resizing, as `training.features.extract` does.
        output_dtypes: a dtype name per model output (e.g. "float16" for cut activations), or None to keep them.
        threads: ONNX Runtime threads per actor.
    """

    model: typing.Any
    image_size: tuple[int, int]
    flip: bool = False
    output_dtypes: tuple[str, ...] | None = None
    threads: int = 1


class PhotoFeatures:
    """Ray Data actor: the feature model's outputs for a batch of photo files ({"path"} rows, read here).

    Returns the columns "path", "error" ("" for a photo that decoded: an all-None column would reach the driver
    as NaN floats) and "output_0", "output_1", ...
    (one row per photo; zeros where the photo failed, which the driver reports rather than trains on).
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.session = open_session_from_bytes(_resolve(spec.model), threads=spec.threads)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: dict) -> dict:
        paths, images = batch_images(batch)
        pixels, errors = [], []
        for image in images:
            try:
                pixels.append(
                    load_pixels(
                        image,
                        image_size=self.spec.image_size,
                        max_pixels=FEATURE_MAX_PIXELS,
                        min_side=FEATURE_MIN_SIDE,
                    )
                )
                errors.append("")
            except Exception as error:  # Reported by the driver with the file's name; other photos go on.
                pixels.append(numpy.zeros((*self.spec.image_size, 3), numpy.uint8))
                errors.append(getattr(error, "reason", None) or f"{type(error).__name__}: {error}")
        stacked = numpy.stack(pixels).astype(numpy.float32)
        if self.spec.flip:
            stacked = numpy.ascontiguousarray(stacked[:, :, ::-1, :])
        outputs = self.session.run(None, {self.input_name: stacked})
        columns = {"path": numpy.asarray(paths, dtype=str), "error": numpy.asarray(errors, dtype=str)}
        for index, output in enumerate(outputs):
            dtype = self.spec.output_dtypes[index] if self.spec.output_dtypes else output.dtype
            columns[f"output_{index}"] = numpy.asarray(output, dtype=dtype)
        return columns


def batch_images(batch: dict) -> tuple[list[str], list]:
    """(sources, images) of a batch: the files' bytes when Ray read them (URIs), else their paths, read here."""
    paths = [str(path) for path in batch["path"]]
    if "bytes" in batch:
        return paths, [bytes(data) for data in batch["bytes"]]
    return paths, paths


def list_photo_files(paths: Sequence[str], *, what: str, batch_size: int, actors: int):
    """A Ray dataset of {"path"} rows for files every node reads at these paths; the actors read the bytes.

    The actors read local files themselves, as single-process `predict` does: a file that vanished or cannot
    be read is an error row ("cannot read file: ..."), where a failed Ray read task would fail the job. Blocks
    of four batches keep the actors evenly busy without millions of blocks for a large collection.

    Args:
        paths: files (absolute paths).
        what: what needs Ray, for the missing-Ray message.
        batch_size: photos per model call.
        actors: actors in the pool: at least one block each.
    """
    ray = import_ray(what)
    blocks = max(int(actors), -(-len(paths) // (4 * max(1, int(batch_size)))))
    return ray.data.from_items([{"path": str(path)} for path in paths], override_num_blocks=min(blocks, len(paths)))


def read_photo_files(paths: Sequence[str], *, what: str, file_extensions: Sequence[str] | None = None):
    """A Ray dataset of {"bytes", "path"} rows, one per file: `read_binary_files` with the read tasks' CPUs set.

    For URIs (s3://, gs://, ...), which Ray Data lists and reads; local files go through `list_photo_files`.

    Args:
        paths: URIs of files or folders.
        what: what needs Ray, for the missing-Ray message.
        file_extensions: keep only these extensions (without the dot) when listing folders or URIs.
    """
    ray = import_ray(what)
    # Ray 2.5x names the read tasks' resources; older releases (the extra allows 2.40) take ray_remote_args.
    named = "num_cpus" in inspect.signature(ray.data.read_binary_files).parameters
    return ray.data.read_binary_files(
        list(paths),
        include_paths=True,
        file_extensions=list(file_extensions) if file_extensions else None,
        **({"num_cpus": READ_CPUS} if named else {"ray_remote_args": {"num_cpus": READ_CPUS}}),
    )


def quiet_progress(progress: bool = False) -> None:
    """Show or hide Ray Data's progress bars and its progress log lines (every 10 s when stderr is not a terminal).

    Args:
        progress: True shows them (`catsdogs --verbose`); False leaves Ray's warnings and errors only.
    """
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = bool(progress)
    logging.getLogger("ray.data").setLevel(logging.INFO if progress else logging.WARNING)
    # Without bars, each job logs a WARNING on how to turn them on again; `catsdogs --verbose` is that switch.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.INFO if progress else logging.ERROR)


def map_with_actors(dataset, actor_class, spec, *, batch_size: int, actors: int, what: str):
    """`dataset.map_batches(actor_class)` on a fixed pool of `actors` actors, each built once from `spec`."""
    ray = import_ray(what)
    return dataset.map_batches(
        actor_class,
        fn_constructor_kwargs={"spec": spec},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, int(actors))),
        num_cpus=ACTOR_CPUS,
    )
