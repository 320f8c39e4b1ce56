"""`keras.applications` backbones as transfer models: VGG16, MobileNetV2, EfficientNetB0, Xception, ResNet50.

`weights="imagenet"` downloads the ImageNet weights the way `keras.applications`
always does (into ~/.keras/models) on a machine that can reach the internet;
air-gapped installs pass a saved weights file as `model.weights` instead.

Each family gets its own `preprocess_input` arithmetic as ordinary layers, never
a `Lambda`, so a saved model loads with `safe_mode=True`:

- "tf" (MobileNetV2, Xception): pixels to -1..1, a `Rescaling(1/127.5, offset=-1)`.
- "caffe" (VGG16, ResNet50): RGB to BGR and the ImageNet BGR mean subtracted, as one
  frozen 1x1 convolution whose kernel is the channel permutation and whose bias is -mean.
- EfficientNetB0 scales and normalises inside the network; its `Normalization`
  layer is set to the ImageNet mean and variance here, whatever the weights, so
  the preprocessing never depends on how the model was built.
"""

import keras
import numpy
from keras import layers

from catsdogs.models import WEIGHTS_IMAGENET, register
from catsdogs.models.transfer import BACKBONE_LAYER, PREPROCESS_PREFIX, assemble_transfer_model

# ImageNet channel statistics on the 0..255 scale (caffe) and on 0..1 (EfficientNet).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def tf_mode_preprocessing():
    """Return the layers of `preprocess_input` in "tf" mode: 0..255 to -1..1."""
    return [layers.Rescaling(1.0 / 127.5, offset=-1.0, name=f"{PREPROCESS_PREFIX}rescaling")]


def caffe_mode_preprocessing():
    """Return the layers of `preprocess_input` in "caffe" mode: RGB to BGR, minus the ImageNet BGR mean.

    The layer gets its weights once the model is built; see `_set_caffe_weights`.
    """
    return [layers.Conv2D(3, 1, name=f"{PREPROCESS_PREFIX}bgr_mean")]


def _set_caffe_weights(model):
    # Output channel j (B, G, R) takes input channel 2 - j (R, G, B).
    kernel = numpy.zeros((1, 1, 3, 3), dtype="float32")
    for output_channel in range(3):
        kernel[0, 0, 2 - output_channel, output_channel] = 1.0
    bias = -numpy.asarray(CAFFE_MEAN_BGR, dtype="float32")
    model.get_layer(f"{PREPROCESS_PREFIX}bgr_mean").set_weights([kernel, bias])


def _backbone_input_shape(input_shape, minimum_side):
    # Keras refuses inputs below a family's minimum (Xception: 71 pixels) when the
    # size is given, but builds with open height and width. The outer model fixes
    # the size anyway, so tiny inputs (used by the tests) still build.
    if min(input_shape[:2]) < minimum_side:
        return (None, None, input_shape[2])
    return tuple(input_shape)


def _application_backbone(constructor, *, input_shape, weights, minimum_side=32):
    network = constructor(
        include_top=False,
        weights=WEIGHTS_IMAGENET if weights == WEIGHTS_IMAGENET else None,
        input_shape=_backbone_input_shape(input_shape, minimum_side),
    )
    return keras.Model(network.input, network.output, name=BACKBONE_LAYER)


def _build(name, constructor, preprocessing, *, input_shape, num_classes, dropout_rate, weights, minimum_side=32):
    backbone = _application_backbone(constructor, input_shape=input_shape, weights=weights, minimum_side=minimum_side)
    model = assemble_transfer_model(
        input_shape=input_shape,
        backbone=backbone,
        preprocessing=preprocessing,
        num_classes=num_classes,
        dropout_rate=dropout_rate,
        name=name,
    )
    if any(layer.name == f"{PREPROCESS_PREFIX}bgr_mean" for layer in model.layers):
        _set_caffe_weights(model)
    return model


def _register_application(name, constructor, preprocessing, *, last_conv_layer, minimum_side=32, note=""):
    """Register a frozen `keras.applications` backbone under a new classifier head as `name`.

    Args:
        name: the registry name, also the model's name.
        constructor: the `keras.applications` function, e.g. `keras.applications.VGG16`.
        preprocessing: a function returning the family's `preprocess_input` layers.
        last_conv_layer: the "backbone/<layer>" path Grad-CAM explains.
        minimum_side: the smallest input side Keras accepts for the family when the size is given.
        note: words added to the description after "keras.applications".
    """

    def builder(*, input_shape, num_classes, dropout_rate=0.5, weights=None):
        return _build(
            name,
            constructor,
            preprocessing(),
            minimum_side=minimum_side,
            input_shape=input_shape,
            num_classes=num_classes,
            dropout_rate=dropout_rate,
            weights=weights,
        )

    builder.__name__ = f"build_{name}"
    builder.__doc__ = (
        f"{constructor.__name__} (keras.applications{note}), frozen, under a new classifier head.\n\n"
        "Takes input_shape (height, width, 3) of raw pixels, num_classes, dropout_rate and weights\n"
        f'("imagenet", downloaded by Keras, or None); returns an uncompiled `keras.Model` named "{name}".'
    )
    register(name, pretrained=True, last_conv_layer=last_conv_layer)(builder)


_register_application(
    "vgg16",
    keras.applications.VGG16,
    caffe_mode_preprocessing,
    last_conv_layer="backbone/block5_conv3",
    note=", the seed's transfer example",
)
_register_application(
    "resnet50", keras.applications.ResNet50, caffe_mode_preprocessing, last_conv_layer="backbone/conv5_block3_out"
)
_register_application(
    "mobilenet_v2", keras.applications.MobileNetV2, tf_mode_preprocessing, last_conv_layer="backbone/out_relu"
)
# ImageNet weights expect 299x299; Keras refuses fewer than 71 pixels a side.
_register_application(
    "xception",
    keras.applications.Xception,
    tf_mode_preprocessing,
    last_conv_layer="backbone/block14_sepconv2_act",
    minimum_side=71,
)


@register("efficientnet_b0", pretrained=True, last_conv_layer="backbone/top_activation")
def build_efficientnet_b0(*, input_shape, num_classes, dropout_rate=0.2, weights=None):
    """EfficientNetB0 (keras.applications), frozen, under a new classifier head.

    Keras builds EfficientNetB0 slightly differently with and without ImageNet
    weights (an extra `Rescaling` layer only in the first case), so a model saved
    from one would not load into the other. Here the backbone is always built
    without weights, its `Normalization` layer always holds the ImageNet mean and
    variance, and ImageNet weights are copied in layer by layer.

    Args:
        input_shape: (height, width, 3) of the raw-pixel input.
        num_classes: number of classes.
        dropout_rate: dropout before the classifier.
        weights: "imagenet" (downloaded by Keras) or None.

    Returns:
        An uncompiled `keras.Model` named "efficientnet_b0".
    """
    backbone_shape = _backbone_input_shape(input_shape, 32)
    network = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=backbone_shape)
    if weights == WEIGHTS_IMAGENET:
        pretrained = keras.applications.EfficientNetB0(
            include_top=False, weights=WEIGHTS_IMAGENET, input_shape=backbone_shape
        )
        _copy_weights_in_order(pretrained, network)
    normalization = next(layer for layer in network.layers if isinstance(layer, layers.Normalization))
    # Normalization divides by sqrt(variance): the variance is the squared standard deviation.
    normalization.set_weights(
        [
            numpy.asarray(IMAGENET_MEAN_RGB, "float32"),
            numpy.square(numpy.asarray(IMAGENET_STDDEV_RGB, "float32")),
            *normalization.get_weights()[2:],
        ]
    )
    normalization.finalize_state()
    backbone = keras.Model(network.input, network.output, name=BACKBONE_LAYER)
    return assemble_transfer_model(
        input_shape=input_shape,
        backbone=backbone,
        preprocessing=[],
        num_classes=num_classes,
        dropout_rate=dropout_rate,
        name="efficientnet_b0",
    )


def _copy_weights_in_order(source, target):
    """Copy weights between two builds of the same network, layer by layer in order."""
    source_layers = [layer for layer in source.layers if layer.weights]
    target_layers = [layer for layer in target.layers if layer.weights]
    for source_layer, target_layer in zip(source_layers, target_layers, strict=True):
        target_layer.set_weights(source_layer.get_weights())
