"""`train.class_weight`: weigh each class's share of the loss by how rare it is in the training split.

With 100 cats and 500 dogs, a model that leans towards "dogs" lowers the
average loss, so it misses more cats than it would on balanced data. Balanced
weights (scikit-learn's `compute_class_weight("balanced")`: total photos /
(classes x the class's photos), 3.0 for the cats and 0.6 for the dogs here)
make every class count as much in the loss as the others. The mean weight over
the training photos stays 1, so the loss keeps its scale and the learning rate
needs no change.

The weights come from the photos in DATA/train; flipped copies of cached
features double every class alike and leave them unchanged. They go to Keras
`fit(class_weight=...)` in every phase: training from scratch, the transfer
head on cached features or images, and fine-tuning. Validation and test losses
stay unweighted.
"""

import logging
from collections.abc import Sequence

import numpy

from catsdogs.errors import CatsdogsError

logger = logging.getLogger("catsdogs.training")

MODE_NONE = "none"
MODE_BALANCED = "balanced"


def class_weights(mode: str, labels: Sequence[int], class_names: Sequence[str]) -> dict[int, float] | None:
    """Return Keras's `class_weight` {class index: weight} for `mode`, or None when the classes are not weighted.

    Args:
        mode: `train.class_weight`: "none" or "balanced".
        labels: the class index of every training photo.
        class_names: the classes, in label order.

    Raises:
        CatsdogsError: for an unknown mode, or a class without training photos (it cannot be weighted).
    """
    if mode == MODE_NONE:
        return None
    if mode != MODE_BALANCED:
        raise CatsdogsError(
            f"Unknown class weighting. Use {MODE_NONE!r} or {MODE_BALANCED!r}, e.g. "
            f"--set train.class_weight={MODE_BALANCED}. Received: train.class_weight={mode!r}"
        )
    from sklearn.utils.class_weight import compute_class_weight

    counts = class_counts(labels, class_names)
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        raise CatsdogsError(
            "Balanced class weights need training photos of every class, and these have none. Add photos to "
            "DATA/train/<class>/ (re-run `catsdogs prepare`), or --set train.class_weight=none. "
            f"Received: classes without photos={empty}, counts={counts}"
        )
    weights = compute_class_weight(MODE_BALANCED, classes=numpy.arange(len(class_names)), y=numpy.asarray(labels))
    return {index: float(weight) for index, weight in enumerate(weights)}


def class_counts(labels: Sequence[int], class_names: Sequence[str]) -> dict[str, int]:
    """Return {class name: training photos} from the photos' class indices."""
    counted = numpy.bincount(numpy.asarray(labels, dtype=numpy.int64), minlength=len(class_names))
    return {name: int(count) for name, count in zip(class_names, counted)}


def class_weight_record(
    mode: str, labels: Sequence[int], class_names: Sequence[str], weights: dict[int, float] | None
) -> dict:
    """Return what run.json records under "class_weight": the mode, the training counts and the weights by name.

    Args:
        mode: `train.class_weight`.
        labels: the class index of every training photo.
        class_names: the classes, in label order.
        weights: what `class_weights` returned (None: every class weighs 1).
    """
    return {
        "mode": mode,
        "train_counts": class_counts(labels, class_names),
        "weights": None if weights is None else {class_names[index]: weight for index, weight in weights.items()},
    }


def log_class_weights(record: dict) -> None:
    """Log the class weights a run trains with, next to the training counts they come from."""
    counts = ", ".join(f"{name} {count}" for name, count in record["train_counts"].items())
    if record["weights"] is None:
        logger.info("Class weights: none (every training photo weighs 1); training photos: %s", counts)
        return
    weights = ", ".join(f"{name} {weight:.3f}" for name, weight in record["weights"].items())
    logger.info("Class weights (%s): %s; from the training photos: %s", record["mode"], weights, counts)
