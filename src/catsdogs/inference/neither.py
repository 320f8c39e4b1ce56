"""The "not a cat or a dog" check for a run folder's `Predictor`: the ImageNet head of its EfficientNet-Lite0.

`runtime.answers.NeitherRule` turns ImageNet probabilities into the answer
"neither"; this module says whether a run can have the check and supplies the
probabilities. The ImageNet head is the pretrained EfficientNet-Lite0 with its
1,000-class top, the very network zero-shot predict runs
(`inference.zero_shot`), at 224 x 224 as the threshold was measured
(benchmarks/neither.py). A run gets the check when it tells cats from dogs
(two classes) on an ImageNet EfficientNet-Lite backbone (Lite0, Lite1 or
Lite2: each has an ImageNet head; the check always asks Lite0's, whose
threshold was measured); with more classes, another backbone or no ImageNet
weights the check is off, and the note says why.
"""

import numpy

from catsdogs.errors import CatsdogsError
from catsdogs.runtime.answers import NeitherRule, softmax

# The backbone whose ImageNet head the threshold was measured on, at this input size.
HEAD_MODEL = "efficientnet_lite0"
# Runs on these backbones (with ImageNet weights) get the check.
BACKBONES_WITH_AN_IMAGENET_HEAD = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
HEAD_IMAGE_SIZE = (224, 224)


class ImageNetHead:
    """The pretrained EfficientNet-Lite0 with its ImageNet top: pixels of any size in, probabilities (n, 1000) out.

    Args:
        cache_dir: the converted-weights cache; default $CATSDOGS_CACHE_DIR, else ~/.cache/catsdogs.
    """

    def __init__(self, cache_dir=None):
        self.cache_dir = cache_dir
        # Built at the first call, so that a predictor used for Grad-CAM or probabilities alone never pays for it.
        self.model = None

    def __call__(self, pixels):
        import tensorflow as tf

        from catsdogs.models.lite_weights import pretrained_efficientnet_lite0

        if self.model is None:
            self.model = pretrained_efficientnet_lite0(
                include_top=True, input_shape=(*HEAD_IMAGE_SIZE, 3), cache_dir=self.cache_dir
            )
        pixels = numpy.asarray(pixels, dtype=numpy.float32)
        if tuple(pixels.shape[1:3]) != HEAD_IMAGE_SIZE:
            # The same bilinear resize `images.decode_and_resize` applies, from the model's size to the head's.
            pixels = tf.image.resize(pixels, HEAD_IMAGE_SIZE, method="bilinear").numpy()
        return softmax(self.model.predict_on_batch(pixels))


def neither_check(config, class_names):
    """Whether a run can have the "neither" check: (rule, ImageNet head) or (None, None), and the note when off.

    Args:
        config: the run's `Config`.
        class_names: the run's classes, in label order.

    Returns:
        (rule, head, note): the `NeitherRule` and `ImageNetHead`, or None twice and a sentence saying why not.
    """
    off = "the 'neither' check is off: "
    if len(class_names) != 2:
        return (
            None,
            None,
            off + f"it tells cats and dogs from other photos, and this run has {len(class_names)} classes",
        )
    if config.model.name not in BACKBONES_WITH_AN_IMAGENET_HEAD or config.model.weights != "imagenet":
        return (
            None,
            None,
            (
                off + "it needs an ImageNet EfficientNet-Lite backbone (lite0, lite1 or lite2), and this run's "
                "backbone is "
                f"{config.model.name} (weights {config.model.weights})"
            ),
        )
    from catsdogs.models.lite_weights import lite_weights_path

    try:
        lite_weights_path(HEAD_MODEL)
    except CatsdogsError as error:
        return None, None, off + f"the ImageNet head cannot be loaded: {error}"
    return NeitherRule(), ImageNetHead(), None
