import json
import os

import keras
import numpy as np
import pytest

from catsdogs.errors import CatsdogsError
from catsdogs.models.saving import load_committed_checkpoint, load_model, save_model
from catsdogs.runs import STATUS_FINISHED, RunDir


def tiny_model():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="predictions")(inputs))


def test_save_writes_a_checksum_and_load_gives_the_same_model(tmp_path):
    model = tiny_model()
    digest = save_model(model, tmp_path / "model.keras")
    # `sha256sum -c` format: the hex digest, two spaces, the file name.
    assert (tmp_path / "model.keras.sha256").read_text() == f"{digest}  model.keras\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.keras", "model.keras.sha256"]
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(load_model(tmp_path / "model.keras").predict_on_batch(x), model.predict_on_batch(x))


def test_tampered_model_is_refused(tmp_path):
    path = tmp_path / "model.keras"
    save_model(tiny_model(), path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CatsdogsError, match="does not match its SHA-256"):
        load_model(path)


def test_model_without_checksum_is_refused(tmp_path):
    path = tmp_path / "model.keras"
    save_model(tiny_model(), path)
    (tmp_path / "model.keras.sha256").unlink()
    with pytest.raises(CatsdogsError, match="no SHA-256 file"):
        load_model(path)


def make_run(runs_dir, name, *, config, data_dir, status="training", pid=None):
    run_dir = RunDir.create(runs_dir, model_name="seed_cnn", run_name=name)
    run_dir.write_config(config)
    run_dir.claim(data_dir=data_dir, model_name="seed_cnn")
    changes = {"status": status}
    if pid is not None:
        changes["pid"] = pid
    run_dir.update_run_info(**changes)
    return run_dir


def dead_pid():
    import subprocess
    import sys

    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(process.stdout)


def test_find_resumable_picks_the_unfinished_run_of_the_same_config_and_data(tmp_path):
    config, data_dir = {"train": {"epochs": 3}}, tmp_path / "data"
    pid = dead_pid()
    make_run(tmp_path, "a-finished", config=config, data_dir=data_dir, status=STATUS_FINISHED, pid=pid)
    make_run(tmp_path, "b-other-config", config={"train": {"epochs": 4}}, data_dir=data_dir, pid=pid)
    make_run(tmp_path, "c-other-data", config=config, data_dir=tmp_path / "elsewhere", pid=pid)
    make_run(tmp_path, "d-still-running", config=config, data_dir=data_dir, pid=os.getppid())  # Alive.
    wanted = make_run(tmp_path, "e-killed", config=config, data_dir=data_dir, pid=pid)
    found = RunDir.find_resumable(tmp_path, config=config, data_dir=data_dir)
    assert found is not None and found.path == wanted.path
    assert RunDir.find_resumable(tmp_path, config={"train": {"epochs": 9}}, data_dir=data_dir) is None


def test_create_refuses_odd_names_and_never_reuses_a_folder(tmp_path):
    with pytest.raises(CatsdogsError, match="plain folder name"):
        RunDir.create(tmp_path, model_name="seed_cnn", run_name="../escape")
    first = RunDir.create(tmp_path, model_name="seed_cnn")
    second = RunDir.create(tmp_path, model_name="seed_cnn")
    assert first.path != second.path and first.path.name.endswith("seed_cnn")


def test_open_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(CatsdogsError, match="not a run folder"):
        RunDir.open(tmp_path)


def test_history_is_cut_back_to_the_backed_up_epochs(tmp_path):
    run_dir = RunDir(tmp_path)
    run_dir.history_path.write_text("epoch,loss,val_loss\n0,0.7,0.69\n1,0.6,0.65\n2,0.5,0.66\n")
    run_dir.truncate_history(2)
    assert run_dir.read_history() == {"epoch": [0.0, 1.0], "loss": [0.7, 0.6], "val_loss": [0.69, 0.65]}


def test_only_a_committed_checkpoint_is_trusted(tmp_path):
    run_dir = RunDir(tmp_path)
    run_dir.checkpoint_dir.mkdir()
    model = tiny_model()
    model.save(run_dir.checkpoint_pattern.format(epoch=1))
    assert run_dir.committed_checkpoint() is None  # Written but not yet committed: maybe torn.
    run_dir.commit_checkpoint(epoch=1, monitor_value=0.5)
    path, epoch, value = run_dir.committed_checkpoint()
    assert (epoch, value) == (1, 0.5) and path.is_file()
    # A later, torn write is ignored and discarded; the committed file survives.
    torn = run_dir.checkpoint_pattern.format(epoch=2)
    open(torn, "wb").write(b"PK\x03\x04 half a zip")
    run_dir.discard_uncommitted_checkpoints()
    assert not (tmp_path / "checkpoints" / "epoch-002.keras").exists()
    assert load_committed_checkpoint(run_dir) is not None
    # A committed file that changed afterwards is not trusted either.
    path.write_bytes(path.read_bytes() + b"x")
    assert run_dir.committed_checkpoint() is None
    assert json.loads((tmp_path / "checkpoints" / "best.json").read_text())["epoch"] == 1
