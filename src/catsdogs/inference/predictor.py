"""Prediction with a trained run: `Predictor.from_run_dir(path).predict(images)`.

Every image, whether a file, uploaded bytes or an array, takes the one image
path of training: `images.clean_image_bytes` (the normalisation `prepare`
applies) and then `images.decode_and_resize`. A bad image never stops a
batch: it comes back as a `Prediction` with `error` set.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from pathlib import Path

import numpy

from catsdogs.choices import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLD
from catsdogs.errors import CatsdogsError
from catsdogs.models.saving import load_model

if typing.TYPE_CHECKING:
    import keras
    import numpy.typing
    from PIL import Image

    # One image as `load_image` and `predict` accept it: a path, the file's bytes, a PIL image or pixels.
    ImageInput = str | Path | bytes | bytearray | memoryview | Image.Image | numpy.ndarray


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The prediction for one image, or why there is none.

    Attributes:
        source: the file path, or a name like "<bytes 3>" for in-memory input.
        label: the predicted class name; None on error.
        probability: the probability of `label`; None on error.
        probabilities: {class name: probability} for every class; None on error.
        error: why the image could not be used; None on success.
    """

    source: str
    label: str | None = None
    probability: float | None = None
    probabilities: dict | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_threshold(threshold: float) -> float:
    """Return `threshold` as a float if it lies strictly between 0 and 1, else raise CatsdogsError."""
    if not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) < 1.0:
        raise CatsdogsError(
            f"The decision threshold must lie strictly between 0 and 1, e.g. 0.5. Received: threshold={threshold!r}"
        )
    return float(threshold)


def decide(probabilities: numpy.typing.ArrayLike, threshold: float = DEFAULT_THRESHOLD) -> numpy.ndarray:
    """The one decision rule of catsdogs: the predicted class index of each probability row.

    Two classes: class 1 when its probability is at least `threshold`, else class 0.
    More classes: the most probable class (the threshold does not apply).

    Args:
        probabilities: one row (classes,) or rows (n, classes) of class probabilities.
        threshold: the decision threshold on P(class 1), for two classes.

    Returns:
        An int array of class indices, shaped like the rows (a 0-d array for one row).
    """
    probabilities = numpy.asarray(probabilities)
    if probabilities.shape[-1] == 2:
        return (probabilities[..., 1] >= threshold).astype(int)
    return numpy.argmax(probabilities, axis=-1)


class Predictor:
    """A loaded model with its class names and image settings, ready to label images.

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
        max_pixels: int = 50_000_000,
        min_side: int = 32,
        batch_size: int = DEFAULT_BATCH_SIZE,
        test_time_augmentation: bool = False,
    ) -> None:
        self.model = model
        self.test_time_augmentation = bool(test_time_augmentation)
        self.class_names = list(class_names)
        self.image_size = tuple(image_size)
        self.threshold = check_threshold(threshold)
        self.max_pixels = max_pixels
        self.min_side = min_side
        self.batch_size = batch_size

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
        from catsdogs.images import clean_image_bytes, decode_and_resize, encode_png

        if isinstance(image, (str, Path)):
            data = Path(image).read_bytes()
        elif isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
        else:
            data = encode_png(image)
        clean = clean_image_bytes(data, max_pixels=self.max_pixels, min_side=self.min_side)
        return decode_and_resize(clean.data, self.image_size).numpy()

    def predict(
        self, images: ImageInput | Sequence[ImageInput], *, sources: Sequence[str] | None = None
    ) -> list[Prediction]:
        """Label images in batches; a bad image gives an error row, never an exception.

        Args:
            images: a list of paths, bytes, PIL images or arrays (one image alone is accepted too).
            sources: optional names for the rows; default the path, or "<bytes N>"/"<array N>".

        Returns:
            A list of `Prediction`, one per image, in order.
        """
        images = [images] if _is_single_image(images) else list(images)
        sources = (
            list(sources) if sources is not None else [_source_name(image, index) for index, image in enumerate(images)]
        )
        predictions = []
        for start in range(0, len(images), self.batch_size):
            predictions.extend(
                self._predict_batch(images[start : start + self.batch_size], sources[start : start + self.batch_size])
            )
        return predictions

    def predict_pixels(self, pixels: numpy.typing.ArrayLike) -> numpy.ndarray:
        """Return class probabilities (n, classes) for already resized pixels (n, height, width, 3)."""
        pixels = numpy.asarray(pixels, dtype=numpy.float32)
        output = numpy.asarray(self.model.predict_on_batch(pixels), dtype=numpy.float64)
        if self.test_time_augmentation:
            # Cats and dogs look the same mirrored; averaging both views smooths out the model's quirks.
            mirrored = numpy.ascontiguousarray(pixels[:, :, ::-1, :])
            output = (output + numpy.asarray(self.model.predict_on_batch(mirrored), dtype=numpy.float64)) / 2.0
        if output.shape[-1] == 1:
            output = numpy.concatenate([1.0 - output, output], axis=-1)
        return output

    def _predict_batch(self, images, sources):
        rows, pixels = [], []
        for image, source in zip(images, sources):
            try:
                pixels.append(self.load_image(image))
                rows.append(None)
            except CatsdogsError as error:
                rows.append(Prediction(source, error=getattr(error, "reason", None) or str(error)))
            except OSError as error:
                rows.append(Prediction(source, error=f"cannot read file: {error.strerror or error}"))
            except Exception as error:  # A decoder failure must not stop the other images.
                rows.append(Prediction(source, error=f"cannot decode image: {type(error).__name__}"))
        probabilities = iter(self.predict_pixels(numpy.stack(pixels)) if pixels else [])
        return [
            row if row is not None else self._to_prediction(source, next(probabilities))
            for row, source in zip(rows, sources)
        ]

    def _to_prediction(self, source, probabilities):
        index = int(decide(probabilities, self.threshold))
        return Prediction(
            source,
            label=self.class_names[index],
            probability=float(probabilities[index]),
            probabilities={name: float(value) for name, value in zip(self.class_names, probabilities)},
        )


def _is_single_image(images):
    if isinstance(images, numpy.ndarray):
        return images.ndim in (2, 3)
    return isinstance(images, (str, Path, bytes, bytearray, memoryview)) or hasattr(images, "getpixel")


def _source_name(image, index):
    if isinstance(image, (str, Path)):
        return str(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"<bytes {index}>"
    return f"<array {index}>"
