"""The training callbacks: Keras built-ins, each switchable, plus the glue a resumed run needs.

Order matters, because Keras calls callbacks in list order at every epoch end:
the learning rate is logged before anything changes it, the best checkpoint is
committed before the history row is written, and BackupAndRestore comes last,
so a backup always describes an epoch whose other files are already complete.
"""

import dataclasses
import logging
import math
import numbers
import time

import keras

from catsdogs.training.optimizers import current_learning_rate

MONITOR = "val_loss"

logger = logging.getLogger("catsdogs.training")


@dataclasses.dataclass(frozen=True)
class ResumeState:
    """What a resumed run knows about the epochs it will not redo.

    Attributes:
        epoch: epochs already done (BackupAndRestore restores the weights of their end).
        monitor_values: validation loss of each of those epochs, from history.csv.
        best_weights: weights of the committed best checkpoint, or None.
    """

    epoch: int
    monitor_values: list
    best_weights: list | None = None

    @property
    def best_index(self):
        finite = [(value, index) for index, value in enumerate(self.monitor_values) if math.isfinite(value)]
        return min(finite)[1] if finite else None


class LogLearningRate(keras.callbacks.Callback):
    """Add the optimizer's current learning rate to the epoch logs, so history.csv records it."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_learning_rate(self.model.optimizer)


class CommitCheckpoint(keras.callbacks.Callback):
    """After ModelCheckpoint has written a new best file, mark it complete in the run folder.

    Args:
        run_dir: the `RunDir` whose checkpoints/ ModelCheckpoint writes to.
        model_checkpoint: that ModelCheckpoint; a change of its `best` means it just saved.
    """

    def __init__(self, run_dir, model_checkpoint):
        super().__init__()
        self.run_dir = run_dir
        self.model_checkpoint = model_checkpoint
        self._last_best = model_checkpoint.best

    def on_train_begin(self, logs=None):
        # A file written but never committed may be torn by the kill that interrupted the last run.
        self.run_dir.discard_uncommitted_checkpoints()

    def on_epoch_end(self, epoch, logs=None):
        if self.model_checkpoint.best is not self._last_best:
            self._last_best = self.model_checkpoint.best
            self.run_dir.commit_checkpoint(epoch=epoch + 1, monitor_value=float(self._last_best))


class RestoreCallbackState(keras.callbacks.Callback):
    """On a resumed run, give EarlyStopping and ReduceLROnPlateau back what they knew before the kill.

    Both reset themselves in `on_train_begin`; this callback comes after them in
    the list and sets their best value, waiting count and best weights from the
    history of the epochs already done, as if training had never stopped.
    """

    def __init__(self, resume_state, *, early_stopping=None, reduce_lr=None):
        super().__init__()
        self.resume_state = resume_state
        self.early_stopping = early_stopping
        self.reduce_lr = reduce_lr

    def on_train_begin(self, logs=None):
        best_index = self.resume_state.best_index
        if best_index is None:
            return
        best = self.resume_state.monitor_values[best_index]
        epochs_since_best = self.resume_state.epoch - 1 - best_index
        if self.early_stopping is not None:
            self.early_stopping.best = best
            self.early_stopping.best_epoch = best_index
            self.early_stopping.wait = epochs_since_best
            self.early_stopping.best_weights = self.resume_state.best_weights
        if self.reduce_lr is not None:
            self.reduce_lr.best = best
            # The plateau counter restarts after every reduction, so only the remainder is still waiting.
            self.reduce_lr.wait = epochs_since_best % self.reduce_lr.patience
        logger.info("Resumed callback state: best %s %.5f at epoch %d", MONITOR, best, best_index + 1)


@dataclasses.dataclass(frozen=True)
class CallbackSettings:
    """Which of the switchable callbacks run, and their parameters.

    Attributes:
        checkpoint: keep the model with the best validation loss (ModelCheckpoint).
        early_stopping: stop after `early_stopping_patience` epochs without improvement,
            restoring the best weights.
        early_stopping_patience: epochs without improvement before stopping.
        reduce_lr: multiply the learning rate by `reduce_lr_factor` after
            `reduce_lr_patience` epochs without improvement, down to `min_learning_rate`.
        reduce_lr_factor: see `reduce_lr`.
        reduce_lr_patience: see `reduce_lr`.
        min_learning_rate: see `reduce_lr`.
        tensorboard: write TensorBoard logs into the run folder.
    """

    checkpoint: bool = True
    early_stopping: bool = True
    early_stopping_patience: int = 10
    reduce_lr: bool = True
    reduce_lr_factor: float = 0.2
    reduce_lr_patience: int = 5
    min_learning_rate: float = 1e-4
    tensorboard: bool = False


class EpochLogger(keras.callbacks.Callback):
    """Log one plain line per epoch: its number, every metric and the learning rate, and how long it took.

    At DEBUG the line only reaches the run's log file; at INFO it also reaches the
    console handler that `catsdogs train` installs, which is how a run whose
    output is not a terminal reports progress instead of Keras's progress bar.

    Args:
        level: the logging level of the lines.
        label: what the line starts with, before the epoch number.
    """

    # The usual columns first, in the order people read them; anything else follows alphabetically.
    FIRST_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")

    def __init__(self, *, level=logging.DEBUG, label="Epoch"):
        super().__init__()
        self.level = level
        self.label = label
        self._epoch_started = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logged = {
            name: float(value)
            for name, value in (logs or {}).items()
            if isinstance(value, numbers.Real) and not isinstance(value, bool)
        }
        names = [name for name in self.FIRST_KEYS if name in logged]
        names += sorted(name for name in logged if name not in self.FIRST_KEYS)
        values = ", ".join(f"{name} {logged[name]:.4g}" for name in names)
        seconds = time.monotonic() - self._epoch_started if self._epoch_started is not None else 0.0
        total = self.params.get("epochs") if self.params else None
        position = f"{epoch + 1}/{total}" if total else f"{epoch + 1}"
        logger.log(self.level, "%s %d: %s (%.1f s, %s)", self.label, epoch + 1, values, seconds, position)


def build_callbacks(
    run_dir,
    settings: CallbackSettings,
    *,
    resume_state: ResumeState | None = None,
    extra_callbacks=(),
    epoch_log_level: int = logging.DEBUG,
) -> tuple[list[keras.callbacks.Callback], dict[str, keras.callbacks.Callback]]:
    """Build the callback list for `model.fit`, in the order they must run.

    Args:
        run_dir: the `RunDir` that receives checkpoints, history, backups and logs.
        settings: which callbacks run, and their parameters.
        resume_state: a `ResumeState` when continuing an interrupted run, else None.
        extra_callbacks: more callbacks, run right after the learning-rate logger.
        epoch_log_level: the level of the one-line-per-epoch log (see `EpochLogger`).

    Returns:
        (callbacks, named): the list for `fit`, and a dict of the switchable ones by name.
    """
    named = {}
    callbacks = [LogLearningRate(), keras.callbacks.TerminateOnNaN(), *extra_callbacks]
    if settings.checkpoint:
        run_dir.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        committed = run_dir.committed_checkpoint() if resume_state else None
        named["checkpoint"] = keras.callbacks.ModelCheckpoint(
            run_dir.checkpoint_pattern,
            monitor=MONITOR,
            save_best_only=True,
            # A resumed run must beat the best model it already has, not start from infinity.
            initial_value_threshold=committed[2] if committed else None,
        )
        callbacks += [named["checkpoint"], CommitCheckpoint(run_dir, named["checkpoint"])]
    if settings.early_stopping:
        named["early_stopping"] = keras.callbacks.EarlyStopping(
            monitor=MONITOR, patience=settings.early_stopping_patience, restore_best_weights=True
        )
        callbacks.append(named["early_stopping"])
    if settings.reduce_lr:
        named["reduce_lr"] = keras.callbacks.ReduceLROnPlateau(
            monitor=MONITOR,
            factor=settings.reduce_lr_factor,
            patience=settings.reduce_lr_patience,
            min_lr=settings.min_learning_rate,
        )
        callbacks.append(named["reduce_lr"])
    if resume_state is not None and resume_state.epoch > 0:
        callbacks.append(
            RestoreCallbackState(
                resume_state, early_stopping=named.get("early_stopping"), reduce_lr=named.get("reduce_lr")
            )
        )
    named["history"] = keras.callbacks.CSVLogger(str(run_dir.history_path), append=True)
    callbacks.append(named["history"])
    # Before the backup: a run killed right after a backup has already logged the epoch it backed up.
    callbacks.append(EpochLogger(level=epoch_log_level))
    if settings.tensorboard:
        named["tensorboard"] = keras.callbacks.TensorBoard(log_dir=str(run_dir.tensorboard_dir))
        callbacks.append(named["tensorboard"])
    # Keep the backup after training: the run folder removes it only once the final model is saved.
    named["backup"] = keras.callbacks.BackupAndRestore(
        str(run_dir.backup_dir), double_checkpoint=True, delete_checkpoint=False
    )
    callbacks.append(named["backup"])
    return callbacks, named


def fine_tuning_callbacks(
    run_dir, *, epochs: int, extra_callbacks=(), epoch_log_level: int = logging.DEBUG
) -> list[keras.callbacks.Callback]:
    """Build the callback list for fine-tuning, which appends its epochs to the run's history.csv.

    Args:
        run_dir: the `RunDir` whose history receives the epochs.
        epochs: fine-tuning epochs; the best of them by validation loss is kept.
        extra_callbacks: more callbacks, run right after the learning-rate logger.
        epoch_log_level: the level of the one-line-per-epoch log (see `EpochLogger`).
    """
    # The schedule owns the learning rate, so no ReduceLROnPlateau; the best epoch's weights are kept.
    keep_best = keras.callbacks.EarlyStopping(monitor=MONITOR, patience=epochs, restore_best_weights=True)
    return [
        LogLearningRate(),
        keras.callbacks.TerminateOnNaN(),
        *extra_callbacks,
        keep_best,
        keras.callbacks.CSVLogger(str(run_dir.history_path), append=True),
        EpochLogger(level=epoch_log_level, label="Fine-tuning epoch"),
    ]
