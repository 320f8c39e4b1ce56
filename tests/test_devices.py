"""GPU memory growth (training.devices): every GPU asked, a no-op without one, a late call logged, not fatal."""

import logging

import pytest
import tensorflow as tf

from catsdogs.training import devices

GPUS = [tf.config.PhysicalDevice(name=f"/physical_device:GPU:{index}", device_type="GPU") for index in range(2)]


class FakeGpuConfig:
    """Stands in for TensorFlow's device list and memory-growth calls, recording what was asked."""

    def __init__(self, gpus, *, growing=(), initialised=()):
        self.gpus = list(gpus)
        self.growing = set(growing)
        self.initialised = set(initialised)
        self.set_calls = []

    def list_physical_devices(self, device_type=None):
        return [gpu for gpu in self.gpus if device_type in (None, gpu.device_type)]

    def get_memory_growth(self, device):
        return device.name in self.growing

    def set_memory_growth(self, device, enable):
        self.set_calls.append((device.name, enable))
        if device.name in self.initialised:
            raise RuntimeError("Physical devices cannot be modified after being initialized")
        if enable:
            self.growing.add(device.name)


@pytest.fixture
def fake_gpus(monkeypatch):
    """Factory: replace TensorFlow's GPU list and memory-growth calls with a `FakeGpuConfig`."""

    def install(gpus, **state):
        fake = FakeGpuConfig(gpus, **state)
        monkeypatch.setattr(tf.config, "list_physical_devices", fake.list_physical_devices)
        monkeypatch.setattr(tf.config.experimental, "get_memory_growth", fake.get_memory_growth)
        monkeypatch.setattr(tf.config.experimental, "set_memory_growth", fake.set_memory_growth)
        return fake

    return install


def test_memory_growth_is_turned_on_for_every_gpu(fake_gpus):
    fake = fake_gpus(GPUS)
    assert devices.enable_memory_growth() == [gpu.name for gpu in GPUS]
    assert fake.set_calls == [(gpu.name, True) for gpu in GPUS]


def test_without_a_gpu_nothing_is_changed(fake_gpus):
    cpu = tf.config.PhysicalDevice(name="/physical_device:CPU:0", device_type="CPU")
    fake = fake_gpus([cpu])
    assert devices.enable_memory_growth() == []
    assert fake.set_calls == []


def test_a_gpu_already_initialised_is_logged_and_the_others_still_grow(fake_gpus, caplog):
    fake = fake_gpus(GPUS, initialised={GPUS[0].name})
    with caplog.at_level(logging.WARNING, logger="catsdogs.training"):
        assert devices.enable_memory_growth() == [GPUS[1].name]
    assert fake.set_calls == [(GPUS[0].name, True), (GPUS[1].name, True)]
    assert "already initialised" in caplog.text and GPUS[0].name in caplog.text


def test_a_second_call_does_not_ask_again(fake_gpus):
    # Train, then evaluate in one process: the GPUs already grow, so nothing is set (or refused) twice.
    fake = fake_gpus(GPUS, growing={gpu.name for gpu in GPUS}, initialised={gpu.name for gpu in GPUS})
    assert devices.enable_memory_growth() == [gpu.name for gpu in GPUS]
    assert fake.set_calls == []


def test_on_this_cpu_machine_it_is_a_no_op():
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    assert devices.enable_memory_growth() == []


class Called(Exception):
    """Raised by the stand-in to prove it runs before anything else."""


def _raise_called():
    raise Called


def test_train_asks_for_memory_growth_before_anything_else(monkeypatch, tmp_path):
    from catsdogs.training import train
    from fake_runs import tiny_config

    monkeypatch.setattr("catsdogs.training.trainer.enable_memory_growth", _raise_called)
    with pytest.raises(Called):
        train(tiny_config(), tmp_path / "no-data", runs_dir=tmp_path / "runs", verbose=0)
    assert not (tmp_path / "runs").exists()
