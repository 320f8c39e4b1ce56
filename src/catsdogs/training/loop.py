"""The one training loop, for every strategy and every phase: a distributed step that drives Keras callbacks.

Why not Keras `fit`: under `MultiWorkerMirroredStrategy` Keras 3's `fit` fails with
"Attempt to convert a value (PerReplica:{...})" (keras-team/keras#20585), while a
step of TensorFlow's own distribution API works. Keeping `fit` for one strategy and
a custom step for another would give two training paths with two behaviours, so
this loop serves them all: "none" runs it under TensorFlow's default strategy.

What it keeps from `fit`, so callbacks behave as before: a `keras.callbacks.CallbackList`
with the progress bar and History, `on_train_begin` before the first epoch (where
BackupAndRestore sets the epoch to resume from), per-batch logs with the running
loss (TerminateOnNaN), validation before `on_epoch_end` as `val_*` logs,
`model.stop_training`, and the same numbers: the loss is the mean per-photo loss
(class weights multiply it, Keras-style), accuracy the plain share correct (as
Keras 3's `fit` reports it with class weights too), and validation is unweighted.

Each step: every replica computes its slice's weighted loss divided by the whole
global batch's photo count (an all-reduce of the slice sizes, so the last, shorter
batch is averaged over its own size, as `fit` does); the Keras optimizer sums the
replicas' gradients and applies them once. Sums of loss, correct answers, weights
and photos come back reduced over all replicas, so every worker logs the same numbers
and takes the same decisions.

Multi-worker: at the start, the chief's weights, optimizer state and starting epoch
are broadcast to every worker (only the chief restores a backup); after every
epoch, the chief's stop decision and learning rate are, so callbacks whose state
only the chief has (a resumed EarlyStopping, ReduceLROnPlateau) cannot make the
workers diverge and block each other. A worker that dies makes the others' next
collective fail (`distribute.PEER_CHECK_INTERVAL_SECONDS`): `WorkerLostError`.
"""

import keras
import numpy
import tensorflow as tf

from catsdogs.training.distribute import WorkerLostError, chief_values
from catsdogs.training.optimizers import current_learning_rate

# Sums every step returns: [loss x photos, correct x weight, weight, photos].
LOSS_SUM, CORRECT_SUM, WEIGHT_SUM, COUNT = range(4)
# The errors a worker sees when a peer of a multi-worker run stops answering.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError)


def run_epochs(
    model: keras.Model,
    train_data: tf.data.Dataset,
    validation_data: tf.data.Dataset | None,
    *,
    epochs: int,
    callbacks: list[keras.callbacks.Callback],
    verbose: str | int = 0,
    class_weight: dict[int, float] | None = None,
) -> dict[str, list[float]]:
    """Train a compiled model for up to `epochs` epochs under its own strategy, calling `callbacks` as `fit` does.

    Args:
        model: a model built and compiled (by `fit.compile_model`) inside the strategy's scope.
        train_data: batches of (inputs, labels), each the global batch (per-replica batch x replicas).
        validation_data: validation batches, or None.
        epochs: the most epochs; a BackupAndRestore callback may start later than the first.
        callbacks: Keras callbacks, called in list order.
        verbose: Keras verbosity: 0 silent, "auto" or 1 a progress bar, 2 one line per epoch.
        class_weight: {class index: weight} multiplying each photo's training loss, or None.

    Returns:
        {metric: [value per epoch]}, as Keras's History records it.

    Raises:
        WorkerLostError: when a peer of a multi-worker run stopped answering.
    """
    strategy = model.distribute_strategy
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    steps = _Steps(model, strategy, class_weight=class_weight, binary=model.output_shape[-1] == 1)
    distributed_train = steps.distribute(train_data, drop_short_batches=True)
    distributed_validation = steps.distribute(validation_data) if validation_data is not None else None
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        [*callbacks, history],
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=_batches(train_data),
        model=model,
    )
    with strategy.scope():
        if not model.optimizer.built:
            # Built inside the scope, so its slots are mirrored; BackupAndRestore loads into them.
            model.optimizer.build(model.trainable_variables)
    model.stop_training = False
    try:
        callback_list.on_train_begin()
        # Set by BackupAndRestore when a backup exists; cleared so a later phase on this model starts at 0.
        initial_epoch = getattr(model, "_initial_epoch", None) or 0
        model._initial_epoch = None
        if multi_worker:
            (initial_epoch,) = _agree_with_chief(strategy, model, [initial_epoch], variables=True)
        epoch_logs = {}
        for epoch in range(int(initial_epoch), epochs):
            callback_list.on_epoch_begin(epoch)
            totals = numpy.zeros(4)
            logs = {}
            for step, batch in enumerate(distributed_train):
                callback_list.on_train_batch_begin(step)
                totals += steps.train(batch)
                logs = _logs(totals)
                callback_list.on_train_batch_end(step, logs)
                if model.stop_training:
                    break
            epoch_logs = dict(logs)
            if distributed_validation is not None:
                totals = sum((steps.evaluate(batch) for batch in distributed_validation), numpy.zeros(4))
                epoch_logs.update({f"val_{name}": value for name, value in _logs(totals).items()})
            callback_list.on_epoch_end(epoch, epoch_logs)
            if multi_worker:
                _agree_with_chief(strategy, model, [float(model.stop_training)], variables=False)
            if model.stop_training:
                break
        model.optimizer.finalize_variable_values(model.trainable_weights)
        callback_list.on_train_end(logs=epoch_logs)
    except PEER_ERRORS as error:
        if not multi_worker:
            raise
        raise WorkerLostError(
            "Another worker of this multi-worker run stopped answering, so training stopped here too. Re-run the "
            "same command on every worker (same TF_CONFIG): the chief resumes from the last epoch it backed up and "
            f"hands that state to the others. Received: error={type(error).__name__}: {str(error).splitlines()[0]}"
        ) from error
    return dict(history.history)


def _logs(totals) -> dict[str, float]:
    """Return {"loss", "accuracy"} from summed [loss x photos, correct x weight, weight, photos]."""
    return {
        "loss": float(totals[LOSS_SUM] / max(totals[COUNT], 1.0)),
        "accuracy": float(totals[CORRECT_SUM] / max(totals[WEIGHT_SUM], 1e-12)),
    }


def _batches(dataset):
    """Return the number of batches in one pass over `dataset`, or None when tf.data cannot tell."""
    cardinality = int(dataset.cardinality())
    return cardinality if cardinality >= 0 else None


class _Steps:
    """The compiled train and evaluation steps of one model under one strategy."""

    def __init__(self, model, strategy, *, class_weight, binary):
        self.model = model
        self.strategy = strategy
        self.binary = binary
        self.loss = (
            keras.losses.BinaryCrossentropy(reduction=None)
            if binary
            else keras.losses.SparseCategoricalCrossentropy(reduction=None)
        )
        self.class_weights = None
        if class_weight:
            table = [float(class_weight.get(index, 1.0)) for index in range(max(class_weight) + 1)]
            self.class_weights = tf.constant(table, tf.float32)
        self._train_function = None
        self._evaluate_function = None

    def distribute(self, dataset, *, drop_short_batches=False):
        """Return `dataset` split across the replicas (and sharded by photo across workers)."""
        if drop_short_batches and self.strategy.num_replicas_in_sync > 1:
            # A batch smaller than the replica count would leave a replica an empty slice, and BatchNorm a NaN.
            replicas = self.strategy.num_replicas_in_sync
            dataset = dataset.filter(lambda inputs, labels: tf.shape(labels)[0] >= replicas)
        options = tf.data.Options()
        # The pipeline reads files inside a map, so file-based sharding cannot apply: shard the batches' photos.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return self.strategy.experimental_distribute_dataset(dataset.with_options(options))

    def train(self, batch) -> numpy.ndarray:
        if self._train_function is None:
            self._train_function = tf.function(self._distributed(self._train_replica), reduce_retracing=True)
        return self._train_function(batch).numpy()

    def evaluate(self, batch) -> numpy.ndarray:
        if self._evaluate_function is None:
            self._evaluate_function = tf.function(self._distributed(self._evaluate_replica), reduce_retracing=True)
        return self._evaluate_function(batch).numpy()

    def _distributed(self, replica_function):
        def step(batch):
            inputs, labels = batch
            sums = self.strategy.run(replica_function, args=(inputs, labels))
            return self.strategy.reduce("SUM", sums, axis=None)

        return step

    def _weights(self, labels):
        if self.class_weights is None:
            return tf.ones([tf.shape(labels)[0]], tf.float32)
        return tf.gather(self.class_weights, tf.cast(tf.reshape(labels, [-1]), tf.int32))

    def _correct(self, labels, predictions):
        if self.binary:
            predicted = tf.cast(tf.reshape(predictions, [-1]) > 0.5, tf.float32)
            return tf.cast(tf.equal(predicted, tf.cast(tf.reshape(labels, [-1]), tf.float32)), tf.float32)
        predicted = tf.argmax(predictions, axis=-1, output_type=tf.int32)
        return tf.cast(tf.equal(predicted, tf.cast(tf.reshape(labels, [-1]), tf.int32)), tf.float32)

    def _regularization(self):
        # Weight penalties (none of the built-in models has any): counted once per step, split over replicas.
        if not self.model.losses:
            return tf.constant(0.0)
        return tf.add_n([tf.cast(loss, tf.float32) for loss in self.model.losses])

    def _train_replica(self, inputs, labels):
        model = self.model
        weights = self._weights(labels)
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        global_count = tf.distribute.get_replica_context().all_reduce("SUM", count)
        with tf.GradientTape() as tape:
            predictions = tf.cast(model(inputs, training=True), tf.float32)
            weighted_sum = tf.reduce_sum(self.loss(labels, predictions) * weights)
            regularization = self._regularization()
            loss = weighted_sum / tf.maximum(global_count, 1.0) + regularization / self.strategy.num_replicas_in_sync
            scaled = model.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        # Accuracy counts every photo once, whatever its class weight: the numbers Keras `fit` reports.
        correct = tf.reduce_sum(self._correct(labels, predictions))
        return tf.stack([weighted_sum + regularization * count, correct, count, count])

    def _evaluate_replica(self, inputs, labels):
        predictions = tf.cast(self.model(inputs, training=False), tf.float32)
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        loss_sum = tf.reduce_sum(self.loss(labels, predictions)) + self._regularization() * count
        return tf.stack([loss_sum, tf.reduce_sum(self._correct(labels, predictions)), count, count])


def _agree_with_chief(strategy, model, values, *, variables):
    """Make every worker hold the chief's `values` (and, with `variables`, its weights and optimizer state).

    After the epoch-end agreement (`variables=False`), `model.stop_training` and a settable learning
    rate take the chief's values too. Returns the agreed `values`, as floats.
    """
    optimizer = model.optimizer
    schedule = isinstance(getattr(optimizer, "_learning_rate", None), keras.optimizers.schedules.LearningRateSchedule)
    scalars = [float(value) for value in values] + ([] if schedule else [current_learning_rate(optimizer)])
    synced = [*model.variables, *optimizer.variables] if variables else []
    agreed, *synced_values = chief_values(strategy, [scalars, *synced])
    for variable, value in zip(synced, synced_values):
        variable.assign(tf.cast(value, variable.dtype))
    agreed = [float(value) for value in agreed.numpy()]
    if not schedule:
        optimizer.learning_rate = agreed[len(values)]
    if not variables:
        model.stop_training = bool(agreed[0])
    return agreed[: len(values)]
