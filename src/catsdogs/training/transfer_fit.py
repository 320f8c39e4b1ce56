"""`fit_transfer`: train a transfer model's head, then optionally fine-tune, inside a run folder.

`training.train` calls this instead of its own fit for models with a nested
backbone. Phase 1 uses the run folder's usual callbacks (checkpoint, early
stopping, learning-rate reduction, history, backup); phase 2 appends its
epochs to the same history.csv. At the end the full model (backbone and
trained head) is committed as the run's best checkpoint and the run is marked
fitted, so `training._finish` saves it as `model.keras` like any other model.

Resuming: a transfer run that was killed while fitting starts its fitting
again. That costs little, because the features are cached: phase 1 on cached
features takes seconds.
"""

import logging
import math
import time
from pathlib import Path

import keras

from catsdogs.choices import DEFAULT_BATCH_SIZE
from catsdogs.data.dataset import list_images
from catsdogs.models.saving import load_committed_checkpoint
from catsdogs.models.transfer import freeze_backbone
from catsdogs.runs import STATUS_FITTED
from catsdogs.training.callbacks import MONITOR, LogLearningRate, build_callbacks
from catsdogs.training.optimizers import build_learning_rate, build_optimizer
from catsdogs.training.transfer import (
    cut_tensor,
    features_dataset,
    fine_tuning_model,
    fine_tuning_optimizer,
    finish_head_training,
    head_training_model,
    load_split_features,
    open_feature_cache,
    uses_cached_features,
)

logger = logging.getLogger("catsdogs.training")


def _loss(num_classes):
    return "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"


def _fit(model, train_data, validation_data, *, epochs, callbacks, verbose):
    history = model.fit(
        train_data, validation_data=validation_data, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False
    )
    return history.history


def fit_transfer(
    model, run_dir, datasets, config, *, data_dir, augment, num_classes, extra_callbacks=(), verbose="auto"
):
    """Fit a transfer model in two phases and commit the full model as the run's best checkpoint.

    Args:
        model: a transfer model from the registry (backbone frozen).
        run_dir: the `RunDir` being trained in.
        datasets: {split: tf.data.Dataset} of images, as `training` builds them.
        config: the resolved `Config`.
        data_dir: the prepared data folder.
        augment: the augmentation arguments, or None when augmentation is off.
        num_classes: number of classes.
        extra_callbacks: more Keras callbacks for both phases.
        verbose: Keras `fit` verbosity.

    Returns:
        A dict describing what was done, also stored under "transfer" in run.json.
    """
    train_config = config.train
    started = time.monotonic()
    # A restarted transfer run fits from the beginning: older backups and checkpoints belong to another phase.
    run_dir.remove_training_state()
    run_dir.truncate_history(0)
    image_size = tuple(config.data.image_size)
    use_features = uses_cached_features(model, augment=augment, feature_cache=train_config.feature_cache)
    blocks = train_config.fine_tune_blocks
    cut, cut_block = cut_tensor(model, blocks) if (use_features and blocks) else (None, None)
    summary = {"cached_features": use_features, "flipped_features": bool(use_features and train_config.feature_flip)}
    train_steps = math.ceil(len(list_images(Path(data_dir) / "train")[0]) / train_config.batch_size)
    if not use_features:
        logger.info(
            "The frozen backbone runs on every batch of every epoch (augmentation is on, or train.feature_cache is "
            "off); "
            "--set augment.enabled=false trains the head on cached features in seconds instead"
        )
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
            flip_train=train_config.feature_flip,
            cache=open_feature_cache(data_dir, run_dir.path),
            engine=train_config.feature_engine,
            batch_size=DEFAULT_BATCH_SIZE,
        )
        summary["feature_seconds"] = round(time.monotonic() - extraction_started, 2)
        logger.info(
            "Features ready in %.1f s: %d train rows, %d validation rows",
            summary["feature_seconds"],
            len(features["train"].labels),
            len(features["validation"].labels),
        )

    best, stop_reason = _fit_head(
        model,
        run_dir,
        datasets,
        features,
        train_config,
        num_classes=num_classes,
        train_steps=train_steps,
        extra_callbacks=extra_callbacks,
        verbose=verbose,
    )
    summary["head_epochs"] = len(run_dir.read_history().get("loss", []))
    if blocks:
        head_only_weights = model.get_weights()
        run_dir.remove_training_state()
        tuned = _fine_tune(
            model,
            datasets,
            features,
            cut,
            train_config,
            run_dir=run_dir,
            num_classes=num_classes,
            train_steps=train_steps,
            extra_callbacks=extra_callbacks,
            verbose=verbose,
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
    if train_config.checkpoint:
        _commit_full_model(model, run_dir, monitor_value=best)
    summary["fit_seconds"] = round(time.monotonic() - started, 2)
    history_length = len(run_dir.read_history().get("loss", []))
    run_dir.update_run_info(
        status=STATUS_FITTED, stop_reason=stop_reason, fit_seconds=summary["fit_seconds"], transfer=summary
    )
    logger.info(
        "Transfer training done in %.1f s (%d epochs in history): %s", summary["fit_seconds"], history_length, summary
    )
    return summary


def _fit_head(model, run_dir, datasets, features, train_config, *, num_classes, train_steps, extra_callbacks, verbose):
    """Phase 1: train the head with the run folder's callbacks; return (best validation loss, stop reason)."""
    if features is not None:
        fit_model = head_training_model(model)
        train_data = features_dataset(
            features["train"].pooled,
            features["train"].labels,
            batch_size=train_config.batch_size,
            num_classes=num_classes,
            shuffle=True,
            seed=train_config.seed,
        )
        validation_data = features_dataset(
            features["validation"].pooled,
            features["validation"].labels,
            batch_size=train_config.batch_size,
            num_classes=num_classes,
        )
        steps_per_epoch = math.ceil(len(features["train"].labels) / train_config.batch_size)
    else:
        fit_model, train_data, validation_data = model, datasets["train"], datasets["validation"]
        steps_per_epoch = train_steps
    learning_rate = build_learning_rate(
        schedule=train_config.schedule,
        learning_rate=train_config.learning_rate,
        total_steps=train_config.epochs * steps_per_epoch,
    )
    optimizer = build_optimizer(
        train_config.optimizer,
        learning_rate=learning_rate,
        weight_decay=train_config.weight_decay,
        momentum=train_config.momentum,
    )
    fit_model.compile(optimizer=optimizer, loss=_loss(num_classes), metrics=["accuracy"])
    callbacks, named = build_callbacks(
        run_dir,
        checkpoint=train_config.checkpoint,
        early_stopping=train_config.early_stopping,
        early_stopping_patience=train_config.early_stopping_patience,
        reduce_lr=train_config.reduce_lr,
        reduce_lr_factor=train_config.reduce_lr_factor,
        reduce_lr_patience=train_config.reduce_lr_patience,
        min_learning_rate=train_config.min_learning_rate,
        tensorboard=train_config.tensorboard,
        extra_callbacks=extra_callbacks,
    )
    history = _fit(
        fit_model, train_data, validation_data, epochs=train_config.epochs, callbacks=callbacks, verbose=verbose
    )
    checkpoint = load_committed_checkpoint(run_dir) if train_config.checkpoint else None
    if checkpoint is not None:
        fit_model.set_weights(checkpoint.get_weights())
    if fit_model is not model:
        finish_head_training(fit_model, model)
    losses = history.get(MONITOR, [])
    if any(not math.isfinite(value) for value in history.get("loss", [])):
        stop_reason = "nan"
    elif "early_stopping" in named and named["early_stopping"].stopped_epoch > 0:
        stop_reason = "early_stopping"
    else:
        stop_reason = "completed"
    finite = [value for value in losses if math.isfinite(value)]
    return (min(finite) if finite else float("nan")), stop_reason


def _fine_tune(
    model, datasets, features, cut, train_config, *, run_dir, num_classes, train_steps, extra_callbacks, verbose
):
    """Phase 2: unfreeze the top blocks and train at a low learning rate; return the best validation loss."""
    fit_model, finish = fine_tuning_model(model, train_config.fine_tune_blocks, cut)
    if cut is not None:
        batch_size = train_config.batch_size
        train_data = features_dataset(
            features["train"].cut,
            features["train"].labels,
            batch_size=batch_size,
            num_classes=num_classes,
            shuffle=True,
            seed=train_config.seed + 1,
        )
        validation_data = features_dataset(
            features["validation"].cut, features["validation"].labels, batch_size=batch_size, num_classes=num_classes
        )
        steps_per_epoch = math.ceil(len(features["train"].labels) / batch_size)
    else:
        train_data, validation_data = datasets["train"], datasets["validation"]
        steps_per_epoch = train_steps
    optimizer = fine_tuning_optimizer(
        train_config.optimizer,
        learning_rate=train_config.fine_tune_learning_rate,
        total_steps=train_config.fine_tune_epochs * steps_per_epoch,
        weight_decay=train_config.weight_decay,
        momentum=train_config.momentum,
    )
    fit_model.compile(optimizer=optimizer, loss=_loss(num_classes), metrics=["accuracy"])
    logger.info(
        "Fine-tuning the top %d blocks for %d epochs (%s)",
        train_config.fine_tune_blocks,
        train_config.fine_tune_epochs,
        "on cached activations" if cut is not None else "end to end",
    )
    # The schedule owns the learning rate, so no ReduceLROnPlateau; the best epoch's weights are kept.
    keep_best = keras.callbacks.EarlyStopping(
        monitor=MONITOR, patience=train_config.fine_tune_epochs, restore_best_weights=True
    )
    callbacks = [
        LogLearningRate(),
        keras.callbacks.TerminateOnNaN(),
        *extra_callbacks,
        keep_best,
        keras.callbacks.CSVLogger(str(run_dir.history_path), append=True),
    ]
    history = _fit(
        fit_model,
        train_data,
        validation_data,
        epochs=train_config.fine_tune_epochs,
        callbacks=callbacks,
        verbose=verbose,
    )
    finish()
    losses = [value for value in history.get(MONITOR, []) if math.isfinite(value)]
    return min(losses) if losses else float("nan")


def _commit_full_model(model, run_dir, *, monitor_value):
    """Save the full model as the committed best checkpoint, which `training._finish` then loads."""
    epoch = len(run_dir.read_history().get("loss", [])) or 1
    path = Path(run_dir.checkpoint_pattern.format(epoch=epoch))
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    run_dir.commit_checkpoint(epoch=epoch, monitor_value=monitor_value)
