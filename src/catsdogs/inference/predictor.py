"""Prediction with a trained run: `Predictor.from_run_dir(path).predict(images)`.

Every image, whether a file, uploaded bytes or an array, takes the one image
path of training: `images.clean_image_bytes` (the normalisation `prepare`
applies) and then `images.decode_and_resize`. A bad image never stops a
batch: it comes back as a `Prediction` with `error` set. `Prediction`, the
decision rule `decide` and the batching with its error rows live in
`runtime.predictions`, shared with the TensorFlow-free `runtime.OnnxPredictor`;
they are imported here so that `from catsdogs.inference import Prediction,
decide` keeps working.

`from_run_dir(..., engine="auto")` runs the model where `inference.engines`
chooses (ONNX Runtime where it agrees with Keras); `model` stays the Keras
model either way, for Grad-CAM. `predict` decodes the photos of the next
batches on a thread per core while the model runs the current one.
"""

from __future__ import annotations

import collections
import typing
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy

from catsdogs.choices import DEFAULT_BATCH_SIZE, DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, DEFAULT_THRESHOLD
from catsdogs.data.pipeline import PREFETCH_BATCHES, parallel_calls
from catsdogs.inference.engines import ModelRunner, check_engine, keras_runner, open_engine
from catsdogs.models.saving import load_model
from catsdogs.runtime.answers import OFF_BY_REQUEST, read_abstain_rule
from catsdogs.runtime.predictions import ImagePredictor, Prediction, check_threshold, decide

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_THRESHOLD", "Predictor", "Prediction", "check_threshold", "decide"]

if typing.TYPE_CHECKING:
    import keras
    import numpy.typing
    from PIL import Image

    # One image as `load_image` and `predict` accept it: a path, the file's bytes, a PIL image or pixels.
    ImageInput = str | Path | bytes | bytearray | memoryview | Image.Image | numpy.ndarray


class Predictor(ImagePredictor):
    """A loaded Keras model with its class names and image settings, ready to label images.

    Batching, error rows, test-time augmentation and the decision rule are
    `runtime.predictions.ImagePredictor`'s; this class loads images through
    TensorFlow (the training path itself) and calls the Keras model.

    Args:
        model: the Keras model, taking raw pixels (batch, height, width, 3) in 0..255.
        class_names: class names in label order.
        image_size: (height, width) the model was trained on.
        threshold: for two classes, the probability of the second class at or above
            which it is predicted. Ignored for more classes (the most probable wins).
        max_pixels: largest accepted image, as in `prepare`.
        min_side: smallest accepted image side, as in `prepare`.
        batch_size: images per model call.
        test_time_augmentation: average the probabilities of each image and its
            mirror image (horizontal flip); twice the model calls.
        runner: what runs the model (`inference.engines`); None runs the Keras model. `from_run_dir`
            leaves it to be chosen at the first prediction, when the number of photos is known.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        class_names: Sequence[str],
        image_size: Sequence[int],
        threshold: float = DEFAULT_THRESHOLD,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        min_side: int = DEFAULT_MIN_SIDE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        test_time_augmentation: bool = False,
        runner: ModelRunner | None = None,
    ) -> None:
        super().__init__(
            class_names=class_names,
            image_size=image_size,
            threshold=threshold,
            max_pixels=max_pixels,
            min_side=min_side,
            batch_size=batch_size,
            test_time_augmentation=test_time_augmentation,
        )
        self.model = model
        self.runner = runner
        # The ImageNet head of the "neither" check (`inference.neither`), set by `from_run_dir` where it applies.
        self.imagenet_head = None
        # Set by `from_run_dir`: (run folder, engine, model SHA-256) for choosing the runner later.
        self._engine_request = None

    @classmethod
    def from_run_dir(
        cls,
        path: str | Path,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        batch_size: int = DEFAULT_BATCH_SIZE,
        test_time_augmentation: bool | None = None,
        engine: str = "keras",
        abstain: bool = True,
    ) -> Predictor:
        """Load a run folder's verified model, labels and image settings.

        `test_time_augmentation` None takes the run config's `model.test_time_augmentation`.

        Args:
            path: the run folder.
            threshold: for two classes, the probability of the second class at or above which it is predicted.
            batch_size: images per model call.
            test_time_augmentation: average over each image and its mirror image; None takes the run's setting.
            engine: "auto", "onnxruntime" or "keras" (`inference.engines`), chosen at the first prediction.
                The default stays Keras for the callers that predict a photo or two beside Grad-CAM
                (explain, the service's Grad-CAM); `predict` and `evaluate` pass their --engine.
            abstain: answer "unsure" where the run's abstain.json says so (`runtime.answers`), and "neither"
                where the ImageNet head sees no cat and no dog (`inference.neither`); False gives the plain
                label. A run without abstain.json has abstaining off (`abstain_note` says why), a run that
                cannot have the "neither" check has it off (`neither_note`).

        Returns:
            A `Predictor`.

        Raises:
            CatsdogsError: if the folder is not a finished run, its model fails the SHA-256 check, or the
                engine is unknown.
        """
        from catsdogs.config import config_from_dict
        from catsdogs.fileio import verify_checksum
        from catsdogs.runs import RunDir

        check_engine(engine)
        run_dir = RunDir.open(path)
        config = config_from_dict(run_dir.read_config())
        model_sha256 = verify_checksum(run_dir.model_path, what="model")
        predictor = cls(
            # Checked just above; hashing a large model twice would only cost time.
            load_model(run_dir.model_path, verify=False),
            class_names=run_dir.read_labels(),
            image_size=config.data.image_size,
            threshold=threshold,
            max_pixels=config.data.max_pixels,
            min_side=config.data.min_side,
            batch_size=batch_size,
            test_time_augmentation=config.model.test_time_augmentation
            if test_time_augmentation is None
            else test_time_augmentation,
        )
        predictor._engine_request = (run_dir, engine, model_sha256)
        if abstain:
            from catsdogs.inference.neither import neither_check

            predictor.use_abstain_rule(
                *read_abstain_rule(run_dir.abstain_path, class_names=predictor.class_names, model_sha256=model_sha256)
            )
            rule, predictor.imagenet_head, note = neither_check(config, predictor.class_names)
            predictor.use_neither_rule(rule, note)
        else:
            predictor.use_abstain_rule(None, OFF_BY_REQUEST)
        return predictor

    @property
    def engine(self) -> str | None:
        """ "onnxruntime" or "keras": what runs the model; None until `from_run_dir`'s choice is made."""
        if self.runner is None:
            return None if self._engine_request is not None else "keras"
        return self.runner.engine

    def open_engine(self, images: int | None = None) -> ModelRunner:
        """Choose what runs the model, once, and return it; `predict` calls it with the number of photos.

        Args:
            images: how many photos are about to be predicted ("auto" converts the model only for many).

        Returns:
            The `ModelRunner`.
        """
        if self.runner is None:
            if self._engine_request is None:
                self.runner = keras_runner(self.model, reason="the predictor was built around a Keras model")
            else:
                run_dir, engine, model_sha256 = self._engine_request
                self.runner = open_engine(
                    run_dir,
                    self.model,
                    engine=engine,
                    image_size=self.image_size,
                    model_sha256=model_sha256,
                    images=images,
                )
        return self.runner

    def predict(
        self, images: ImageInput | Sequence[ImageInput], *, sources: Sequence[str] | None = None
    ) -> list[Prediction]:
        """Label images in batches, decoding the next batches while the model runs; a bad image gives an error row.

        Args:
            images: a list of paths, bytes, PIL images or arrays (one image alone is accepted too).
            sources: optional names for the rows; default the path, or "<bytes N>"/"<array N>".

        Returns:
            A list of `Prediction`, one per image, in order.
        """
        images, sources = self._named_inputs(images, sources)
        self.open_engine(len(images))
        workers = parallel_calls()
        if len(images) <= 1 or workers <= 1:
            return super().predict(images, sources=sources)
        starts = list(range(0, len(images), self.batch_size))
        pending = collections.deque()
        predictions = []
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="catsdogs-decode")
        try:
            # Decoding runs PREFETCH_BATCHES batches ahead, so memory stays bounded on any number of photos.
            for start in starts[: PREFETCH_BATCHES + 1]:
                pending.append(self._submit_batch(pool, images, sources, start))
            for number, start in enumerate(starts):
                loaded = [future.result() for future in pending.popleft()]
                if number + PREFETCH_BATCHES + 1 < len(starts):
                    pending.append(self._submit_batch(pool, images, sources, starts[number + PREFETCH_BATCHES + 1]))
                predictions.extend(self._finish_batch(loaded, sources[start : start + self.batch_size]))
        finally:
            # An interrupted or failed call must not leave queued photos decoding in the background.
            pool.shutdown(wait=True, cancel_futures=True)
        return predictions

    def _submit_batch(self, pool, images, sources, start):
        stop = start + self.batch_size
        return [
            pool.submit(self._load_row, image, source) for image, source in zip(images[start:stop], sources[start:stop])
        ]

    def load_image(self, image: ImageInput) -> numpy.ndarray:
        """Normalise and resize one image exactly as training does.

        Args:
            image: a path, the file's bytes, a PIL image, or pixels (height, width[, channels])
                in 0..255.

        Returns:
            A uint8 array (height, width, 3) at the model's image size.

        Raises:
            CatsdogsError: (an `images.ImageError` for bad image data) when the image cannot be used.
            OSError: when a path cannot be read.
        """
        from catsdogs.images import clean_image_bytes, decode_and_resize, image_bytes

        clean = clean_image_bytes(image_bytes(image), max_pixels=self.max_pixels, min_side=self.min_side)
        return decode_and_resize(clean.data, self.image_size).numpy()

    def imagenet_probabilities(self, pixels: numpy.ndarray) -> numpy.ndarray:
        """ImageNet probabilities (n, 1000) of the pixels, from the "neither" check's ImageNet head."""
        if self.imagenet_head is None:
            return super().imagenet_probabilities(pixels)
        return self.imagenet_head(pixels)

    def run_model(self, pixels: numpy.ndarray) -> numpy.ndarray:
        """Return the model's output for float32 pixels (n, height, width, 3), in the chosen engine."""
        return self.open_engine(len(pixels))(pixels)
