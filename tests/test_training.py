import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from catsdogs.cli import main
from catsdogs.errors import CatsdogsError
from catsdogs.models.saving import load_committed_checkpoint, load_model
from catsdogs.runs import STATUS_FINISHED, RunDir
from catsdogs.training import train
from fake_runs import make_data_dir, tiny_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    return train(tiny_config(), data_dir, runs_dir=runs_dir, run_name="first", verbose=0)


def test_run_folder_is_complete(finished_run):
    run_dir = finished_run
    assert run_dir.read_config() == tiny_config().to_dict()
    assert run_dir.read_labels() == ["cats", "dogs"]
    assert load_model(run_dir.model_path).output_shape == (None, 1)  # Passes the SHA-256 check.
    history = run_dir.read_history()
    assert history["epoch"] == [0.0, 1.0]
    assert {"accuracy", "val_accuracy", "loss", "val_loss", "learning_rate"} <= set(history)
    metrics = run_dir.read_metrics()
    for split in ("validation", "test"):
        assert set(metrics[split]) == {"loss", "accuracy"}
    assert metrics["stop_reason"] == "completed" and metrics["epochs_done"] == 2
    for figure in (run_dir.history_figure_path, run_dir.augmentation_figure_path):
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Epoch 2:" in run_dir.log_path.read_text()
    assert run_dir.read_run_info()["status"] == STATUS_FINISHED
    # Training state is removed once the final model is safely written.
    assert not run_dir.backup_dir.exists() and not run_dir.checkpoint_dir.exists()


def test_same_seed_gives_the_same_metrics(finished_run, data_dir, tmp_path):
    again = train(tiny_config(), data_dir, runs_dir=tmp_path, run_name="again", verbose=0)
    first, second = finished_run.read_metrics(), again.read_metrics()
    assert second["validation"] == first["validation"] and second["test"] == first["test"]
    assert again.read_history() == finished_run.read_history()


def test_finished_run_name_is_not_reused(finished_run, data_dir):
    with pytest.raises(CatsdogsError, match="already holds a finished run"):
        train(tiny_config(), data_dir, runs_dir=finished_run.path.parent, run_name="first", verbose=0)


def test_reduce_lr_with_a_schedule_is_refused(data_dir, tmp_path):
    with pytest.raises(CatsdogsError, match="train.reduce_lr=false"):
        train(tiny_config("train.schedule=cosine"), data_dir, runs_dir=tmp_path, verbose=0)


class PoisonWeights(keras.callbacks.Callback):
    """Turn every weight into NaN when `epoch` begins, remembering the best checkpoint at that moment."""

    def __init__(self, run_dir, epoch):
        super().__init__()
        self.run_dir, self.epoch = run_dir, epoch
        self.checkpoint_before = None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            path, _, _ = self.run_dir.committed_checkpoint()
            self.checkpoint_before = (path.read_bytes(), load_committed_checkpoint(self.run_dir).get_weights())
            self.model.set_weights([np.full_like(weights, np.nan) for weights in self.model.get_weights()])


def test_nan_stops_training_and_keeps_the_best_model(data_dir, tmp_path):
    poison = PoisonWeights(RunDir(tmp_path / "nan"), epoch=2)
    run_dir = train(
        tiny_config("train.reduce_lr=false", epochs=6),
        data_dir,
        runs_dir=tmp_path,
        run_name="nan",
        extra_callbacks=[poison],
        verbose=0,
    )
    metrics = run_dir.read_metrics()
    # TerminateOnNaN stopped the run in the poisoned epoch, long before epoch 6.
    assert metrics["stop_reason"] == "nan" and metrics["epochs_done"] == 3
    assert np.isnan(run_dir.read_history()["loss"][-1])
    checkpoint_bytes, best_weights = poison.checkpoint_before
    final_weights = load_model(run_dir.model_path).get_weights()
    # The final model is the best checkpoint from before the NaN, untouched.
    for final, best in zip(final_weights, best_weights):
        np.testing.assert_array_equal(final, best)
    assert all(np.isfinite(weights).all() for weights in final_weights)
    assert np.isfinite(metrics["validation"]["loss"])


def test_train_help_lists_the_models(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    output = capsys.readouterr().out
    assert "seed_cnn " in output and "seed_cnn_bn" in output and "--name" in output


def test_killed_run_resumes_where_it_stopped(tmp_path):
    data_dir = make_data_dir(tmp_path / "data", counts={"train": 16, "validation": 4}, size=64)
    runs_dir = tmp_path / "runs"
    epochs = 4
    command = [
        sys.executable,
        "-m",
        "catsdogs",
        "train",
        str(data_dir),
        "--out",
        str(runs_dir),
        "--set",
        "data.image_size=[64, 64]",
        "--set",
        f"train.epochs={epochs}",
        "--set",
        "train.batch_size=4",
        "--set",
        "data.cache=false",
    ]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        command, cwd=tmp_path, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        # Kill as soon as the first epoch is backed up: deterministic, whatever the machine's speed.
        deadline = time.monotonic() + 120
        while not any(RunDir(path).backup_epoch() >= 1 for path in runs_dir.glob("*")):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no epoch was backed up in time"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    (run_path,) = runs_dir.iterdir()
    run_dir = RunDir(run_path)
    saved_epochs = run_dir.backup_epoch()
    assert 1 <= saved_epochs < epochs and run_dir.read_run_info()["status"] != STATUS_FINISHED
    history_before = {column: values[:saved_epochs] for column, values in run_dir.read_history().items()}

    # The same command again: it finds the unfinished run folder by its config and data.
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert list(runs_dir.iterdir()) == [run_path]
    info = run_dir.read_run_info()
    assert info["status"] == STATUS_FINISHED and info["attempts"] == 2
    history = run_dir.read_history()
    assert history["epoch"] == [float(epoch) for epoch in range(epochs)]
    assert {column: values[:saved_epochs] for column, values in history.items()} == history_before
    log = run_dir.log_path.read_text()
    assert f"Resuming from epoch {saved_epochs + 1} of {epochs}" in log
    # EarlyStopping, ReduceLROnPlateau and ModelCheckpoint got their best validation loss back.
    assert "Resumed callback state: best val_loss" in log
    # Started over, the log would hold "Epoch 1:" twice.
    assert log.count("Epoch 1:") == 1 and log.count(f"Epoch {epochs}:") == 1
    assert json.loads(run_dir.metrics_path.read_text())["epochs_done"] == epochs


@pytest.mark.slow
def test_seed_cnn_learns_on_real_photos(tmp_path):
    """Two epochs on a real prepared split: run with `-m slow` and CATSDOGS_REAL_DATA=<prepared folder>."""
    real_data = os.environ.get("CATSDOGS_REAL_DATA")
    if not real_data:
        pytest.skip("set CATSDOGS_REAL_DATA to a folder made by `catsdogs prepare`")
    config = tiny_config("train.batch_size=16", "data.cache=true", size=180, epochs=2)
    run_dir = train(config, real_data, runs_dir=tmp_path, verbose=0)
    metrics = run_dir.read_metrics()
    assert metrics["epochs_done"] == 2 and np.isfinite(metrics["validation"]["loss"])
    assert run_dir.history_figure_path.is_file() and run_dir.augmentation_figure_path.is_file()


def test_a_loss_stuck_at_ln_2_is_reported(caplog):
    from catsdogs.training.trainer import _warn_if_stuck_at_chance

    with caplog.at_level("WARNING", logger="catsdogs.training"):
        _warn_if_stuck_at_chance({"loss": [0.70, 0.6932, 0.6931, 0.6931]}, num_classes=2)
    assert "stayed at ln 2" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="catsdogs.training"):
        _warn_if_stuck_at_chance({"loss": [0.70, 0.69, 0.66, 0.61]}, num_classes=2)
    assert caplog.text == ""


def test_train_without_a_terminal_prints_one_plain_line_per_epoch(data_dir, tmp_path, capsys, monkeypatch):
    import logging

    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    # The handler `catsdogs train` installs: INFO and above, to stderr, with its prefix.
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("catsdogs train: %(message)s"))
    logging.getLogger("catsdogs").addHandler(handler)
    try:
        train(tiny_config(epochs=3), data_dir, runs_dir=tmp_path, run_name="plain")
    finally:
        logging.getLogger("catsdogs").removeHandler(handler)
    captured = capsys.readouterr()
    for control in ("\r", "\x08", "\x1b"):
        assert control not in captured.out and control not in captured.err
    epoch_lines = [line for line in captured.err.splitlines() if line.startswith("catsdogs train: Epoch ")]
    assert [line.split(":")[1] for line in epoch_lines] == [" Epoch 1", " Epoch 2", " Epoch 3"]
    assert all("val_loss " in line and "learning_rate " in line for line in epoch_lines)
