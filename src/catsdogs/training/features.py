"""Fast feature extraction: run a frozen backbone once per photo and cache what it computes.

With the backbone frozen and no augmentation, a photo gives the same pooled
features every epoch, so they are computed once and the head trains on them
in seconds (the "fast feature extraction" of *Deep Learning with Python*).
Optional horizontally flipped copies are a cheap augmentation. The same pass
can also return the activations entering the blocks that fine-tuning will
train, so fine-tuning only runs the top of the backbone.

The backbone runs in ONNX Runtime when it is installed (about 1.6x faster than
Keras on a CPU, see docs/efficientnet_lite0.md), after checking on the first
batch that it agrees with Keras; otherwise, or if they disagree, in Keras.

Each output is cached in its own file, keyed by the backbone (model name, a
hash of every weight before the head, the image size), by the output's name
and dtype, by the split's files (relative path, size and modification time of
each, and its label) and by the flip, so a changed photo, a retrained backbone
or another size is never served stale features. Files are written to a
temporary name and then moved into place. Nothing is ever evicted: old keys
stay until the folder (DATA/.cache/features) is deleted.
"""

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy

from catsdogs.choices import DEFAULT_BATCH_SIZE, FEATURE_ENGINES
from catsdogs.errors import CatsdogsError
from catsdogs.runtime.agreement import agrees, relative_difference

logger = logging.getLogger("catsdogs.training.features")

CACHE_FORMAT = "catsdogs-features/2"


def weights_fingerprint(model, *, image_size):
    """Return a hex key for what a feature model computes: its name, every weight and the image size.

    Args:
        model: the Keras feature model (its weights are hashed, head excluded by construction).
        image_size: (height, width) of its input.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_FORMAT, model.name, list(image_size)]).encode())
    for variable in model.weights:
        value = numpy.ascontiguousarray(variable.numpy())
        digest.update(f"{variable.path}:{value.dtype}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def files_fingerprint(paths, labels, root):
    """Return a hex key for a list of files: relative path, size, modification time and label of each.

    Raises:
        CatsdogsError: if a file has vanished since it was listed.
    """
    digest = hashlib.sha256()
    for path, label in zip(paths, labels):
        try:
            status = os.stat(path)
        except FileNotFoundError:
            raise CatsdogsError(
                f"A photo disappeared while its features were being computed. Re-run `catsdogs prepare` or "
                f"restore the file. Received: path={path}"
            ) from None
        relative = os.path.relpath(path, root)
        digest.update(f"{relative}\0{status.st_size}\0{status.st_mtime_ns}\0{int(label)}\n".encode())
    return digest.hexdigest()


class FeatureCache:
    """A folder of cached feature arrays, one `.npz` file per key.

    Args:
        folder: where the files live; created when first written.
    """

    def __init__(self, folder):
        self.folder = Path(folder)

    def path_for(self, key):
        return self.folder / f"{key}.npz"

    def load(self, key):
        """Return the array stored under `key`, or None if absent or unreadable."""
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            with numpy.load(path, allow_pickle=False) as stored:
                return stored["values"]
        except (OSError, ValueError, KeyError, EOFError) as error:
            # A damaged cache costs one extraction, never a failed run.
            logger.warning("Ignoring an unreadable feature cache %s (%s); extracting again.", path, error)
            return None

    def save(self, key, values):
        """Write an array under `key` atomically; an unwritable folder only costs a warning."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=self.folder, prefix=f".{key[:16]}.", suffix=".tmp.npz")
            with os.fdopen(descriptor, "wb") as handle:
                numpy.savez(handle, values=values)
            os.replace(temporary, self.path_for(key))
        except OSError as error:
            logger.warning(
                "Could not write the feature cache in %s (%s); features will be extracted again next time.",
                self.folder,
                error,
            )


def _onnx_session(model, image_size):
    """Export `model` to ONNX and open it in ONNX Runtime; None if either is unavailable."""
    try:
        import onnxruntime
    except ImportError:
        return None
    with tempfile.TemporaryDirectory(prefix="catsdogs-onnx-") as folder:
        path = Path(folder) / "features.onnx"
        try:
            # Keras exports a model only after it has been called once.
            model(numpy.zeros((1, *image_size, 3), "float32"))
            model.export(str(path), format="onnx", verbose=False)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = (
                len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            )
            return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # Any export failure leaves Keras, which always works.
            logger.warning("ONNX export failed (%s: %s); extracting features with Keras.", type(error).__name__, error)
            return None


class FeatureExtractor:
    """Runs a feature model over batches of pixels, in ONNX Runtime when possible.

    The ONNX export happens at the first call, so a run whose features are all
    cached never pays for it.

    Args:
        model: a Keras model from raw pixels to one or more feature outputs.
        image_size: (height, width) of its input.
        output_names: a name for each output, in order, saying what it is (e.g. "pooled",
            "cut_block6b"): each output is cached under its own name.
        engine: "auto" (ONNX Runtime if installed and it agrees with Keras), "onnxruntime", "keras", or "ray"
            (`cached_features` computes missing features on a Ray cluster, `training.ray_features`).

    Raises:
        CatsdogsError: for an unknown engine.
    """

    def __init__(self, model, *, image_size, output_names, engine="auto"):
        if engine not in FEATURE_ENGINES:
            raise CatsdogsError(
                f"Unknown feature engine. Choose one of {', '.join(FEATURE_ENGINES)}. Received: engine={engine!r}"
            )
        self.model = model
        self.image_size = tuple(image_size)
        self.output_names = list(output_names)
        self.requested_engine = engine
        self.engine = None
        self.session = None
        self._fingerprint = None

    @property
    def fingerprint(self):
        """The model's `weights_fingerprint`, computed once."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model, image_size=self.image_size)
        return self._fingerprint

    def _open(self):
        self.session = _onnx_session(self.model, self.image_size) if self.requested_engine != "keras" else None
        if self.requested_engine == "onnxruntime" and self.session is None:
            raise CatsdogsError(
                "The onnxruntime engine was asked for but ONNX Runtime or the ONNX export is unavailable. Install it "
                "with `pip install onnxruntime tf2onnx`, or use the keras engine. Received: engine=onnxruntime"
            )
        self.engine = "onnxruntime" if self.session is not None else "keras"
        self._checked = self.requested_engine == "onnxruntime"

    def __call__(self, pixels):
        """Return the list of output arrays for a float32 batch (n, height, width, 3) in 0..255."""
        if self.engine is None:
            self._open()
        pixels = numpy.ascontiguousarray(pixels, dtype="float32")
        if self.session is None:
            outputs = self.model.predict_on_batch(pixels)
            return [numpy.asarray(output) for output in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
        outputs = self.session.run(None, {self.session.get_inputs()[0].name: pixels})
        if not self._checked:
            self._checked = True
            if not self._agrees_with_keras(pixels, outputs):
                self.session, self.engine = None, "keras"
                return self(pixels)
        return outputs

    def _agrees_with_keras(self, pixels, outputs):
        expected = self.model.predict_on_batch(pixels[:4])
        expected = expected if isinstance(expected, (list, tuple)) else [expected]
        worst = relative_difference(expected, [onnx_output[:4] for onnx_output in outputs])
        if not agrees(worst):
            logger.warning("ONNX Runtime differs from Keras by %.2g (relative); extracting features with Keras.", worst)
            return False
        logger.info("Feature engine: ONNX Runtime (relative difference from Keras %.1g).", worst)
        return True


def extract(extractor, paths, *, batch_size=DEFAULT_BATCH_SIZE, flip=False, output_dtypes=None):
    """Decode, resize and run every photo through `extractor`, in order.

    Args:
        extractor: a `FeatureExtractor`.
        paths: image files.
        batch_size: photos per model call.
        flip: mirror every photo horizontally first.
        output_dtypes: optional dtype per output (e.g. float16 for large activations).

    Returns:
        A list with one array per model output, (len(paths), ...) each.
    """
    import tensorflow as tf

    from catsdogs.data.pipeline import PREFETCH_BATCHES, parallel_calls, without_autotuning
    from catsdogs.images import decode_and_resize

    image_size = extractor.image_size
    dataset = without_autotuning(
        tf.data.Dataset.from_tensor_slices([str(path) for path in paths])
        .map(lambda path: decode_and_resize(tf.io.read_file(path), image_size), num_parallel_calls=parallel_calls())
        .batch(batch_size)
        .prefetch(PREFETCH_BATCHES)
    )
    collected = None
    for batch in dataset:
        pixels = batch.numpy().astype("float32")
        if flip:
            pixels = pixels[:, :, ::-1, :]
        outputs = extractor(pixels)
        if collected is None:
            collected = [[] for _ in outputs]
        for index, output in enumerate(outputs):
            dtype = output_dtypes[index] if output_dtypes else output.dtype
            collected[index].append(numpy.asarray(output, dtype=dtype))
    if collected is None:
        return []
    return [numpy.concatenate(parts) for parts in collected]


def cached_features(
    extractor, cache, *, paths, labels, root, flip=False, batch_size=DEFAULT_BATCH_SIZE, output_dtypes=None
):
    """Return the features of `paths` from the cache, extracting and caching them first if needed.

    Each output is cached in its own file, so pooled features computed along
    with fine-tuning activations also serve a later run that needs only them.

    Args:
        extractor: a `FeatureExtractor`.
        cache: a `FeatureCache`, or None to extract without caching.
        paths: the split's image files, in order.
        labels: their integer labels.
        root: the data folder the paths are relative to in the key.
        flip: mirror the photos horizontally first.
        batch_size: photos per model call.
        output_dtypes: optional dtype per output (part of the key).

    Returns:
        ({output name: array}, hit): the arrays, and whether they all came from the cache.
    """
    files = files_fingerprint(paths, labels, root)
    dtypes = (
        [str(numpy.dtype(dtype)) for dtype in output_dtypes] if output_dtypes else [None] * len(extractor.output_names)
    )
    size = "x".join(map(str, extractor.image_size))
    keys = {}
    for name, dtype in zip(extractor.output_names, dtypes):
        key_source = json.dumps([CACHE_FORMAT, extractor.fingerprint, files, bool(flip), name, dtype])
        digest = hashlib.sha256(key_source.encode()).hexdigest()[:24]
        keys[name] = f"{extractor.model.name}-{size}-{name}-{digest}{'-flipped' if flip else ''}"
    stored = {name: cache.load(key) for name, key in keys.items()} if cache is not None else {}
    if stored and all(value is not None and len(value) == len(paths) for value in stored.values()):
        logger.info(
            "Features of %d photos%s: from the cache in %s", len(paths), " (flipped)" if flip else "", cache.folder
        )
        return stored, True
    started = time.monotonic()
    if extractor.requested_engine == "ray":
        # The same keys and files, computed by a Ray cluster (training.ray_features).
        from catsdogs.training.ray_features import extract_with_ray

        arrays = extract_with_ray(extractor, paths, batch_size=batch_size, flip=flip, output_dtypes=output_dtypes)
    else:
        arrays = extract(extractor, paths, batch_size=batch_size, flip=flip, output_dtypes=output_dtypes)
    seconds = time.monotonic() - started
    logger.info(
        "Features of %d photos%s: extracted with %s in %.1f s (%.0f photos/s)",
        len(paths),
        " (flipped)" if flip else "",
        extractor.engine,
        seconds,
        len(paths) / max(seconds, 1e-9),
    )
    result = dict(zip(extractor.output_names, arrays))
    if cache is not None:
        for name, values in result.items():
            cache.save(keys[name], values)
    return result, False
