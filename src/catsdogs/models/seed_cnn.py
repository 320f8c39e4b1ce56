"""The seed notes' small convnet, and the same network with batch normalisation.

`seed_cnn` is the seed's `create_cnn_model()` layer for layer, with its layer
names: three Conv2D + ReLU + MaxPool(2) blocks (32, 64, 32 filters), Flatten,
Dropout, Dense(128), Dense(64) and a sigmoid output. At 180x180x3 it has
1,684,705 parameters, as the seed reports. Two things differ from the seed's
code, neither changing a parameter: rescaling to 0..1 is the model's first
layer (augmentation runs in the tf.data pipeline instead), and with more than
two classes the output is a softmax.
"""

import keras
from keras import layers

from catsdogs.models import classifier_head, register

CONV_FILTERS = (32, 64, 32)


def apply_seed_block(x, *, filters, block, batch_norm):
    """Apply one convolution block: Conv2D 3x3, ReLU, optional BatchNorm, MaxPool 2x2.

    Args:
        x: the input tensor.
        filters: number of convolution filters.
        block: block number, used in the layer names (`conv2d_block1` ...).
        batch_norm: insert BatchNormalization between the convolution and the ReLU.

    Returns:
        The output tensor.
    """
    if batch_norm:
        # The convolution's bias is redundant before BatchNorm, which adds its own shift.
        x = layers.Conv2D(filters, (3, 3), use_bias=False, name=f"conv2d_block{block}")(x)
        x = layers.BatchNormalization(name=f"batchnorm_block{block}")(x)
        x = layers.Activation("relu", name=f"relu_block{block}")(x)
    else:
        x = layers.Conv2D(filters, (3, 3), activation="relu", name=f"conv2d_block{block}")(x)
    return layers.MaxPooling2D((2, 2), name=f"maxpool_block{block}")(x)


def _build_seed_network(*, input_shape, num_classes, dropout_rate, batch_norm, name):
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescaling")(inputs)
    for block, filters in enumerate(CONV_FILTERS, start=1):
        x = apply_seed_block(x, filters=filters, block=block, batch_norm=batch_norm)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout_rate, name="dropout_regularization")(x)
    x = layers.Dense(128, activation="relu", name="dense_features")(x)
    x = layers.Dense(64, activation="relu", name="dense_abstract")(x)
    output_name = "binary_output" if num_classes == 2 else "class_output"
    outputs = classifier_head(x, num_classes=num_classes, name=output_name)
    return keras.Model(inputs, outputs, name=name)


@register("seed_cnn", last_conv_layer="conv2d_block3")
def build_seed_cnn(*, input_shape, num_classes, dropout_rate=0.5, weights=None):
    """The seed notes' CNN exactly: 3 conv blocks, dropout, two dense layers (1,684,705 params at 180x180).

    Args:
        input_shape: (height, width, channels) of the raw-pixel input.
        num_classes: number of classes.
        dropout_rate: dropout after Flatten (the seed's 0.5).
        weights: unused; this family trains from scratch.

    Returns:
        An uncompiled `keras.Model` named "seed_cnn".
    """
    return _build_seed_network(
        input_shape=input_shape, num_classes=num_classes, dropout_rate=dropout_rate, batch_norm=False, name="seed_cnn"
    )


@register("seed_cnn_bn", last_conv_layer="relu_block3")
def build_seed_cnn_bn(*, input_shape, num_classes, dropout_rate=0.5, weights=None):
    """The seed CNN with BatchNormalization after each convolution (the seed's proposed improvement).

    Args:
        input_shape: (height, width, channels) of the raw-pixel input.
        num_classes: number of classes.
        dropout_rate: dropout after Flatten.
        weights: unused; this family trains from scratch.

    Returns:
        An uncompiled `keras.Model` named "seed_cnn_bn".
    """
    return _build_seed_network(
        input_shape=input_shape, num_classes=num_classes, dropout_rate=dropout_rate, batch_norm=True, name="seed_cnn_bn"
    )
