"""`train.distribute`: the strategy from the config and TF_CONFIG, and training under each strategy.

Mirrored and multi-worker training run in subprocesses (tests/distribute_worker.py or
`python -m catsdogs train`): logical devices and MultiWorkerMirroredStrategy must be set
up before TensorFlow starts. Multi-worker tests run two workers on 127.0.0.1 with free ports.
Those are marked slow: each starts two to four processes that import TensorFlow (run with -m slow).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from catsdogs.errors import CatsdogsError
from catsdogs.runs import STATUS_FINISHED, RunDir
from catsdogs.training import train
from catsdogs.training.distribute import (
    build_distribution,
    is_chief,
    read_tf_config,
    worker_position,
)
from fake_runs import make_data_dir, tiny_config

TESTS_DIR = Path(__file__).resolve().parent
WORKER_SCRIPT = TESTS_DIR / "distribute_worker.py"
# Each process imports TensorFlow and trains a tiny model; a stuck collective must fail the test, not hang it.
PROCESS_TIMEOUT_SECONDS = 120
# Same global batch (8), same seed, no dropout: the two-worker run differs from one process only by the order
# in which floating-point gradient sums are added, so its weights and accuracy match closely.
COMPARABLE = ("model.dropout_rate=0.0", "train.early_stopping=false", "train.reduce_lr=false")
WEIGHT_TOLERANCE = 1e-4
ACCURACY_TOLERANCE = 1 / 12  # One validation photo of 12.


def _tf_config(ports, index):
    return json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]}, "task": {"type": "worker", "index": index}}
    )


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _environment(**extra):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), environment.get("PYTHONPATH")]))
    environment.pop("TF_CONFIG", None)
    environment.update(extra)
    return environment


def _start(command, environment, cwd):
    return subprocess.Popen(
        command, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process):
    try:
        stdout, stderr = process.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"a training process hung; stderr:\n{stderr[-3000:]}")
    return process.returncode, stdout, stderr


def _weights(path):
    with np.load(path) as archive:
        return [archive[f"arr_{index}"] for index in range(len(archive.files))]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data"))


# ----------------------------------------------------------------------------- the strategy from the config


def test_none_is_the_default_strategy_with_one_replica():
    distribution = build_distribution("none")
    assert distribution.replicas == 1 and distribution.is_chief and distribution.workers == 1
    assert distribution.global_batch_size(16) == 16


def test_an_unknown_strategy_is_refused():
    with pytest.raises(CatsdogsError, match="one of none, mirrored, multi_worker"):
        build_distribution("horovod")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "TF_CONFIG environment variable, which is not set"),
        ({"TF_CONFIG": "{cluster"}, "not valid JSON"),
        ({"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}}'}, 'needs a "cluster" object and a "task" object'),
        ({"TF_CONFIG": '{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}'}, "parameter servers"),
        ({"TF_CONFIG": '{"cluster": {"worker": ["nohost"]}, "task": {"type": "worker", "index": 0}}'}, "host:port"),
        ({"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}'}, "index into"),
    ],
)
def test_a_missing_or_invalid_tf_config_says_what_is_expected(environ, message):
    with pytest.raises(CatsdogsError, match=message) as error:
        read_tf_config(environ)
    assert '"task": {"type": "worker", "index": 0}' in str(error.value)


def test_the_chief_is_the_chief_task_or_else_worker_0():
    workers = {"worker": ["a:1", "b:1"]}
    assert is_chief(None)
    assert is_chief({"cluster": workers, "task": {"type": "worker", "index": 0}})
    assert not is_chief({"cluster": workers, "task": {"type": "worker", "index": 1}})
    with_chief = {"chief": ["c:1"], **workers}
    assert is_chief({"cluster": with_chief, "task": {"type": "chief", "index": 0}})
    assert not is_chief({"cluster": with_chief, "task": {"type": "worker", "index": 0}})
    assert worker_position({"cluster": with_chief, "task": {"type": "worker", "index": 1}}) == (3, 2)


def test_transfer_models_refuse_distribution(data_dir, tmp_path):
    config = tiny_config("model.name=efficientnet_lite0", "train.distribute=mirrored")
    with pytest.raises(CatsdogsError, match="models trained from scratch"):
        train(config, data_dir, runs_dir=tmp_path, verbose=0)
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- training under each strategy


@pytest.mark.slow  # Subprocesses that import TensorFlow and train: 30-120 s on a busy 2-core machine.
def test_mirrored_trains_on_two_logical_cpu_devices(data_dir, tmp_path):
    weights_path = tmp_path / "weights.npz"
    command = [
        sys.executable,
        str(WORKER_SCRIPT),
        str(data_dir),
        str(tmp_path / "runs"),
        str(weights_path),
        "--logical-cpus=2",
        "--set=train.distribute=mirrored",
    ]
    returncode, stdout, stderr = _finish(_start(command, _environment(), tmp_path))
    assert returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    run_dir = RunDir(summary["run_dir"])
    info = run_dir.read_run_info()
    assert info["status"] == STATUS_FINISHED
    assert info["distribute"] == {"strategy": "mirrored", "replicas": 2, "workers": 1, "global_batch_size": 16}
    assert run_dir.read_history()["epoch"] == [0.0, 1.0]
    assert all(np.isfinite(weights).all() for weights in _weights(weights_path))
    assert np.isfinite(run_dir.read_metrics()["validation"]["loss"])


@pytest.mark.slow  # Subprocesses that import TensorFlow and train: 30-120 s on a busy 2-core machine.
def test_two_workers_train_like_one_process(data_dir, tmp_path):
    ports = _free_ports(2)
    runs_dir = tmp_path / "runs"
    processes = []
    for index in range(2):
        command = [
            sys.executable,
            str(WORKER_SCRIPT),
            str(data_dir),
            str(runs_dir),
            str(tmp_path / f"weights-{index}.npz"),
            "--set=train.distribute=multi_worker",
            "--set=train.batch_size=4",
            *(f"--set={override}" for override in COMPARABLE),
        ]
        processes.append(_start(command, _environment(TF_CONFIG=_tf_config(ports, index)), tmp_path))
    results = [_finish(process) for process in processes]
    for returncode, _, stderr in results:
        assert returncode == 0, stderr[-3000:]
    chief, worker = (json.loads(stdout.strip().splitlines()[-1]) for _, stdout, _ in results)
    # One run folder, the chief's; the other worker wrote to a temporary folder it removed.
    assert worker["run_dir"] is None and [path.name for path in runs_dir.iterdir()] == [Path(chief["run_dir"]).name]
    run_dir = RunDir(chief["run_dir"])
    assert run_dir.read_run_info()["distribute"]["global_batch_size"] == 8
    for first, second in zip(_weights(tmp_path / "weights-0.npz"), _weights(tmp_path / "weights-1.npz")):
        np.testing.assert_array_equal(first, second)

    # One process with the same global batch: the same training, summed in another order.
    single = train(tiny_config("train.batch_size=8", *COMPARABLE), data_dir, runs_dir=tmp_path / "single", verbose=0)
    single_history, multi_history = single.read_history(), run_dir.read_history()
    assert multi_history["epoch"] == single_history["epoch"] == [0.0, 1.0]
    np.testing.assert_allclose(multi_history["loss"], single_history["loss"], rtol=1e-3)
    assert abs(multi_history["val_accuracy"][-1] - single_history["val_accuracy"][-1]) <= ACCURACY_TOLERANCE
    single_weights = _weights_of_model(single)
    multi_weights = _weights_of_model(run_dir)
    for first, second in zip(single_weights, multi_weights):
        np.testing.assert_allclose(first, second, atol=WEIGHT_TOLERANCE)


def _weights_of_model(run_dir):
    from catsdogs.models.saving import load_model

    return load_model(run_dir.model_path).get_weights()


@pytest.mark.slow  # Subprocesses that import TensorFlow and train: 30-120 s on a busy 2-core machine.
def test_a_killed_worker_stops_the_other_and_a_rerun_resumes(tmp_path):
    data_dir = make_data_dir(tmp_path / "data", counts={"train": 16, "validation": 4}, size=32)
    runs_dir = tmp_path / "runs"
    epochs = 8

    def command():
        return [
            sys.executable,
            "-m",
            "catsdogs",
            "train",
            str(data_dir),
            "--out",
            str(runs_dir),
            "--set=train.distribute=multi_worker",
            f"--set=train.epochs={epochs}",
            "--set=train.batch_size=2",
            "--set=data.image_size=[32, 32]",
            "--set=data.cache=false",
        ]

    def start_workers():
        ports = _free_ports(2)
        return [_start(command(), _environment(TF_CONFIG=_tf_config(ports, index)), tmp_path) for index in range(2)]

    chief, worker = start_workers()
    deadline = time.monotonic() + PROCESS_TIMEOUT_SECONDS
    # Kill worker 1 as soon as the chief has backed up an epoch: it dies in the middle of the next one.
    while not any(RunDir(path).backup_epoch() >= 1 for path in runs_dir.glob("*")):
        assert chief.poll() is None and worker.poll() is None, (chief.stderr.read(), worker.stderr.read())
        assert time.monotonic() < deadline, "no epoch was backed up in time"
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    started = time.monotonic()
    returncode, _, stderr = _finish(chief)
    seconds_to_fail = time.monotonic() - started
    # What the user sees on the surviving chief: an error naming the cause and the fix, within seconds.
    assert returncode == 2, stderr[-3000:]
    assert "Another worker of this multi-worker run stopped answering" in stderr
    assert "Re-run the same command on every worker" in stderr
    assert seconds_to_fail < 60
    (run_path,) = runs_dir.iterdir()
    run_dir = RunDir(run_path)
    saved_epochs = run_dir.backup_epoch()
    assert 1 <= saved_epochs < epochs and run_dir.read_run_info()["status"] != STATUS_FINISHED

    # The same command on both workers again: the chief resumes its run folder and hands its state to worker 1.
    results = [_finish(process) for process in start_workers()]
    for returncode, _, stderr in results:
        assert returncode == 0, stderr[-3000:]
    assert list(runs_dir.iterdir()) == [run_path]
    info = run_dir.read_run_info()
    assert info["status"] == STATUS_FINISHED and info["attempts"] == 2
    history = run_dir.read_history()
    assert history["epoch"] == [float(epoch) for epoch in range(epochs)]
    log = run_dir.log_path.read_text()
    assert f"Resuming from epoch {saved_epochs + 1} of {epochs}" in log
    assert log.count("Epoch 1:") == 1


@pytest.mark.parametrize("model_name", ["seed_cnn", "seed_cnn_bn"])
def test_the_loop_gives_the_numbers_and_weights_of_keras_fit(model_name):
    """Under the default strategy the one training loop is Keras `fit`: same history and weights, class weights on."""
    import keras
    import tensorflow as tf

    from catsdogs.models import build_model
    from catsdogs.training.fit import compile_model, fit_model
    from catsdogs.training.optimizers import OptimizerSettings

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (60, 32, 32, 3)).astype("float32")
    labels = (rng.uniform(size=60) > 0.2).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)  # The last batch is short: 12.
    class_weight = {0: 3.0, 1: 0.6}
    results = []
    for use_loop in (True, False):
        keras.utils.set_random_seed(0)
        model = build_model(model_name, input_shape=(32, 32, 3), num_classes=2)
        optimizer = OptimizerSettings(name="adam", learning_rate=1e-3, schedule="constant")
        compile_model(model, num_classes=2, optimizer=optimizer, total_steps=8)
        if use_loop:
            history = fit_model(model, data, data, epochs=2, callbacks=[], class_weight=class_weight).history
        else:
            history = model.fit(
                data, validation_data=data, epochs=2, verbose=0, shuffle=False, class_weight=class_weight
            ).history
        results.append((history, model.get_weights()))
    (loop_history, loop_weights), (fit_history, fit_weights) = results
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(loop_history[name], fit_history[name], rtol=1e-5, err_msg=name)
    for first, second in zip(loop_weights, fit_weights):
        np.testing.assert_allclose(first, second, rtol=1e-4, atol=1e-6)
