"""Transfer learning inside a run folder: train the head on a frozen backbone, then optionally fine-tune.

`training.train` calls `fit_transfer` for models with a nested backbone; both phases fit through `training.fit`.

Phase 1 trains the head with the run folder's usual callbacks (checkpoint,
early stopping, learning-rate reduction, history, backup). Without
augmentation it trains a stand-alone copy of the head on pooled features
computed once per photo (`catsdogs.training.transfer_features`), in seconds;
its weights then go back into the full model. With augmentation the frozen
backbone runs end to end.

Phase 2, optional, fine-tunes the top N blocks of the backbone at a low
learning rate on its own cosine schedule, with BatchNorm kept in inference
mode, and appends its epochs to the same history.csv. Without augmentation it
trains only the top of the backbone, on cached activations that enter the
lowest of those blocks; with augmentation, or where the backbone cannot be
cut there, the full model trains end to end.

Either way the full model (backbone and trained head) is committed as the run's
best checkpoint and the run is marked fitted; `training.train` saves it as
`model.keras`. A run killed while fitting fits again: cheap, the features are cached.
Class weights (`train.class_weight`) apply to the training loss of both phases.
"""

import dataclasses
import logging
import math
import time
from pathlib import Path

import keras
from keras import layers

from catsdogs.choices import DEFAULT_BATCH_SIZE
from catsdogs.data.dataset import list_images
from catsdogs.models.saving import load_committed_checkpoint
from catsdogs.models.transfer import (
    FEATURES_LAYER,
    backbone_of,
    build_head,
    copy_head_weights,
    freeze_backbone,
    unfreeze_top_blocks,
)
from catsdogs.runs import STATUS_FITTED, RunDir
from catsdogs.training.callbacks import CallbackSettings, build_callbacks, fine_tuning_callbacks
from catsdogs.training.fit import Progress, compile_model, fit_model
from catsdogs.training.optimizers import OptimizerSettings
from catsdogs.training.transfer_features import (
    SplitFeatures,
    cut_tensor,
    features_dataset,
    load_split_features,
    open_feature_cache,
    uses_cached_features,
)

logger = logging.getLogger("catsdogs.training")

# Fine-tuning decays its own learning rate from `fine_tune_learning_rate` to zero.
FINE_TUNING_SCHEDULE = "cosine"


@dataclasses.dataclass(frozen=True)
class TransferSettings:
    """How a transfer model trains: cached features, and the optional fine-tuning phase.

    Attributes:
        feature_cache: train the head on cached pooled features when augmentation is off.
        feature_flip: also train on the features of horizontally flipped photos.
        feature_engine: what computes the features: "auto", "onnxruntime" or "keras".
        fine_tune_blocks: backbone blocks to fine-tune after the head, from the top; 0 skips phase 2.
        fine_tune_epochs: fine-tuning epochs (the best by validation loss is kept).
        fine_tune_learning_rate: fine-tuning's starting learning rate, decayed to zero.
    """

    feature_cache: bool
    feature_flip: bool
    feature_engine: str
    fine_tune_blocks: int
    fine_tune_epochs: int
    fine_tune_learning_rate: float


def fit_transfer(
    model: keras.Model,
    run_dir: RunDir,
    datasets: dict,
    *,
    data_dir: Path,
    image_size: tuple[int, int],
    augment: dict | None,
    num_classes: int,
    epochs: int,
    batch_size: int,
    seed: int,
    optimizer: OptimizerSettings,
    callback_settings: CallbackSettings,
    transfer: TransferSettings,
    progress: Progress,
    extra_callbacks=(),
    class_weight: dict[int, float] | None = None,
) -> dict:
    """Fit a transfer model in two phases and commit the full model as the run's best checkpoint.

    Args:
        model: a transfer model from the registry (backbone frozen).
        run_dir: the `RunDir` being trained in.
        datasets: {split: tf.data.Dataset} of images, as `training.train` builds them.
        data_dir: the prepared data folder.
        image_size: (height, width) of the model's input.
        augment: the augmentation arguments, or None when augmentation is off.
        num_classes: number of classes.
        epochs: phase 1's most epochs.
        batch_size: examples per batch, photos or cached features alike.
        seed: seed for shuffling cached features.
        optimizer: phase 1's optimizer; phase 2 uses the same one on its own schedule.
        callback_settings: phase 1's switchable callbacks.
        transfer: cached features and fine-tuning settings.
        progress: how fitting shows its progress, from `resolve_progress`.
        extra_callbacks: more Keras callbacks for both phases.
        class_weight: {class index: weight} for the training loss of both phases, or None.

    Returns:
        A dict describing what was done, also stored under "transfer" in run.json.
    """
    started = time.monotonic()
    # A restarted transfer run fits from the beginning: older backups and checkpoints belong to another phase.
    run_dir.remove_training_state()
    run_dir.truncate_history(0)
    use_features = uses_cached_features(model, augment=augment, feature_cache=transfer.feature_cache)
    blocks = transfer.fine_tune_blocks
    cut, cut_block = cut_tensor(model, blocks) if (use_features and blocks) else (None, None)
    summary = {"cached_features": use_features, "flipped_features": bool(use_features and transfer.feature_flip)}
    image_steps = math.ceil(len(list_images(Path(data_dir) / "train")[0]) / batch_size)
    features = None
    if use_features:
        extraction_started = time.monotonic()
        features = load_split_features(
            model,
            data_dir,
            splits=("train", "validation"),
            image_size=image_size,
            cut=cut,
            cut_block=cut_block,
            flip_train=transfer.feature_flip,
            cache=open_feature_cache(data_dir, run_dir.path),
            engine=transfer.feature_engine,
            batch_size=DEFAULT_BATCH_SIZE,
        )
        summary["feature_seconds"] = round(time.monotonic() - extraction_started, 2)
        logger.info(
            "Features ready in %.1f s: %d train rows, %d validation rows",
            summary["feature_seconds"],
            len(features["train"].labels),
            len(features["validation"].labels),
        )
    else:
        logger.info(
            "The frozen backbone runs on every batch of every epoch (augmentation is on, or train.feature_cache is "
            "off); --set augment.enabled=false trains the head on cached features in seconds instead"
        )

    head = _train_head(
        model,
        run_dir,
        datasets,
        features,
        num_classes=num_classes,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        image_steps=image_steps,
        optimizer=optimizer,
        callback_settings=callback_settings,
        progress=progress,
        extra_callbacks=extra_callbacks,
        class_weight=class_weight,
    )
    best = head.best_validation_loss
    summary["head_epochs"] = len(run_dir.read_history().get("loss", []))
    if blocks:
        head_only_weights = model.get_weights()
        run_dir.remove_training_state()
        tuned = _fine_tune(
            model,
            run_dir,
            datasets,
            features,
            cut,
            blocks=blocks,
            num_classes=num_classes,
            epochs=transfer.fine_tune_epochs,
            batch_size=batch_size,
            seed=seed + 1,
            image_steps=image_steps,
            optimizer=dataclasses.replace(
                optimizer, learning_rate=transfer.fine_tune_learning_rate, schedule=FINE_TUNING_SCHEDULE
            ),
            progress=progress,
            extra_callbacks=extra_callbacks,
            class_weight=class_weight,
        )
        # Validation decides, as it does between epochs: fine-tuning that never beats the head alone is undone.
        kept = not (math.isfinite(best) and not tuned < best)
        if kept:
            best = tuned
        else:
            model.set_weights(head_only_weights)
            logger.info(
                "Fine-tuning did not lower the validation loss (%.4f, head alone %.4f); keeping the head alone",
                tuned,
                best,
            )
        summary.update(
            fine_tune_blocks=blocks,
            fine_tune_on_cached_activations=cut is not None,
            cut_block=cut_block,
            fine_tune_kept=kept,
        )
    # Saved frozen, so a loaded model is ready for inference and for another head training alike.
    freeze_backbone(model)
    if callback_settings.checkpoint:
        _commit_full_model(model, run_dir, monitor_value=best)
    summary["fit_seconds"] = round(time.monotonic() - started, 2)
    history_length = len(run_dir.read_history().get("loss", []))
    run_dir.update_run_info(
        status=STATUS_FITTED, stop_reason=head.stop_reason, fit_seconds=summary["fit_seconds"], transfer=summary
    )
    logger.info(
        "Transfer training done in %.1f s (%d epochs in history): %s", summary["fit_seconds"], history_length, summary
    )
    return summary


def _train_head(
    model,
    run_dir,
    datasets,
    features: dict[str, SplitFeatures] | None,
    *,
    num_classes,
    epochs,
    batch_size,
    seed,
    image_steps,
    optimizer,
    callback_settings,
    progress,
    extra_callbacks,
    class_weight,
):
    """Phase 1: train the head with the run folder's callbacks; return the `FitResult`."""
    phase_model = build_head(model) if features is not None else model
    train_data, validation_data, steps_per_epoch = _phase_data(
        datasets, features, "pooled", batch_size=batch_size, num_classes=num_classes, seed=seed, image_steps=image_steps
    )
    compile_model(phase_model, num_classes=num_classes, optimizer=optimizer, total_steps=epochs * steps_per_epoch)
    callbacks, named = build_callbacks(
        run_dir, callback_settings, extra_callbacks=extra_callbacks, epoch_log_level=progress.epoch_log_level
    )
    result = fit_model(
        phase_model,
        train_data,
        validation_data,
        epochs=epochs,
        callbacks=callbacks,
        verbose=progress.keras_verbose,
        early_stopping=named.get("early_stopping"),
        class_weight=class_weight,
    )
    checkpoint = load_committed_checkpoint(run_dir) if callback_settings.checkpoint else None
    if checkpoint is not None:
        phase_model.set_weights(checkpoint.get_weights())
    if phase_model is not model:
        copy_head_weights(phase_model, model)
    return result


def _phase_data(datasets, features, kind, *, batch_size, num_classes, seed, image_steps):
    """Return (train_data, validation_data, steps_per_epoch) for one phase.

    Args:
        datasets: {split: tf.data pipeline of images}, used when `features` is None.
        features: {split: `SplitFeatures`} cached by `load_split_features`, or None.
        kind: which cached inputs the phase trains on: "pooled" (the head) or "cut" (fine-tuning).
        batch_size: rows per batch of cached features.
        num_classes: number of classes, which picks the label type.
        seed: the shuffle seed of the training rows.
        image_steps: batches per epoch of the image pipeline.
    """
    if features is None:
        return datasets["train"], datasets["validation"], image_steps
    train, validation = features["train"], features["validation"]
    return (
        features_dataset(
            getattr(train, kind), train.labels, batch_size=batch_size, num_classes=num_classes, shuffle=True, seed=seed
        ),
        features_dataset(getattr(validation, kind), validation.labels, batch_size=batch_size, num_classes=num_classes),
        math.ceil(len(train.labels) / batch_size),
    )


def _fine_tune(
    model,
    run_dir,
    datasets,
    features: dict[str, SplitFeatures] | None,
    cut,
    *,
    blocks,
    num_classes,
    epochs,
    batch_size,
    seed,
    image_steps,
    optimizer,
    progress,
    extra_callbacks,
    class_weight,
):
    """Phase 2: unfreeze the top blocks and train at a low learning rate; return the best validation loss."""
    phase_model, finish = fine_tuning_model(model, blocks, cut)
    train_data, validation_data, steps_per_epoch = _phase_data(
        datasets,
        features if cut is not None else None,
        "cut",
        batch_size=batch_size,
        num_classes=num_classes,
        seed=seed,
        image_steps=image_steps,
    )
    compile_model(phase_model, num_classes=num_classes, optimizer=optimizer, total_steps=epochs * steps_per_epoch)
    logger.info(
        "Fine-tuning the top %d blocks for %d epochs (%s)",
        blocks,
        epochs,
        "on cached activations" if cut is not None else "end to end",
    )
    callbacks = fine_tuning_callbacks(
        run_dir, epochs=epochs, extra_callbacks=extra_callbacks, epoch_log_level=progress.epoch_log_level
    )
    result = fit_model(
        phase_model,
        train_data,
        validation_data,
        epochs=epochs,
        callbacks=callbacks,
        verbose=progress.keras_verbose,
        class_weight=class_weight,
    )
    finish()
    return result.best_validation_loss


def fine_tuning_model(model: keras.Model, number_of_blocks: int, cut=None):
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
    phase_model = keras.Model(upper.input, outputs, name=f"{model.name}_top")
    return phase_model, lambda: copy_head_weights(head, model)


def fine_tuning_optimizer(
    name: str, *, learning_rate: float, total_steps: int, weight_decay: float = 0.0, momentum: float = 0.9
) -> keras.optimizers.Optimizer:
    """Return phase 2's optimizer on its own: `name`, decayed from `learning_rate` to zero over `total_steps`."""
    settings = OptimizerSettings(
        name=name,
        learning_rate=learning_rate,
        schedule=FINE_TUNING_SCHEDULE,
        weight_decay=weight_decay,
        momentum=momentum,
    )
    return settings.make_optimizer(total_steps=total_steps)


def _commit_full_model(model, run_dir, *, monitor_value):
    """Save the full model as the committed best checkpoint, which `training.train` then loads."""
    epoch = len(run_dir.read_history().get("loss", [])) or 1
    path = Path(run_dir.checkpoint_pattern.format(epoch=epoch))
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    run_dir.commit_checkpoint(epoch=epoch, monitor_value=monitor_value)
