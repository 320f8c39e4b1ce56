"""The one fit path: compile, fit, and why fitting stopped, for every model and every phase.

Training from scratch, the transfer head phase and the fine-tuning phase all
compile with `compile_model` and fit with `fit_model`, so the loss, the
optimizer set-up, the progress output and the stop reason are each decided in
one place. `fit_model` runs `catsdogs.training.loop.run_epochs`, the one training loop
for every `tf.distribute` strategy (none, mirrored, multi_worker), which drives the
Keras callbacks as `fit` does; `loop`'s docstring says why it is not Keras `fit`.
Build and compile the model inside the strategy's scope: the loop trains under the
strategy the model was built in.

Progress output. `resolve_progress("auto")` keeps Keras's live progress bar
when standard output is a terminal. Anywhere else (`make demo > log`, CI) the
bar would write hundreds of control sequences per epoch, so Keras stays quiet
and `EpochLogger` writes one plain INFO line per epoch through the `catsdogs`
logger instead. An explicit verbosity (0, 1 or 2) goes to Keras unchanged.
"""

import dataclasses
import logging
import math
import sys
import time

import keras

from catsdogs.training.callbacks import MONITOR
from catsdogs.training.loop import run_epochs
from catsdogs.training.optimizers import OptimizerSettings

logger = logging.getLogger("catsdogs.training")

METRICS = ("accuracy",)
STOP_NAN = "nan"
STOP_EARLY_STOPPING = "early_stopping"
STOP_COMPLETED = "completed"


def loss_for(num_classes: int) -> str:
    """Return the loss for `num_classes` classes: one sigmoid output for two, else softmax over integer labels."""
    return "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"


def compile_model(model: keras.Model, *, num_classes: int, optimizer: OptimizerSettings, total_steps: int) -> None:
    """Compile `model` for training with the classification loss, accuracy and a fresh optimizer.

    Args:
        model: the model that `fit_model` will fit.
        num_classes: number of classes, which picks the loss.
        optimizer: the optimizer and its learning-rate schedule.
        total_steps: optimizer steps in the whole phase (epochs x batches per epoch), the schedule's length.

    Raises:
        CatsdogsError: for an unknown optimizer name or schedule.
    """
    model.compile(
        optimizer=optimizer.make_optimizer(total_steps=total_steps), loss=loss_for(num_classes), metrics=list(METRICS)
    )


def compile_for_evaluation(model: keras.Model, *, num_classes: int) -> None:
    """Compile `model` with the training loss and metrics only, so that `evaluate` reports both."""
    model.compile(loss=loss_for(num_classes), metrics=list(METRICS))


@dataclasses.dataclass(frozen=True)
class Progress:
    """How fitting shows its progress.

    Attributes:
        keras_verbose: the `verbose` argument for Keras `fit`.
        epoch_log_level: the level of `EpochLogger`'s one line per epoch: INFO reaches the
            console, DEBUG only the run's log file.
    """

    keras_verbose: str | int
    epoch_log_level: int


def resolve_progress(verbose: str | int = "auto") -> Progress:
    """Decide how fitting shows its progress (see the module docstring).

    Args:
        verbose: "auto", or a Keras verbosity (0 silent, 1 progress bar, 2 one line per epoch).

    Returns:
        The `Progress` for `fit_model` and the callback builders.
    """
    if verbose != "auto":
        return Progress(keras_verbose=verbose, epoch_log_level=logging.DEBUG)
    if sys.stdout.isatty():
        return Progress(keras_verbose="auto", epoch_log_level=logging.DEBUG)
    return Progress(keras_verbose=0, epoch_log_level=logging.INFO)


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What one `fit_model` call did.

    Attributes:
        history: {metric: [value per epoch]} of this call's epochs.
        stop_reason: "nan", "early_stopping" or "completed".
        best_validation_loss: the lowest finite validation loss, or NaN when there is none.
        seconds: wall-clock time spent fitting.
    """

    history: dict[str, list[float]]
    stop_reason: str
    best_validation_loss: float
    seconds: float


def fit_model(
    model: keras.Model,
    train_data,
    validation_data,
    *,
    epochs: int,
    callbacks: list[keras.callbacks.Callback],
    verbose: str | int = "auto",
    early_stopping: keras.callbacks.EarlyStopping | None = None,
    class_weight: dict[int, float] | None = None,
) -> FitResult:
    """Fit a compiled model and say why it stopped.

    Args:
        model: a model compiled by `compile_model`.
        train_data: a tf.data pipeline of (inputs, labels) batches, shuffled by itself.
        validation_data: a tf.data pipeline of validation batches.
        epochs: the most epochs to run.
        callbacks: the callback list, e.g. from `build_callbacks`.
        verbose: Keras `fit` verbosity, e.g. `resolve_progress(...).keras_verbose`.
        early_stopping: the EarlyStopping callback whose stop counts as "early_stopping", or None.
        class_weight: {class index: weight} multiplying each training photo's loss, or None.

    Returns:
        A `FitResult`.

    Raises:
        WorkerLostError: when a peer of a multi-worker run stopped answering.
    """
    started = time.monotonic()
    # The pipeline shuffles itself (seeded).
    history = run_epochs(
        model,
        train_data,
        validation_data,
        epochs=epochs,
        callbacks=callbacks,
        verbose=verbose,
        class_weight=class_weight,
    )
    seconds = time.monotonic() - started
    reason = stop_reason(history, early_stopping=early_stopping)
    if reason == STOP_NAN:
        logger.warning(
            "The loss became NaN or infinite; training stopped (TerminateOnNaN). Keeping the best model so far."
        )
    finite = [value for value in history.get(MONITOR, []) if math.isfinite(value)]
    return FitResult(
        history=history,
        stop_reason=reason,
        best_validation_loss=min(finite) if finite else float("nan"),
        seconds=seconds,
    )


def stop_reason(history: dict[str, list[float]], *, early_stopping: keras.callbacks.EarlyStopping | None = None) -> str:
    """Return why fitting stopped: "nan" (a non-finite loss), "early_stopping" or "completed".

    Args:
        history: {metric: [value per epoch]}, as Keras `fit` returns it.
        early_stopping: the EarlyStopping callback that took part, or None.
    """
    if any(not math.isfinite(value) for value in history.get("loss", [])):
        return STOP_NAN
    if early_stopping is not None and early_stopping.stopped_epoch > 0:
        return STOP_EARLY_STOPPING
    return STOP_COMPLETED
