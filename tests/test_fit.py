"""The one fit path: loss choice, compile, stop reasons and progress output, on a one-layer model."""

import logging
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from catsdogs.training.callbacks import EpochLogger
from catsdogs.training.fit import (
    STOP_COMPLETED,
    STOP_EARLY_STOPPING,
    STOP_NAN,
    compile_model,
    fit_model,
    loss_for,
    resolve_progress,
    stop_reason,
)
from catsdogs.training.optimizers import OptimizerSettings

EPOCHS = 3
# Keras's live progress bar redraws itself with these; a log file should never see them.
CONTROL_CHARACTERS = ("\r", "\x08", "\x1b")


def _tiny_model_and_data(num_classes=2, seed=0):
    keras.utils.set_random_seed(seed)
    outputs = 1 if num_classes == 2 else num_classes
    activation = "sigmoid" if num_classes == 2 else "softmax"
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(outputs, activation=activation)])
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(16, 4)).astype("float32")
    labels = (features[:, 0] > 0).astype("float32" if num_classes == 2 else "int32")
    data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(8)
    return model, data


def _compiled(num_classes=2, learning_rate=0.01):
    model, data = _tiny_model_and_data(num_classes)
    optimizer = OptimizerSettings(name="sgd", learning_rate=learning_rate, schedule="constant")
    compile_model(model, num_classes=num_classes, optimizer=optimizer, total_steps=EPOCHS * 2)
    return model, data


def test_loss_is_binary_for_two_classes_and_sparse_categorical_otherwise():
    assert loss_for(2) == "binary_crossentropy"
    assert loss_for(3) == "sparse_categorical_crossentropy"


def test_compile_model_builds_the_optimizer_and_schedule_it_is_given():
    model, _ = _tiny_model_and_data(num_classes=3)
    optimizer = OptimizerSettings(name="adamw", learning_rate=0.02, schedule="cosine", weight_decay=0.001)
    compile_model(model, num_classes=3, optimizer=optimizer, total_steps=10)
    assert isinstance(model.optimizer, keras.optimizers.AdamW) and model.optimizer.weight_decay == 0.001
    schedule = model.optimizer.get_config()["learning_rate"]
    assert schedule["class_name"] == "CosineDecay"
    assert schedule["config"]["initial_learning_rate"] == 0.02 and schedule["config"]["decay_steps"] == 10
    assert model.loss == "sparse_categorical_crossentropy"


def test_a_full_fit_completes_and_reports_its_best_validation_loss():
    model, data = _compiled()
    result = fit_model(model, data, data, epochs=EPOCHS, callbacks=[], verbose=0)
    assert result.stop_reason == STOP_COMPLETED
    assert len(result.history["loss"]) == EPOCHS
    assert result.best_validation_loss == min(result.history["val_loss"]) and result.seconds > 0


class WorseningValidationLoss(keras.callbacks.Callback):
    """Report a validation loss that rises every epoch, so EarlyStopping always stops."""

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = 1.0 + epoch


def test_early_stopping_is_the_stop_reason_only_for_the_callback_passed_in():
    model, data = _compiled()
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1)
    callbacks = [WorseningValidationLoss(), early_stopping]
    result = fit_model(model, data, data, epochs=10, callbacks=callbacks, verbose=0, early_stopping=early_stopping)
    assert result.stop_reason == STOP_EARLY_STOPPING and len(result.history["loss"]) == 2
    # An EarlyStopping that is not the run's own (a user's extra callback) does not name the stop.
    assert stop_reason(result.history) == STOP_COMPLETED


class PoisonWeightsAtSecondEpoch(keras.callbacks.Callback):
    """Turn every weight into NaN when the second epoch begins, so its loss is NaN."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.model.set_weights([np.full_like(weights, np.nan) for weights in self.model.get_weights()])


def test_a_non_finite_loss_is_the_nan_stop_reason_even_when_early_stopping_also_stopped(caplog):
    model, data = _compiled()
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1)
    callbacks = [PoisonWeightsAtSecondEpoch(), keras.callbacks.TerminateOnNaN(), early_stopping]
    with caplog.at_level(logging.WARNING, logger="catsdogs.training"):
        result = fit_model(model, data, data, epochs=20, callbacks=callbacks, verbose=0, early_stopping=early_stopping)
    assert result.stop_reason == STOP_NAN and len(result.history["loss"]) == 2
    assert "NaN or infinite" in caplog.text
    # NaN validation losses do not count as the best one.
    assert result.best_validation_loss == result.history["val_loss"][0]
    early_stopping.stopped_epoch = 5
    assert stop_reason({"loss": [0.5, float("inf")]}, early_stopping=early_stopping) == STOP_NAN


def test_explicit_verbosity_wins_over_the_terminal_check(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    for verbose in (0, 1, 2):
        progress = resolve_progress(verbose)
        assert progress.keras_verbose == verbose and progress.epoch_log_level == logging.DEBUG


def _fit_with_progress(capsys, caplog, *, terminal, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminal)
    progress = resolve_progress("auto")
    model, data = _compiled()
    with caplog.at_level(logging.DEBUG, logger="catsdogs"):
        fit_model(
            model,
            data,
            data,
            epochs=EPOCHS,
            callbacks=[EpochLogger(level=progress.epoch_log_level)],
            verbose=progress.keras_verbose,
        )
    epoch_records = [record for record in caplog.records if record.getMessage().startswith("Epoch ")]
    return capsys.readouterr().out, epoch_records


def test_without_a_terminal_each_epoch_is_one_plain_info_line(capsys, caplog, monkeypatch):
    output, records = _fit_with_progress(capsys, caplog, terminal=False, monkeypatch=monkeypatch)
    assert not any(character in output for character in CONTROL_CHARACTERS), repr(output)
    assert [record.levelno for record in records] == [logging.INFO] * EPOCHS
    messages = [record.getMessage() for record in records]
    assert [message.split(":")[0] for message in messages] == [f"Epoch {epoch}" for epoch in range(1, EPOCHS + 1)]
    for message in messages:
        assert "\n" not in message and not any(character in message for character in CONTROL_CHARACTERS)
        assert "loss " in message and "accuracy " in message and "val_loss " in message
    assert messages[-1].endswith(f"{EPOCHS}/{EPOCHS})")


def test_in_a_terminal_keras_draws_its_live_progress_bar(capsys, caplog, monkeypatch):
    output, records = _fit_with_progress(capsys, caplog, terminal=True, monkeypatch=monkeypatch)
    assert f"Epoch {EPOCHS}/{EPOCHS}" in output and "\x08" in output
    # The per-epoch lines still reach the run's log file, but not the console (DEBUG).
    assert [record.levelno for record in records] == [logging.DEBUG] * EPOCHS


@pytest.mark.parametrize("verbose", [0, 2])
def test_explicit_verbosity_keeps_epoch_lines_out_of_the_console(verbose, capsys, caplog, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    progress = resolve_progress(verbose)
    model, data = _compiled()
    with caplog.at_level(logging.DEBUG, logger="catsdogs"):
        fit_model(model, data, data, epochs=2, callbacks=[EpochLogger(level=progress.epoch_log_level)], verbose=verbose)
    assert {record.levelno for record in caplog.records if record.getMessage().startswith("Epoch ")} == {logging.DEBUG}
