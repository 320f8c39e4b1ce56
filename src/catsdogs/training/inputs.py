"""The data a run trains on: the tf.data pipeline of each split, and a figure of what augmentation does.

The figure runs the pipeline's own augmentation function, so it shows exactly
what training sees.
"""

from pathlib import Path

import tensorflow as tf

from catsdogs.choices import SPLITS
from catsdogs.data.augment import augment_batch
from catsdogs.data.dataset import list_images, make_dataset
from catsdogs.errors import CatsdogsError
from catsdogs.images import decode_and_resize
from catsdogs.runs import AUGMENTATION_FIGURE, RunDir


def load_splits(
    data_dir: Path, *, image_size: tuple[int, int], batch_size: int, seed: int, augment: dict | None, cache: bool
) -> tuple[dict, list[str], dict[str, int]]:
    """Build the tf.data pipeline of every split in `data_dir`; only train is shuffled and augmented.

    Args:
        data_dir: a folder made by `catsdogs prepare`; test/ is optional.
        image_size: (height, width) the photos are resized to.
        batch_size: photos per batch.
        seed: seed for shuffling and augmentation.
        augment: the augmentation arguments, or None.
        cache: cache the decoded photos in memory after the first epoch.

    Returns:
        (datasets, class_names, counts): {split: dataset}, the class names in label order, {split: photos}.

    Raises:
        CatsdogsError: when a split's class folders differ from train's.
    """
    datasets, counts = {}, {}
    class_names = None
    for split in SPLITS:
        split_dir = data_dir / split
        if split == "test" and not split_dir.is_dir():
            continue
        paths, _, split_classes = list_images(split_dir)
        if class_names is not None and split_classes != class_names:
            raise CatsdogsError(
                f"The {split} split has other class folders than train. Re-run `catsdogs prepare`. "
                f"Received: train={class_names}, {split}={split_classes}"
            )
        datasets[split], class_names = make_dataset(
            split_dir,
            image_size=image_size,
            batch_size=batch_size,
            shuffle=split == "train",
            seed=seed,
            augment=augment if split == "train" else None,
            cache=cache,
        )
        counts[split] = len(paths)
    return datasets, class_names, counts


def write_augmentation_figure(
    run_dir: RunDir,
    train_dir: Path,
    *,
    image_size: tuple[int, int],
    augment: dict,
    seed: int,
    rows: int = 4,
    versions: int = 5,
) -> None:
    """Draw a few training photos, one per class in turn, each with `versions` augmented copies, into the run folder."""
    from catsdogs.plots import augmentation_figure, figure_png_bytes

    paths, labels, class_names = list_images(train_dir)
    by_class = [[path for path, label in zip(paths, labels) if label == index] for index in range(len(class_names))]
    picks = []
    for row in range(rows):
        class_paths = by_class[row % len(class_names)]
        if row // len(class_names) < len(class_paths):
            picks.append((class_paths[row // len(class_names)], class_names[row % len(class_names)]))
    originals = tf.stack([decode_and_resize(tf.io.read_file(path), image_size) for path, _ in picks])
    batch = tf.cast(originals, tf.float32)
    # The pipeline's own augmentation, so the figure shows exactly what training sees.
    augmented = tf.stack(
        [augment_batch(batch, tf.constant([seed, version], tf.int64), **augment) for version in range(versions)], axis=1
    )
    figure = augmentation_figure(originals.numpy(), augmented.numpy(), row_titles=[name for _, name in picks])
    run_dir.write_figure(AUGMENTATION_FIGURE, figure_png_bytes(figure))
