"""The two phases of transfer learning, as pieces that `training.train` puts together.

Phase 1 trains the head on a frozen backbone. Without augmentation the pooled
features of every photo are computed once (`catsdogs.training.features`), optionally
with horizontally flipped copies, and a stand-alone copy of the head trains on
them in seconds; its weights then go back into the full model. With
augmentation the frozen backbone runs end to end.

Phase 2, optional, fine-tunes the top N blocks of the backbone at a low
learning rate on its own cosine schedule, with BatchNorm kept in inference
mode. Without augmentation the same extraction pass also caches the
activations that enter the lowest of those blocks, so fine-tuning runs only
the top of the backbone; with augmentation, or where the backbone cannot be
cut there, the full model trains end to end.

Either way the result is the normal full model (backbone and trained head),
saved as `model.keras` like every other model.
"""

import dataclasses
import os
from pathlib import Path

import keras
import numpy
import tensorflow as tf
from keras import layers

from catsdogs.choices import DEFAULT_BATCH_SIZE
from catsdogs.data.dataset import list_images
from catsdogs.models.transfer import (
    FEATURES_LAYER,
    PREPROCESS_PREFIX,
    backbone_blocks,
    backbone_of,
    build_head,
    copy_head_weights,
    is_transfer_model,
    unfreeze_top_blocks,
)
from catsdogs.training.features import FeatureCache, FeatureExtractor, cached_features

FEATURE_CACHE_SUBFOLDER = Path(".cache") / "features"
POOLED = "pooled"
# Cached cut activations above this size per photo would not fit in memory for a
# big split (VGG16's block5 input is 400 kB); then fine-tuning runs end to end.
MAX_CUT_VALUES_PER_IMAGE = 64 * 1024


def uses_cached_features(model, *, augment, feature_cache):
    """Whether phase 1 trains on cached features: a transfer model, no augmentation, the cache switched on."""
    return bool(feature_cache) and not augment and is_transfer_model(model)


def feature_cache_folder(data_dir, fallback_dir):
    """Return the cache folder: DATA/.cache/features when DATA is writable, else `fallback_dir`/features."""
    data_dir = Path(data_dir)
    if os.access(data_dir, os.W_OK):
        return data_dir / FEATURE_CACHE_SUBFOLDER
    return Path(fallback_dir) / "features"


def cut_tensor(model, number_of_blocks):
    """Return (tensor, block): the backbone tensor entering the lowest of the top `number_of_blocks` blocks.

    Returns (None, None) when fine-tuning is off, or when that tensor does not
    split the backbone in two (then fine-tuning runs end to end).
    """
    backbone = backbone_of(model)
    blocks = backbone_blocks(backbone)
    if not 0 < number_of_blocks <= len(blocks):
        return None, None
    lowest = blocks[len(blocks) - number_of_blocks]
    first = next(layer for layer in backbone.layers if layer.name.startswith(f"{lowest}_"))
    tensor = first.input
    if isinstance(tensor, (list, tuple)) or int(numpy.prod(tensor.shape[1:])) > MAX_CUT_VALUES_PER_IMAGE:
        return None, None
    try:
        keras.Model(tensor, backbone.output)
    except ValueError:
        # Something below the cut feeds a layer above it: no clean split.
        return None, None
    return tensor, lowest


def _preprocessing_copies(model):
    """Copies of the model's preprocess_ layers, so a temporary model never adds nodes to the real ones."""
    copies = []
    for layer in model.layers:
        if layer.name.startswith(PREPROCESS_PREFIX):
            copies.append((layer.__class__.from_config(layer.get_config()), layer.get_weights()))
    return copies


def extraction_model(model, cut=None, cut_block=None):
    """Build the model that feature extraction runs: raw pixels to [cut activations,] pooled features.

    Args:
        model: a transfer model.
        cut: a tensor from `cut_tensor`, or None for pooled features only.
        cut_block: the block that `cut` enters, which names the output ("cut_block6b").

    Returns:
        (feature_model, output_names).
    """
    backbone = backbone_of(model)
    lower = keras.Model(backbone.input, [cut, backbone.output] if cut is not None else [backbone.output])
    inputs = keras.Input(shape=model.input.shape[1:], name="image")
    x = inputs
    for copy, weights in _preprocessing_copies(model):
        x = copy(x)
        copy.set_weights(weights)
    outputs = lower(x)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    pooled = layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(outputs[-1])
    if cut is None:
        return keras.Model(inputs, pooled, name=f"{model.name}_features"), [POOLED]
    return keras.Model(inputs, [outputs[0], pooled], name=f"{model.name}_features"), [f"cut_{cut_block}", POOLED]


@dataclasses.dataclass
class SplitFeatures:
    """Cached arrays of one split: labels, pooled features and optional cut activations, flipped copies appended."""

    labels: numpy.ndarray
    pooled: numpy.ndarray
    cut: numpy.ndarray | None = None


def load_split_features(
    model,
    data_dir,
    *,
    splits,
    image_size,
    cut=None,
    cut_block=None,
    flip_train=False,
    cache=None,
    engine="auto",
    batch_size=DEFAULT_BATCH_SIZE,
):
    """Extract (or read from the cache) the features of each split.

    Args:
        model: a transfer model with a frozen backbone.
        data_dir: the prepared data folder.
        splits: split names, e.g. ("train", "validation").
        image_size: (height, width).
        cut: a tensor from `cut_tensor` to also cache the activations entering the fine-tuned blocks.
        cut_block: the block `cut` enters, from `cut_tensor`.
        flip_train: append horizontally flipped copies of the train photos' features.
        cache: a `FeatureCache`, or None.
        engine: "auto", "onnxruntime" or "keras".
        batch_size: photos per model call.

    Returns:
        {split: SplitFeatures}.
    """
    feature_model, output_names = extraction_model(model, cut, cut_block)
    extractor = FeatureExtractor(feature_model, image_size=image_size, output_names=output_names, engine=engine)
    # Cut activations are large; half precision halves the cache and memory at no cost in accuracy.
    dtypes = ["float16", "float32"] if cut is not None else None
    result = {}
    for split in splits:
        paths, labels, _ = list_images(Path(data_dir) / split)
        passes = [False, True] if (flip_train and split == "train") else [False]
        parts = [
            cached_features(
                extractor,
                cache,
                paths=paths,
                labels=labels,
                root=data_dir,
                flip=flip,
                batch_size=batch_size,
                output_dtypes=dtypes,
            )[0]
            for flip in passes
        ]
        result[split] = SplitFeatures(
            labels=numpy.concatenate([numpy.asarray(labels)] * len(parts)),
            pooled=numpy.concatenate([part[POOLED] for part in parts]),
            cut=numpy.concatenate([part[output_names[0]] for part in parts]) if cut is not None else None,
        )
    return result


def features_dataset(inputs, labels, *, batch_size, num_classes, shuffle=False, seed=0):
    """Return a tf.data pipeline of (features, labels) batches, reshuffled every epoch when asked."""
    label_dtype = "float32" if num_classes == 2 else "int32"
    dataset = tf.data.Dataset.from_tensor_slices((inputs, numpy.asarray(labels).astype(label_dtype)))
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    # Cut activations are stored in float16; the model computes in float32.
    return dataset.batch(batch_size).map(lambda x, y: (tf.cast(x, "float32"), y)).prefetch(tf.data.AUTOTUNE)


def head_training_model(model):
    """Return the stand-alone head that trains on pooled features; see `finish_head_training`."""
    return build_head(model)


def finish_head_training(head, model):
    """Copy the trained head's weights into the full model."""
    copy_head_weights(head, model)


def fine_tuning_model(model, number_of_blocks, cut=None):
    """Unfreeze the top blocks and return the model that fine-tuning fits.

    Args:
        model: a transfer model whose head is trained.
        number_of_blocks: blocks to unfreeze, from the top.
        cut: a tensor from `cut_tensor`: fit only the backbone above it, on cached
            activations. None fits the full model on images.

    Returns:
        (fit_model, finish): the model to compile and fit, and a function that puts
        the result back into `model` (the backbone layers are shared and train in place).
    """
    unfreeze_top_blocks(model, number_of_blocks)
    if cut is None:
        return model, lambda: None
    backbone = backbone_of(model)
    upper = keras.Model(cut, backbone.output)
    head = build_head(model)
    outputs = head(layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(upper.output))
    fit_model = keras.Model(upper.input, outputs, name=f"{model.name}_top")
    return fit_model, lambda: copy_head_weights(head, model)


def fine_tuning_optimizer(name, *, learning_rate, total_steps, weight_decay=0.0, momentum=0.9):
    """Return phase 2's optimizer: cosine decay from `learning_rate` to zero over `total_steps`."""
    from catsdogs.training.optimizers import build_optimizer

    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate, decay_steps=max(1, total_steps)
    )
    return build_optimizer(name, learning_rate=schedule, weight_decay=weight_decay, momentum=momentum)


def open_feature_cache(data_dir, fallback_dir):
    """Return a `FeatureCache` in `feature_cache_folder(data_dir, fallback_dir)`."""
    return FeatureCache(feature_cache_folder(data_dir, fallback_dir))
