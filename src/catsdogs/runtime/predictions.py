"""One result type, one decision rule and one batching loop for every predictor.

`Prediction` is what every predictor returns for one image, `decide` turns
class probabilities into a class index, and `ImagePredictor` is the part that
all predictors share: batching, error rows (a bad image gives a `Prediction`
with `error`, never an exception), test-time augmentation and the two-class
sigmoid. The Keras `inference.Predictor` and the TensorFlow-free
`runtime.OnnxPredictor` differ only in how they load an image and call their
model. Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from pathlib import Path

import numpy

from catsdogs.choices import DEFAULT_BATCH_SIZE, DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, DEFAULT_THRESHOLD
from catsdogs.errors import CatsdogsError
from catsdogs.runtime.answers import Answer

if typing.TYPE_CHECKING:
    import numpy.typing
    from PIL import Image

    from catsdogs.runtime.answers import AbstainRule, NeitherRule

    # One image as predictors accept it: a path, the file's bytes, a PIL image or pixels.
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
        answer: what to tell a user: `label`, or "unsure" when the abstain rule says so, or "neither" when the
            ImageNet head sees no cat and no dog (`runtime.answers`); None on error.
        abstained: whether `answer` is not a class.
        reason: why it abstained, in words; None when it answered.
        calibrated_probability: the calibrated probability of `label`; None when no abstain rule applies.
    """

    source: str
    label: str | None = None
    probability: float | None = None
    probabilities: dict | None = None
    error: str | None = None
    answer: str | None = None
    abstained: bool = False
    reason: str | None = None
    calibrated_probability: float | None = None

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


def class_probabilities(output: numpy.typing.ArrayLike) -> numpy.ndarray:
    """Turn a model's output (n, 1) or (n, classes) into class probabilities (n, classes) as float64.

    A two-class model ends in one sigmoid unit, the probability p of class 1; class 0 then has 1 - p.

    Args:
        output: the model's output for a batch.

    Returns:
        A float64 array (n, classes).
    """
    output = numpy.asarray(output, dtype=numpy.float64)
    if output.shape[-1] == 1:
        output = numpy.concatenate([1.0 - output, output], axis=-1)
    return output


class ImagePredictor:
    """What every predictor shares: batching, error rows, test-time augmentation and the decision rule.

    A subclass loads one image with `load_image` and calls its model with `run_model`.

    Args:
        class_names: class names in label order.
        image_size: (height, width) the model takes.
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
        *,
        class_names: Sequence[str],
        image_size: Sequence[int],
        threshold: float = DEFAULT_THRESHOLD,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        min_side: int = DEFAULT_MIN_SIDE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        test_time_augmentation: bool = False,
    ) -> None:
        self.test_time_augmentation = bool(test_time_augmentation)
        self.class_names = list(class_names)
        self.image_size = tuple(image_size)
        self.threshold = check_threshold(threshold)
        self.max_pixels = max_pixels
        self.min_side = min_side
        self.batch_size = batch_size
        # Set by `use_abstain_rule`: without a rule every answer is the plain label.
        self.abstain_rule: AbstainRule | None = None
        self.abstain_note: str | None = None
        # Set by `use_neither_rule`: "not a cat or a dog", for predictors with an ImageNet head.
        self.neither_rule: NeitherRule | None = None
        self.neither_note: str | None = None

    def use_abstain_rule(self, rule: AbstainRule | None, note: str | None = None) -> None:
        """Answer "unsure" where `rule` says so (`runtime.answers`); None answers the plain label.

        Args:
            rule: the fitted rule, or None.
            note: why abstaining is off, in words, when it is; None when it is on.
        """
        self.abstain_rule = rule
        self.abstain_note = note

    def use_neither_rule(self, rule: NeitherRule | None, note: str | None = None) -> None:
        """Answer "neither" where the ImageNet head (`imagenet_probabilities`) sees no cat and no dog.

        Args:
            rule: the `runtime.answers.NeitherRule`, or None to leave the check off.
            note: why the check is off, in words, when it is.
        """
        self.neither_rule = rule
        self.neither_note = note

    def imagenet_probabilities(self, pixels: numpy.ndarray) -> numpy.ndarray:
        """ImageNet probabilities (n, 1000) for the pixels of the last `predict_pixels` call; subclasses with an
        ImageNet head override this."""
        raise NotImplementedError("this predictor has no ImageNet head")

    def load_image(self, image: ImageInput) -> numpy.ndarray:
        """Normalise and resize one image exactly as training does; see the subclasses."""
        raise NotImplementedError

    def run_model(self, pixels: numpy.ndarray) -> numpy.ndarray:
        """Return the model's raw output for float32 pixels (n, height, width, 3); see the subclasses."""
        raise NotImplementedError

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
        images, sources = self._named_inputs(images, sources)
        predictions = []
        for start in range(0, len(images), self.batch_size):
            predictions.extend(
                self._predict_batch(images[start : start + self.batch_size], sources[start : start + self.batch_size])
            )
        return predictions

    def predict_pixels(self, pixels: numpy.typing.ArrayLike) -> numpy.ndarray:
        """Return class probabilities (n, classes) for already resized pixels (n, height, width, 3)."""
        pixels = numpy.asarray(pixels, dtype=numpy.float32)
        output = numpy.asarray(self.run_model(pixels), dtype=numpy.float64)
        if self.test_time_augmentation:
            # Cats and dogs look the same mirrored; averaging both views smooths out the model's quirks.
            mirrored = numpy.ascontiguousarray(pixels[:, :, ::-1, :])
            output = (output + numpy.asarray(self.run_model(mirrored), dtype=numpy.float64)) / 2.0
        return class_probabilities(output)

    def _named_inputs(self, images, sources):
        """Return `images` as a list (one image alone becomes a list of one) and a source name for each."""
        images = [images] if _is_single_image(images) else list(images)
        sources = (
            list(sources) if sources is not None else [_source_name(image, index) for index, image in enumerate(images)]
        )
        return images, sources

    def _load_row(self, image, source):
        """Return the pixels of one image, or its error row: a bad image never raises."""
        try:
            return self.load_image(image)
        except CatsdogsError as error:
            return Prediction(source, error=getattr(error, "reason", None) or str(error))
        except OSError as error:
            return Prediction(source, error=f"cannot read file: {error.strerror or error}")
        except Exception as error:  # A decoder failure must not stop the other images.
            return Prediction(source, error=f"cannot decode image: {type(error).__name__}")

    def _predict_batch(self, images, sources):
        return self._finish_batch([self._load_row(image, source) for image, source in zip(images, sources)], sources)

    def _finish_batch(self, loaded, sources):
        """Predict the loaded images of a batch (`_load_row` results) and put the error rows in their places."""
        rows = [row if isinstance(row, Prediction) else None for row in loaded]
        pixels = [row for row in loaded if not isinstance(row, Prediction)]
        stacked = numpy.stack(pixels) if pixels else None
        probabilities = iter(self.predict_pixels(stacked) if pixels else [])
        masses = iter(
            self.neither_rule.mass(self.imagenet_probabilities(stacked))
            if pixels and self.neither_rule is not None
            else []
        )
        return [
            row if row is not None else self.to_prediction(source, next(probabilities), next(masses, None))
            for row, source in zip(rows, sources)
        ]

    def to_prediction(self, source: str, probabilities: numpy.ndarray, mass: float | None = None) -> Prediction:
        """Decide one image's label from its probabilities and apply the abstain and "neither" rules.

        Args:
            source: the image's name in the result.
            probabilities: the model's probabilities of the classes, in label order.
            mass: the ImageNet head's cat-and-dog mass for the "neither" rule, or None.

        Returns:
            A `Prediction`.
        """
        index = int(decide(probabilities, self.threshold))
        label = self.class_names[index]
        answer = Answer(label, False, None, None)
        if self.abstain_rule is not None:
            answer = self.abstain_rule.answer(probabilities, index)
        if self.neither_rule is not None and mass is not None:
            answer = self.neither_rule.check(answer, float(mass))
        return Prediction(
            source,
            label=label,
            probability=float(probabilities[index]),
            probabilities={name: float(value) for name, value in zip(self.class_names, probabilities)},
            # The Answer's fields are Prediction's answer fields, name for name.
            **dataclasses.asdict(answer),
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
