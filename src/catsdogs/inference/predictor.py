"""Prediction with a trained run: `Predictor.from_run_dir(path).predict(images)`.

Every image, whether a file, uploaded bytes or an array, takes the one image
path of training: `images.clean_image_bytes` (the normalisation `prepare`
applies) and then `images.decode_and_resize`. A bad image never stops a
batch: it comes back as a `Prediction` with `error` set. `Prediction`, the
decision rule `decide` and the batching with its error rows live in
`runtime.predictions`, shared with the TensorFlow-free `runtime.OnnxPredictor`;
they are imported here so that `from catsdogs.inference import Prediction,
decide` keeps working.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from pathlib import Path

import numpy

from catsdogs.choices import DEFAULT_BATCH_SIZE, DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, DEFAULT_THRESHOLD
from catsdogs.models.saving import load_model
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

    @classmethod
    def from_run_dir(
        cls,
        path: str | Path,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        batch_size: int = DEFAULT_BATCH_SIZE,
        test_time_augmentation: bool | None = None,
    ) -> Predictor:
        """Load a run folder's verified model, labels and image settings.

        `test_time_augmentation` None takes the run config's `model.test_time_augmentation`.

        Raises:
            CatsdogsError: if the folder is not a finished run or its model fails the SHA-256 check.
        """
        from catsdogs.config import config_from_dict
        from catsdogs.runs import RunDir

        run_dir = RunDir.open(path)
        config = config_from_dict(run_dir.read_config())
        return cls(
            load_model(run_dir.model_path),
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

    def run_model(self, pixels: numpy.ndarray) -> numpy.ndarray:
        """Return the Keras model's output for float32 pixels (n, height, width, 3)."""
        return self.model.predict_on_batch(pixels)
