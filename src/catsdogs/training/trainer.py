"""`train(config, data_dir)`: build the data and the model, fit, and fill a run folder.

This is the one reader of the `Config` in training: it turns the config into
explicit settings for the fit path (`catsdogs.training.fit`), the callbacks
and the transfer phases. A re-run of the same command resumes an interrupted
run; `catsdogs.training.resume` says how.

Under `train.distribute` (`catsdogs.training.distribute`) every process runs
`train`; the model is built and compiled inside the strategy's scope, the
pipeline yields the global batch (`train.batch_size` x replicas) and the
learning rate is the configured one (see `distribute`). Only the chief fills
the run folder; another worker trains in a temporary folder that it removes,
and returns None.
"""

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy
import tensorflow as tf

from catsdogs import __version__
from catsdogs.config import Config
from catsdogs.data.dataset import augment_arguments, list_images
from catsdogs.errors import CatsdogsError
from catsdogs.models import build_model
from catsdogs.models.saving import load_committed_checkpoint, load_model, save_model
from catsdogs.models.transfer import is_transfer_model
from catsdogs.runs import HISTORY_FIGURE, STATUS_FINISHED, STATUS_FITTED, RunDir
from catsdogs.training.callbacks import CallbackSettings, build_callbacks
from catsdogs.training.class_weights import class_weight_record, class_weights, log_class_weights
from catsdogs.training.devices import enable_memory_growth
from catsdogs.training.distribute import Distribution, build_distribution
from catsdogs.training.fit import Progress, compile_for_evaluation, compile_model, fit_model, resolve_progress
from catsdogs.training.inputs import load_splits, write_augmentation_figure
from catsdogs.training.optimizers import OptimizerSettings
from catsdogs.training.resume import open_run_dir, take_back_epochs
from catsdogs.training.setup import check_settings, fit_settings, log_to
from catsdogs.training.transfer import TransferSettings, fit_transfer

logger = logging.getLogger("catsdogs.training")


def train(
    config: Config,
    data_dir: str | os.PathLike,
    *,
    runs_dir: str | os.PathLike = "runs",
    run_name: str | None = None,
    resume: bool = True,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: str | int = "auto",
) -> RunDir | None:
    """Train the configured model on a prepared data folder and fill a run folder.

    Args:
        config: a `Config` (from `load_config`).
        data_dir: a folder made by `catsdogs prepare`, with train/ and validation/
            (and optionally test/) class folders.
        runs_dir: the folder that receives run folders.
        run_name: the run folder's name; default `<timestamp>-<model>`.
        resume: continue an interrupted run of the same config and data (see `catsdogs.training.resume`).
        extra_callbacks: more Keras callbacks, run before the built-in ones.
        verbose: "auto" shows Keras's progress bar when standard output is a terminal, and one
            plain log line per epoch otherwise; 0, 1 or 2 go to Keras `fit` as they are.

    Returns:
        The finished `RunDir`; None on a multi-worker run's non-chief worker, which writes no run folder.

    Raises:
        CatsdogsError: for contradictory settings, unusable data, or a run that diverged before
            any model was worth keeping.
    """
    # Before TensorFlow touches a GPU: afterwards memory growth can no longer be switched on.
    enable_memory_growth()
    train_config = config.train
    check_settings(train_config, model_name=config.model.name)
    # Before any other TensorFlow operation: MultiWorkerMirroredStrategy configures the collectives.
    distribution = build_distribution(train_config.distribute)
    if not distribution.is_chief:
        # A non-chief worker trains in a throwaway folder: the chief's run folder is the run's one record.
        scratch = tempfile.mkdtemp(prefix=f"catsdogs-worker{distribution.worker_index}-")
        try:
            _train(config, data_dir, distribution, scratch, run_name, False, extra_callbacks, verbose)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return None
    return _train(config, data_dir, distribution, runs_dir, run_name, resume, extra_callbacks, verbose)


def _train(config, data_dir, distribution: Distribution, runs_dir, run_name, resume, extra_callbacks, verbose):
    """`train`'s body, in the process's run folder (a temporary one on a non-chief worker)."""
    train_config = config.train
    data_dir = Path(data_dir)
    config_dict = config.to_dict()
    _seed_everything(train_config.seed, deterministic=train_config.deterministic)
    global_batch_size = distribution.global_batch_size(train_config.batch_size)
    image_size = tuple(config.data.image_size)
    augment = augment_arguments(**dataclasses.asdict(config.augment))
    datasets, class_names, counts = load_splits(
        data_dir,
        image_size=image_size,
        batch_size=global_batch_size,
        seed=train_config.seed,
        augment=augment,
        cache=config.data.cache,
    )
    num_classes = len(class_names)
    train_labels = list_images(data_dir / "train")[1]
    weights = class_weights(train_config.class_weight, train_labels, class_names)
    weight_record = class_weight_record(train_config.class_weight, train_labels, class_names, weights)
    run_dir = open_run_dir(
        runs_dir,
        run_name=run_name,
        config_dict=config_dict,
        data_dir=data_dir,
        model_name=config.model.name,
        class_names=class_names,
        resume=resume,
    )
    info = run_dir.claim(data_dir=data_dir, model_name=config.model.name)
    run_dir.update_run_info(
        versions={"catsdogs": __version__, "keras": keras.__version__, "tensorflow": tf.__version__},
        class_weight=weight_record,
        distribute={
            "strategy": distribution.name,
            "replicas": distribution.replicas,
            "workers": distribution.workers,
            "global_batch_size": global_batch_size,
        },
    )
    optimizer, callback_settings = fit_settings(train_config)
    progress = resolve_progress(verbose)
    with log_to(run_dir.log_path):
        logger.info("Run folder %s (attempt %d), data %s, images %s", run_dir.path, info["attempts"], data_dir, counts)
        log_class_weights(weight_record)
        if distribution.name != "none":
            logger.info(
                "Distributed training, %s; global batch %d (train.batch_size %d per replica), learning rate %g as "
                "configured (not scaled with the replicas)",
                distribution.describe(),
                global_batch_size,
                train_config.batch_size,
                train_config.learning_rate,
            )
        if augment and not run_dir.augmentation_figure_path.is_file():
            write_augmentation_figure(
                run_dir, data_dir / "train", image_size=image_size, augment=augment, seed=train_config.seed
            )
        with dtype_policy(train_config.precision), distribution.strategy.scope():
            model = build_model(
                config.model.name,
                input_shape=(*image_size, 3),
                num_classes=num_classes,
                dropout_rate=config.model.dropout_rate,
                weights=config.model.weights,
            )
        # A run fitted before an interruption has only the finishing steps left.
        needs_fit = info.get("status") != STATUS_FITTED
        if needs_fit and is_transfer_model(model):
            # A nested pretrained backbone: head on cached features, then optional fine-tuning.
            fit_transfer(
                model,
                run_dir,
                datasets,
                data_dir=data_dir,
                image_size=image_size,
                augment=augment,
                num_classes=num_classes,
                epochs=train_config.epochs,
                batch_size=train_config.batch_size,
                seed=train_config.seed,
                optimizer=optimizer,
                callback_settings=callback_settings,
                transfer=TransferSettings(
                    feature_cache=train_config.feature_cache,
                    feature_flip=train_config.feature_flip,
                    feature_engine=train_config.feature_engine,
                    fine_tune_blocks=train_config.fine_tune_blocks,
                    fine_tune_epochs=train_config.fine_tune_epochs,
                    fine_tune_learning_rate=train_config.fine_tune_learning_rate,
                ),
                progress=progress,
                extra_callbacks=extra_callbacks,
                class_weight=weights,
            )
        elif needs_fit:
            _fit_from_scratch(
                model,
                run_dir,
                datasets,
                distribution,
                num_classes=num_classes,
                epochs=train_config.epochs,
                steps_per_epoch=math.ceil(counts["train"] / global_batch_size),
                optimizer=optimizer,
                callback_settings=callback_settings,
                progress=progress,
                extra_callbacks=extra_callbacks,
                class_weight=weights,
            )
        if not distribution.is_chief:
            return None
        _finish(
            run_dir,
            model,
            datasets,
            counts,
            checkpoint=train_config.checkpoint,
            learning_rate=train_config.learning_rate,
            num_classes=num_classes,
            distributed=distribution.name != "none",
        )
    return run_dir


def _seed_everything(seed, *, deterministic):
    # One call seeds Python, NumPy, TensorFlow and Keras, so weights, dropout and shuffles repeat.
    keras.utils.set_random_seed(seed)
    if deterministic:
        # Process-wide and irreversible: every later op must have a deterministic kernel.
        tf.config.experimental.enable_op_determinism()


@contextlib.contextmanager
def dtype_policy(precision):
    """Build layers under `precision`'s Keras dtype policy, then restore the previous global policy.

    Layers keep the policy they were built with, and a saved model records it, so a model
    trained in mixed_bfloat16 also predicts in it after loading. Its output layer stays
    float32 (see `classifier_head`), so probabilities and losses keep full precision.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _fit_from_scratch(
    model: keras.Model,
    run_dir: RunDir,
    datasets: dict,
    distribution: Distribution,
    *,
    num_classes: int,
    epochs: int,
    steps_per_epoch: int,
    optimizer: OptimizerSettings,
    callback_settings: CallbackSettings,
    progress: Progress,
    extra_callbacks: Sequence[keras.callbacks.Callback],
    class_weight: dict[int, float] | None,
) -> None:
    """Fit a model built from scratch with the run folder's callbacks, resuming from its backup if there is one."""
    with distribution.strategy.scope():
        compile_model(model, num_classes=num_classes, optimizer=optimizer, total_steps=epochs * steps_per_epoch)
    resume_state = take_back_epochs(run_dir, checkpoint=callback_settings.checkpoint, epochs=epochs)
    callbacks, named = build_callbacks(
        run_dir,
        callback_settings,
        resume_state=resume_state,
        extra_callbacks=extra_callbacks,
        epoch_log_level=progress.epoch_log_level,
    )
    result = fit_model(
        model,
        datasets["train"],
        datasets["validation"],
        epochs=epochs,
        callbacks=callbacks,
        verbose=progress.keras_verbose,
        early_stopping=named.get("early_stopping"),
        class_weight=class_weight,
    )
    # A resumed run adds its own fitting time to that of the attempts before it.
    previous_seconds = run_dir.read_run_info().get("fit_seconds", 0.0)
    run_dir.update_run_info(
        status=STATUS_FITTED, stop_reason=result.stop_reason, fit_seconds=previous_seconds + result.seconds
    )
    logger.info("Training stopped: %s after %d epochs", result.stop_reason, len(run_dir.read_history().get("loss", [])))


def _finish(run_dir, model, datasets, counts, *, checkpoint, learning_rate, num_classes, distributed=False):
    """Save the best model, evaluate it on validation and test, and write metrics.json and the curves."""
    final_model = load_committed_checkpoint(run_dir) if checkpoint else None
    if final_model is None:
        # No checkpoint: EarlyStopping (if on) has already put the best weights back into `model`.
        final_model = model
    if not all(numpy.isfinite(weights).all() for weights in final_model.get_weights()):
        raise CatsdogsError(
            "Training diverged (NaN weights) before any epoch produced a usable model. Lower the learning rate "
            f"(train.learning_rate) or switch on train.checkpoint. Received: learning_rate={learning_rate}"
        )
    save_model(final_model, run_dir.model_path)
    if distributed:
        # Evaluate a copy outside the strategy: on the chief alone, without collectives with the other workers.
        final_model = load_model(run_dir.model_path)
    compile_for_evaluation(final_model, num_classes=num_classes)
    history = run_dir.read_history()
    _warn_if_stuck_at_chance(history, num_classes=num_classes)
    info = run_dir.read_run_info()
    metrics = {
        "model": info.get("model"),
        "stop_reason": info.get("stop_reason"),
        "epochs_done": len(history.get("loss", [])),
        "best_epoch": _best_epoch(history),
        "fit_seconds": round(info.get("fit_seconds", 0.0), 2),
        "images": counts,
    }
    for split in ("validation", "test"):
        if split in datasets:
            result = final_model.evaluate(datasets[split], verbose=0, return_dict=True)
            metrics[split] = {"loss": float(result["loss"]), "accuracy": float(result["accuracy"])}
            logger.info("%s: loss %.4f, accuracy %.4f", split, result["loss"], result["accuracy"])
    run_dir.write_metrics(metrics)
    if history:
        from catsdogs.plots import figure_png_bytes, history_figure

        run_dir.write_figure(HISTORY_FIGURE, figure_png_bytes(history_figure(history, title=run_dir.path.name)))
    run_dir.update_run_info(status=STATUS_FINISHED, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    run_dir.remove_training_state()
    logger.info("Finished: model %s, metrics %s", run_dir.model_path, run_dir.metrics_path)


def _warn_if_stuck_at_chance(history, *, num_classes, epochs=3, tolerance=0.002):
    """Log a warning when the training loss sat at chance level, ln(number of classes), to the end."""
    losses = history.get("loss", [])[-epochs:]
    chance = math.log(num_classes)
    if len(losses) == epochs and all(abs(loss - chance) < tolerance for loss in losses):
        logger.warning(
            "The training loss stayed at ln %d = %.3f for the last %d epochs: the model outputs a constant, as the "
            "seed notes' run did. Usually the learning rate is too high for this model (dead ReLU units) or pixels "
            "are scaled twice; see docs/benchmarks.md, 'Seed-run diagnosis'. Try --set train.learning_rate=0.0001 "
            "or --model seed_cnn_bn.",
            num_classes,
            chance,
            epochs,
        )


def _best_epoch(history):
    values = history.get("val_loss", [])
    finite = [(value, index) for index, value in enumerate(values) if math.isfinite(value)]
    return min(finite)[1] + 1 if finite else None
