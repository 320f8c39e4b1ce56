"""A small modern CNN trained from scratch: separable convolutions, BatchNorm, residual links.

In the spirit of *Deep Learning with Python*'s mini-Xception and the keras.io
"Image classification from scratch" example: a strided stem, then blocks of two
separable 3x3 convolutions with a max-pool that halves the resolution, each with
a 1x1 strided residual projection, then global average pooling. It is narrower
than the book's (which tops out at 512 filters) because on a 2-core CPU the
training time is set by FLOPs, and width costs quadratically in the 1x1 parts of
separable convolutions.
"""

import keras
from keras import layers

from catsdogs.models import classifier_head, register

STEM_FILTERS = 32
BLOCK_FILTERS = (64, 128, 256, 384)


def apply_residual_block(x, *, filters, block):
    """Apply two BN-ReLU-SeparableConv units and a 2x down-sampling max-pool, plus a projected shortcut.

    Args:
        x: the input tensor.
        filters: output channels of the block.
        block: block number, used in the layer names.

    Returns:
        The output tensor, at half the input's resolution.
    """
    residual = x
    for unit in (1, 2):
        x = layers.BatchNormalization(name=f"block{block}_bn{unit}")(x)
        x = layers.Activation("relu", name=f"block{block}_relu{unit}")(x)
        # Bias is redundant: the next BatchNorm (or the shortcut sum's BN) re-centres anyway.
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_sepconv{unit}")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"block{block}_pool")(x)
    residual = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False, name=f"block{block}_shortcut")(
        residual
    )
    return layers.Add(name=f"block{block}_add")([x, residual])


@register("xception_mini", last_conv_layer="top_relu")
def build_xception_mini(*, input_shape, num_classes, dropout_rate=0.5, weights=None):
    """A small from-scratch Xception-style CNN: separable convs, BatchNorm, residuals, global pooling.

    Args:
        input_shape: (height, width, channels) of the raw-pixel input.
        num_classes: number of classes.
        dropout_rate: dropout before the classifier.
        weights: unused; this family trains from scratch.

    Returns:
        An uncompiled `keras.Model` named "xception_mini".
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescaling")(inputs)
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    for block, filters in enumerate(BLOCK_FILTERS, start=1):
        x = apply_residual_block(x, filters=filters, block=block)
    x = layers.BatchNormalization(name="top_bn")(x)
    x = layers.Activation("relu", name="top_relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(dropout_rate, name="dropout")(x)
    outputs = classifier_head(x, num_classes=num_classes)
    return keras.Model(inputs, outputs, name="xception_mini")
