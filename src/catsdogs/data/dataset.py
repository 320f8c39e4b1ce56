"""The tf.data input pipeline over a prepared split folder (`DATA/<split>/<class>/`).

Images leave the pipeline as float32 pixels in 0..255. Models rescale inside
themselves, so a saved model takes raw pixels and nothing is scaled twice
(one classic way for a network to sit at loss ln 2, as the seed's did).
"""

from pathlib import Path

import tensorflow as tf

from catsdogs.data.augment import augment_batch
from catsdogs.data.pipeline import PREFETCH_BATCHES, parallel_calls, without_autotuning
from catsdogs.errors import CatsdogsError
from catsdogs.images import TRAINING_EXTENSIONS, decode_and_resize


def list_images(split_dir):
    """List the image files of a split folder with their labels.

    Labels follow the sorted class folder names. Hidden files and folders are ignored.

    Args:
        split_dir: a folder holding one sub-folder per class.

    Returns:
        (paths, labels, class_names): paths as strings, integer labels, class names in label order.

    Raises:
        CatsdogsError: if the folder is missing, has fewer than two classes, or a class has no images.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise CatsdogsError(
            f"The split folder does not exist. Expected a folder made by `catsdogs prepare`, holding one "
            f"folder per class. Received: split_dir={split_dir}"
        )
    class_names = sorted(
        entry.name for entry in split_dir.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )
    if len(class_names) < 2:
        raise CatsdogsError(
            f"A split needs at least two class folders. Run `catsdogs prepare` first, or check the path. "
            f"Received: split_dir={split_dir}, classes={class_names}"
        )
    paths, labels = [], []
    for label, class_name in enumerate(class_names):
        class_paths = sorted(
            str(path)
            for path in (split_dir / class_name).rglob("*")
            if path.suffix.lower() in TRAINING_EXTENSIONS and path.is_file() and not _is_hidden(path, split_dir)
        )
        if not class_paths:
            raise CatsdogsError(
                f"Class folder '{class_name}' holds no images ({', '.join(TRAINING_EXTENSIONS)}). Every class "
                f"needs images; re-run `catsdogs prepare`. Received: folder={split_dir / class_name}"
            )
        paths.extend(class_paths)
        labels.extend([label] * len(class_paths))
    return paths, labels, class_names


def _is_hidden(path, root):
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def make_dataset(
    split_dir, *, image_size, batch_size, shuffle=False, seed=0, augment=None, cache=False, num_classes=None
):
    """Build the batched tf.data pipeline for one split.

    Args:
        split_dir: the split folder, e.g. `DATA/train`.
        image_size: (height, width) every image is resized to.
        batch_size: images per batch.
        shuffle: shuffle the order, reshuffled every epoch. Only for training.
        seed: seed for the shuffle and the augmentation.
        augment: None for no augmentation, or a dict of `augment_batch` keyword arguments.
        cache: keep decoded, resized images in memory after the first pass.
        num_classes: the number of classes the model expects; checked against the folders if given.

    Returns:
        (dataset, class_names): batches of (float32 images 0..255, labels) and the class names in label
        order. Labels are float32 0/1 for two classes, int32 class indices otherwise.
    """
    paths, labels, class_names = list_images(split_dir)
    if num_classes is not None and num_classes != len(class_names):
        raise CatsdogsError(
            f"The split has {len(class_names)} classes but the model expects {num_classes}. Use data with the "
            f"same classes as the model. Received: split_dir={split_dir}, classes={class_names}"
        )
    label_dtype = tf.float32 if len(class_names) == 2 else tf.int32
    dataset = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, label_dtype)))

    def load(path, label):
        return decode_and_resize(tf.io.read_file(path), image_size), label

    if cache:
        # Shuffle after the cache, or every epoch would replay the first epoch's order.
        dataset = dataset.map(load, num_parallel_calls=parallel_calls()).cache()
        if shuffle:
            dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    else:
        # Shuffle file names, not decoded images: the buffer then costs bytes, not megabytes.
        if shuffle:
            dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.map(load, num_parallel_calls=parallel_calls())
    dataset = dataset.batch(batch_size).map(lambda images, labels: (tf.cast(images, tf.float32), labels))
    if augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda batch, batch_seed: (augment_batch(batch[0], batch_seed, **augment), batch[1]),
            num_parallel_calls=parallel_calls(),
        )
    return without_autotuning(dataset.prefetch(PREFETCH_BATCHES)), class_names


def augment_arguments(enabled, flip, rotation, zoom, translation, contrast, brightness):
    """Return the `augment` argument for `make_dataset` from the [augment] settings, or None if off."""
    if not enabled:
        return None
    return dict(
        flip=flip, rotation=rotation, zoom=zoom, translation=translation, contrast=contrast, brightness=brightness
    )
