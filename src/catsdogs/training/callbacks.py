"""The training callbacks: Keras built-ins, each switchable, plus the glue a resumed run needs.

Order matters, because Keras calls callbacks in list order at every epoch end:
the learning rate is logged before anything changes it, the best checkpoint is
committed before the history row is written, and BackupAndRestore comes last,
so a backup always describes an epoch whose other files are already complete.
"""

import dataclasses
import logging
import math

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


def build_callbacks(
    run_dir,
    *,
    checkpoint=True,
    early_stopping=True,
    early_stopping_patience=10,
    reduce_lr=True,
    reduce_lr_factor=0.2,
    reduce_lr_patience=5,
    min_learning_rate=1e-4,
    tensorboard=False,
    resume_state=None,
    extra_callbacks=(),
):
    """Build the callback list for `model.fit`, in the order they must run.

    Args:
        run_dir: the `RunDir` that receives checkpoints, history, backups and logs.
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
        resume_state: a `ResumeState` when continuing an interrupted run, else None.
        extra_callbacks: more callbacks, run right after the learning-rate logger.

    Returns:
        (callbacks, named): the list for `fit`, and a dict of the switchable ones by name.
    """
    named = {}
    callbacks = [LogLearningRate(), keras.callbacks.TerminateOnNaN(), *extra_callbacks]
    if checkpoint:
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
    if early_stopping:
        named["early_stopping"] = keras.callbacks.EarlyStopping(
            monitor=MONITOR, patience=early_stopping_patience, restore_best_weights=True
        )
        callbacks.append(named["early_stopping"])
    if reduce_lr:
        named["reduce_lr"] = keras.callbacks.ReduceLROnPlateau(
            monitor=MONITOR, factor=reduce_lr_factor, patience=reduce_lr_patience, min_lr=min_learning_rate
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
    callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=_log_epoch))
    if tensorboard:
        named["tensorboard"] = keras.callbacks.TensorBoard(log_dir=str(run_dir.tensorboard_dir))
        callbacks.append(named["tensorboard"])
    # Keep the backup after training: the run folder removes it only once the final model is saved.
    named["backup"] = keras.callbacks.BackupAndRestore(
        str(run_dir.backup_dir), double_checkpoint=True, delete_checkpoint=False
    )
    callbacks.append(named["backup"])
    return callbacks, named


def _log_epoch(epoch, logs):
    values = ", ".join(
        f"{name}={value:.6g}" for name, value in sorted((logs or {}).items()) if isinstance(value, float)
    )
    # DEBUG: the run log keeps every epoch, while the terminal already shows Keras's progress bar.
    logger.debug("Epoch %d: %s", epoch + 1, values)
