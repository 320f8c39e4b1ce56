"""A tiny stand-in for a pretrained backbone, for fast transfer-learning tests.

It has the shape the real ones have: named blocks (`block1_...`, `block2_...`),
BatchNorm, a residual connection and a `top_activation` feature map, nested
as a "backbone" model under the standard transfer head. `registered` puts a
builder in the model registry for the length of a `with` block, through the
registry's public `register` and `unregister`.
"""

import contextlib

import keras
import numpy as np
from keras import layers

from catsdogs.models import register, unregister
from catsdogs.models.transfer import assemble_transfer_model

BLOCK_FILTERS = ((1, 8), (2, 16), (3, 16))


def tiny_backbone(input_shape=(32, 32, 3), seed=0):
    """Return a small 'backbone' model with three named blocks and non-trivial BatchNorm statistics."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=input_shape, name="backbone_input")
    x = layers.Rescaling(1.0 / 255, name="rescaling")(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="stem_conv")(x)
    for block, filters in BLOCK_FILTERS:
        shortcut = x
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = layers.BatchNormalization(name=f"block{block}_bn")(x)
        x = layers.ReLU(name=f"block{block}_relu")(x)
        if shortcut.shape[-1] == filters:
            x = layers.Add(name=f"block{block}_add")([x, shortcut])
    x = layers.Conv2D(16, 1, name="top_conv")(x)
    x = layers.BatchNormalization(name="top_bn")(x)
    x = layers.ReLU(name="top_activation")(x)
    backbone = keras.Model(inputs, x, name="backbone")
    # Moving statistics away from 0 and 1, so a drift would show.
    rng = np.random.default_rng(seed)
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    gamma + 0.1,
                    beta + 0.1,
                    mean + rng.uniform(0, 0.2, mean.shape),
                    variance + rng.uniform(0.5, 1.0, variance.shape),
                ]
            )
    return backbone


def tiny_transfer_model(input_shape=(32, 32, 3), num_classes=2, dropout_rate=0.0, seed=0, name="tiny_transfer"):
    """Return a transfer model around `tiny_backbone`, shaped like the registry's."""
    return assemble_transfer_model(
        input_shape=input_shape,
        backbone=tiny_backbone(input_shape, seed=seed),
        preprocessing=[layers.Rescaling(2.0, offset=-1.0, name="preprocess_rescaling")],
        num_classes=num_classes,
        dropout_rate=dropout_rate,
        name=name,
    )


def build_tiny_transfer(*, input_shape, num_classes, dropout_rate=0.0, weights=None):
    """A registry builder around `tiny_transfer_model`.

    `weights` is ignored because the stand-in has no pretrained weights, and
    `dropout_rate` too: without dropout the tiny runs stay deterministic.
    """
    return tiny_transfer_model(input_shape=input_shape, num_classes=num_classes)


@contextlib.contextmanager
def registered(name, builder, *, pretrained=False, last_conv_layer=None):
    """Register `builder` under `name` inside the `with` block, and remove it afterwards, even on failure."""
    register(name, pretrained=pretrained, last_conv_layer=last_conv_layer)(builder)
    try:
        yield name
    finally:
        unregister(name)
