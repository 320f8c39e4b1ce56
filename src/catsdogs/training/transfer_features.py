"""What the transfer phases train on when the backbone's output is cached: features and cut activations.

Without augmentation a frozen backbone gives every photo the same output each
epoch, so phase 1 trains the head on pooled features computed once per photo
(`catsdogs.training.features` computes and caches them), optionally with
horizontally flipped copies. The same extraction pass can also return the
activations that enter the lowest fine-tuned block (`cut_tensor`), so phase 2
runs only the top of the backbone.
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
from catsdogs.data.pipeline import PREFETCH_BATCHES, without_autotuning
from catsdogs.models.transfer import FEATURES_LAYER, PREPROCESS_PREFIX, backbone_blocks, backbone_of, is_transfer_model
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
    dataset = dataset.batch(batch_size).map(lambda x, y: (tf.cast(x, "float32"), y))
    return without_autotuning(dataset.prefetch(PREFETCH_BATCHES))


def open_feature_cache(data_dir, fallback_dir):
    """Return a `FeatureCache` in `feature_cache_folder(data_dir, fallback_dir)`."""
    return FeatureCache(feature_cache_folder(data_dir, fallback_dir))
