"""`train(config, data_dir)`: build the data and the model, fit with callbacks, fill a run folder.

Resuming. Every run folder records its resolved config, its data folder and
its status in run.json. Re-running the same command continues an interrupted
run instead of starting a new one:

- with `run_name` (`--name NAME`), the folder `runs_dir/NAME` is used; if it
  holds an unfinished run of the same config and data, training resumes there;
- without it, the newest unfinished run folder in `runs_dir` with the same
  resolved config and data folder, whose process is no longer alive on this
  machine, is resumed; if there is none, a new `<timestamp>-<model>` folder is made;
- `resume=False` (`--fresh`) always starts a new folder.

BackupAndRestore restores the weights, optimizer state and epoch; history.csv
is cut back to the epochs the backup holds, and EarlyStopping,
ReduceLROnPlateau and ModelCheckpoint get back their best value, so the
resumed run behaves as if it had not stopped. Only the data order differs:
tf.data reshuffles from its seed, so the resumed epochs see other batches
than an uninterrupted run would have.
"""

import contextlib
import dataclasses
import logging
import math
import time
from pathlib import Path

import keras
import numpy
import tensorflow as tf

from catsdogs import __version__
from catsdogs.choices import SPLITS
from catsdogs.data.augment import augment_batch
from catsdogs.data.dataset import augment_arguments, list_images, make_dataset
from catsdogs.errors import CatsdogsError
from catsdogs.images import decode_and_resize
from catsdogs.models import build_model, model_entry
from catsdogs.models.saving import load_committed_checkpoint, save_model
from catsdogs.models.transfer import is_transfer_model
from catsdogs.runs import AUGMENTATION_FIGURE, HISTORY_FIGURE, STATUS_FINISHED, STATUS_FITTED, RunDir, check_run_name
from catsdogs.training.callbacks import ResumeState, build_callbacks
from catsdogs.training.optimizers import build_learning_rate, build_optimizer
from catsdogs.training.transfer_fit import fit_transfer

logger = logging.getLogger("catsdogs.training")


def train(config, data_dir, *, runs_dir="runs", run_name=None, resume=True, extra_callbacks=(), verbose="auto"):
    """Train the configured model on a prepared data folder and fill a run folder.

    Args:
        config: a `Config` (from `load_config`).
        data_dir: a folder made by `catsdogs prepare`, with train/ and validation/
            (and optionally test/) class folders.
        runs_dir: the folder that receives run folders.
        run_name: the run folder's name; default `<timestamp>-<model>`.
        resume: continue an interrupted run of the same config and data (see the module docstring).
        extra_callbacks: more Keras callbacks, run before the built-in ones.
        verbose: Keras `fit` verbosity: "auto", 0, 1 or 2.

    Returns:
        The finished `RunDir`.

    Raises:
        CatsdogsError: for contradictory settings, unusable data, or a run that diverged before
            any model was worth keeping.
    """
    _check_settings(config.train, model_name=config.model.name)
    data_dir = Path(data_dir)
    config_dict = config.to_dict()
    _seed_everything(config.train.seed, deterministic=config.train.deterministic)
    image_size = tuple(config.data.image_size)
    augment = augment_arguments(**dataclasses.asdict(config.augment))
    datasets, class_names, counts = _load_splits(
        data_dir,
        image_size=image_size,
        batch_size=config.train.batch_size,
        seed=config.train.seed,
        augment=augment,
        cache=config.data.cache,
    )
    run_dir, resumed = _select_run_dir(
        runs_dir,
        run_name=run_name,
        config_dict=config_dict,
        data_dir=data_dir,
        model_name=config.model.name,
        resume=resume,
    )
    if not resumed:
        run_dir.write_config(config_dict)
        run_dir.write_labels(class_names)
    elif run_dir.read_labels() != class_names:
        raise CatsdogsError(
            f"The data's classes changed since this run started, so it cannot be resumed. Train a new run "
            f"(--fresh) or restore the data. Received: run_classes={run_dir.read_labels()}, data_classes={class_names}"
        )
    info = run_dir.claim(data_dir=data_dir, model_name=config.model.name)
    run_dir.update_run_info(
        versions={"catsdogs": __version__, "keras": keras.__version__, "tensorflow": tf.__version__}
    )
    with _log_to(run_dir.log_path):
        logger.info("Run folder %s (attempt %d), data %s, images %s", run_dir.path, info["attempts"], data_dir, counts)
        if augment and not run_dir.augmentation_figure_path.is_file():
            _write_augmentation_figure(
                run_dir, data_dir / "train", image_size=image_size, augment=augment, seed=config.train.seed
            )
        with dtype_policy(config.train.precision):
            model = build_model(
                config.model.name,
                input_shape=(*image_size, 3),
                num_classes=len(class_names),
                dropout_rate=config.model.dropout_rate,
                weights=config.model.weights,
            )
        if is_transfer_model(model):
            # A nested pretrained backbone: head on cached features, then optional fine-tuning.
            if info.get("status") != STATUS_FITTED:
                fit_transfer(
                    model,
                    run_dir,
                    datasets,
                    config,
                    data_dir=data_dir,
                    augment=augment,
                    num_classes=len(class_names),
                    extra_callbacks=extra_callbacks,
                    verbose=verbose,
                )
        else:
            _compile(
                model,
                config.train,
                num_classes=len(class_names),
                steps_per_epoch=math.ceil(counts["train"] / config.train.batch_size),
            )
            if info.get("status") != STATUS_FITTED:
                _fit(model, run_dir, datasets, config.train, extra_callbacks=extra_callbacks, verbose=verbose)
        _finish(run_dir, model, datasets, counts, config.train, num_classes=len(class_names))
    return run_dir


def _check_settings(train_config, *, model_name):
    import importlib.util

    if train_config.precision != "float32" and model_entry(model_name).pretrained:
        # Cached features come from a float32 ONNX export of the backbone; mixing formats is untested.
        raise CatsdogsError(
            "Mixed precision is for models trained from scratch; pretrained (transfer) models train in float32. "
            f"Use --set train.precision=float32. Received: train.precision={train_config.precision}, "
            f"model.name={model_name}"
        )

    if train_config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise CatsdogsError(
            "TensorBoard logging needs the tensorboard package, which is not installed. Install it with "
            "`pip install tensorboard`, or --set train.tensorboard=false. Received: train.tensorboard=true"
        )
    if train_config.reduce_lr and train_config.schedule != "constant":
        raise CatsdogsError(
            "ReduceLROnPlateau and a learning-rate schedule both want to set the learning rate. Use one: "
            "--set train.reduce_lr=false to keep the schedule, or --set train.schedule=constant. "
            f"Received: train.reduce_lr=true, train.schedule={train_config.schedule}"
        )


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


def _load_splits(data_dir, *, image_size, batch_size, seed, augment, cache):
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


def _select_run_dir(runs_dir, *, run_name, config_dict, data_dir, model_name, resume):
    """Return (run_dir, resumed): the folder to train in, per the rules in the module docstring."""
    if run_name is not None:
        run_dir = RunDir(Path(runs_dir) / check_run_name(run_name))
        if not (run_dir.path.is_dir() and any(run_dir.path.iterdir())):
            return RunDir.create(runs_dir, model_name=model_name, run_name=run_name), False
        status = run_dir.read_run_info().get("status")
        if not run_dir.is_resumable(config=config_dict, data_dir=data_dir):
            reason = "a finished run" if status == STATUS_FINISHED else "a run with another config or data folder"
            raise CatsdogsError(
                f"The run folder already holds {reason}. Pick another --name, or remove the folder. "
                f"Received: path={run_dir.path}"
            )
        if run_dir.is_busy():
            raise CatsdogsError(
                f"Another process is training in this run folder now. Wait for it, or stop it first. "
                f"Received: path={run_dir.path}, pid={run_dir.read_run_info().get('pid')}"
            )
        if not resume:
            raise CatsdogsError(
                f"The run folder holds an unfinished run; it resumes without --fresh. Drop --fresh, or pick "
                f"another --name. Received: path={run_dir.path}"
            )
        return run_dir, True
    if resume:
        found = RunDir.find_resumable(runs_dir, config=config_dict, data_dir=data_dir)
        if found is not None:
            return found, True
    return RunDir.create(runs_dir, model_name=model_name), False


def _compile(model, train_config, *, num_classes, steps_per_epoch):
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
    loss = "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def _fit(model, run_dir, datasets, train_config, *, extra_callbacks, verbose):
    resume_epoch = run_dir.backup_epoch()
    resume_state = None
    if resume_epoch > 0:
        run_dir.truncate_history(resume_epoch)
        checkpoint_model = load_committed_checkpoint(run_dir) if train_config.checkpoint else None
        resume_state = ResumeState(
            epoch=resume_epoch,
            monitor_values=run_dir.read_history().get("val_loss", [])[:resume_epoch],
            best_weights=checkpoint_model.get_weights() if checkpoint_model is not None else None,
        )
        logger.info(
            "Resuming from epoch %d of %d (the backup's last complete epoch)", resume_epoch + 1, train_config.epochs
        )
    else:
        run_dir.truncate_history(0)
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
        resume_state=resume_state,
        extra_callbacks=extra_callbacks,
    )
    started = time.monotonic()
    history = model.fit(
        datasets["train"],
        validation_data=datasets["validation"],
        epochs=train_config.epochs,
        # The pipeline shuffles itself (seeded); Keras's own shuffle does not apply to a tf.data.Dataset.
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,
    )
    losses = history.history.get("loss", [])
    if any(not math.isfinite(value) for value in losses):
        stop_reason = "nan"
        logger.warning(
            "The loss became NaN or infinite; training stopped (TerminateOnNaN). Keeping the best model so far."
        )
    elif "early_stopping" in named and named["early_stopping"].stopped_epoch > 0:
        stop_reason = "early_stopping"
    else:
        stop_reason = "completed"
    previous_seconds = run_dir.read_run_info().get("fit_seconds", 0.0)
    run_dir.update_run_info(
        status=STATUS_FITTED, stop_reason=stop_reason, fit_seconds=previous_seconds + time.monotonic() - started
    )
    logger.info("Training stopped: %s after %d epochs", stop_reason, len(run_dir.read_history().get("loss", [])))


def _finish(run_dir, model, datasets, counts, train_config, *, num_classes):
    final_model = load_committed_checkpoint(run_dir) if train_config.checkpoint else None
    if final_model is None:
        # No checkpoint: EarlyStopping (if on) has already put the best weights back into `model`.
        final_model = model
    if not all(numpy.isfinite(weights).all() for weights in final_model.get_weights()):
        raise CatsdogsError(
            "Training diverged (NaN weights) before any epoch produced a usable model. Lower the learning rate "
            f"(train.learning_rate) or switch on train.checkpoint. Received: learning_rate={train_config.learning_rate}"
        )
    save_model(final_model, run_dir.model_path)
    final_model.compile(
        loss="binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
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


def _write_augmentation_figure(run_dir, train_dir, *, image_size, augment, seed, rows=4, versions=5):
    """Draw a few training photos, one per class in turn, each with `versions` augmented copies."""
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


@contextlib.contextmanager
def _log_to(path):
    """Copy the catsdogs loggers' records into the run's log file while training."""
    package_logger = logging.getLogger("catsdogs")
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    previous_level = package_logger.level
    package_logger.setLevel(logging.DEBUG)
    package_logger.addHandler(handler)
    try:
        yield
    except BaseException:
        logger.exception("Training stopped by an error; re-run the same command to resume")
        raise
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous_level)
        handler.close()
