"""Transfer features computed on a Ray cluster and written to the very cache that `train` reads.

`--set train.feature_engine=ray` makes `training.features.cached_features` call `extract_with_ray`
instead of `extract` when a split's features are not cached yet. Everything else stays as it is: the
cache keys (backbone weights, files, flip, output name and dtype), the `.npz` files in
DATA/.cache/features and the head training on them. So the head trains on one machine from features that
many machines computed, and a later run with any engine finds them in the cache.

How: the driver converts the feature model to ONNX once per extractor, checks it against Keras on the
split's first photos (`runtime.agreement`'s rule; a disagreement stops training rather than cache wrong
features), and puts the bytes in Ray's object store. Ray Data reads the photos
(`read_binary_files(..., include_paths=True)`) and an actor pool of `runtime.ray_workers.PhotoFeatures`
decodes them with `runtime.load_pixels` (the same pixels as training's TensorFlow decode) and runs the
model; the driver puts each row back in the split's order by its path.

The cluster is the one `RAY_ADDRESS` names, else a local one with this machine's CPUs. It is started once
and kept for the other splits and the flipped pass (Ray shuts it down when the process exits). The photos
must be readable at the same absolute paths on every node (a shared file system).
"""

import contextlib
import os
import random
import tempfile
from pathlib import Path

import numpy

from catsdogs.errors import CatsdogsError
from catsdogs.runtime.agreement import agrees, relative_difference
from catsdogs.runtime.preprocess import load_pixels
from catsdogs.runtime.ray_workers import (
    FEATURE_MAX_PIXELS,
    FEATURE_MIN_SIDE,
    FeatureSpec,
    PhotoFeatures,
    cluster_cpus,
    connect,
    import_ray,
    list_photo_files,
    map_with_actors,
    open_session_from_bytes,
    quiet_progress,
)

WHAT = "train.feature_engine=ray"
# Photos of the first batch on which the ONNX feature model must agree with Keras.
CHECK_IMAGES = 4
# Failed photos named in the error message; the rest are counted.
NAMED_FAILURES = 5


def extract_with_ray(extractor, paths, *, batch_size, flip=False, output_dtypes=None):
    """Compute `extractor`'s outputs for every photo on a Ray cluster, in the order of `paths`.

    Args:
        extractor: a `training.features.FeatureExtractor` (its Keras model is converted to ONNX once).
        paths: image files, readable at these paths on every node.
        batch_size: photos per model call.
        flip: mirror every photo horizontally first.
        output_dtypes: optional dtype per output (e.g. float16 for cut activations).

    Returns:
        A list with one array per model output, (len(paths), ...) each, as `training.features.extract` returns.

    Raises:
        CatsdogsError: when Ray is not installed, the ONNX model disagrees with Keras, or a photo cannot be read.
    """
    paths = [os.path.abspath(path) for path in paths]
    if not paths:
        return []
    with _keeping_random_state():
        ray = import_ray(WHAT)
        connect(None, what=WHAT)
        # Training reports each split's extraction itself ("Features of N photos: extracted with ray in ...").
        quiet_progress(False)
        spec = FeatureSpec(
            model=_model_reference(ray, extractor, paths[:CHECK_IMAGES]),
            image_size=tuple(extractor.image_size),
            flip=bool(flip),
            output_dtypes=tuple(str(numpy.dtype(dtype)) for dtype in output_dtypes) if output_dtypes else None,
        )
        actors = cluster_cpus()
        photos = list_photo_files(paths, what=WHAT, batch_size=batch_size, actors=actors)
        dataset = map_with_actors(photos, PhotoFeatures, spec, batch_size=batch_size, actors=actors, what=WHAT)
        return _collect(dataset, paths)


@contextlib.contextmanager
def _keeping_random_state():
    """Leave Python's and numpy's global random state as they were: the head trains as after any other engine.

    Starting and using Ray draws from Python's `random` (ids, ports); Keras takes the head's unseeded
    initial weights from the same global state, so without this a head trained right after Ray extraction
    differs from one trained on the same features read from the cache (observed: EfficientNet-Lite0, same
    features bit for bit, validation loss 0.0373 against 0.0368).
    """
    python_state, numpy_state = random.getstate(), numpy.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        numpy.random.set_state(numpy_state)


def _collect(dataset, paths):
    """Place each returned row at its photo's position; raise naming the photos that failed."""
    position = {path: number for number, path in enumerate(paths)}
    arrays, filled, failures = None, numpy.zeros(len(paths), bool), []
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        rows = numpy.asarray([position[os.path.abspath(str(path))] for path in batch["path"]], dtype=numpy.int64)
        outputs = [batch[f"output_{index}"] for index in range(sum(name.startswith("output_") for name in batch))]
        if arrays is None:
            arrays = [numpy.empty((len(paths), *output.shape[1:]), output.dtype) for output in outputs]
        for array, output in zip(arrays, outputs):
            array[rows] = output
        filled[rows] = True
        failures += [(str(path), str(error)) for path, error in zip(batch["path"], batch["error"]) if str(error)]
    if failures:
        named = "; ".join(f"{path}: {error}" for path, error in failures[:NAMED_FAILURES])
        raise CatsdogsError(
            f"{len(failures)} photo(s) could not be read for their features ({named}). Prepared data decodes "
            f"cleanly, so re-run `catsdogs prepare` on the source, or remove the files. Received: "
            f"failed={len(failures)}, photos={len(paths)}"
        )
    if arrays is None or not filled.all():
        raise CatsdogsError(
            f"Ray returned features for {int(filled.sum())} of {len(paths)} photos. Check that every node reads "
            f"the photos at the same paths, or use --set train.feature_engine=auto. Received: "
            f"missing={len(paths) - int(filled.sum())}"
        )
    return arrays


def _model_reference(ray, extractor, check_paths):
    """The feature model's ONNX bytes in the object store, converted and checked once per extractor."""
    reference = getattr(extractor, "ray_model", None)
    if reference is None:
        model_bytes = _convert_and_check(extractor, check_paths)
        reference = ray.put(model_bytes)
        extractor.ray_model = reference
        extractor.engine = "ray"
    return reference


def _convert_and_check(extractor, check_paths):
    """Convert the Keras feature model to ONNX and check it on the first photos; return its bytes."""
    model, image_size = extractor.model, tuple(extractor.image_size)
    pixels = numpy.stack(
        [
            load_pixels(path, image_size=image_size, max_pixels=FEATURE_MAX_PIXELS, min_side=FEATURE_MIN_SIDE)
            for path in check_paths
        ]
    ).astype(numpy.float32)
    with tempfile.TemporaryDirectory(prefix="catsdogs-ray-features-") as folder:
        onnx_path = Path(folder) / "features.onnx"
        try:
            # Keras exports a model only after it has been called once.
            expected = model.predict_on_batch(pixels)
            model.export(str(onnx_path), format="onnx", verbose=False)
            model_bytes = onnx_path.read_bytes()
        except Exception as error:  # The converter raises many types; the message names the fix.
            raise CatsdogsError(
                f"{WHAT} runs the backbone as ONNX, and converting it failed. Use --set train.feature_engine=auto "
                f"(Keras or ONNX Runtime in this process). Received: error={type(error).__name__}: {error}"
            ) from None
    session = open_session_from_bytes(model_bytes, threads=1)
    actual = session.run(None, {session.get_inputs()[0].name: pixels})
    expected = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    difference = relative_difference(expected, actual)
    if not agrees(difference):
        raise CatsdogsError(
            f"{WHAT} runs the backbone as ONNX, and the converted model differs from Keras by {difference:.2g} "
            f"(relative) on the first photos. Use --set train.feature_engine=auto, which falls back to Keras. "
            f"Received: difference={difference:.3g}"
        )
    return model_bytes
