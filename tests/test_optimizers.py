import keras
import numpy as np
import pytest

from catsdogs.errors import CatsdogsError
from catsdogs.training.optimizers import (
    OPTIMIZERS,
    OneCycleSchedule,
    build_learning_rate,
    build_optimizer,
    current_learning_rate,
)


def test_one_cycle_rises_to_the_peak_then_anneals():
    schedule = OneCycleSchedule(maximal_learning_rate=0.01, total_steps=100)
    rates = np.array([float(schedule(step)) for step in range(101)])
    assert rates[0] == pytest.approx(0.01 / 25)
    assert rates.argmax() == 30 and rates.max() == pytest.approx(0.01)
    assert rates[-1] == pytest.approx(0.01 / 25 / 1e4, rel=1e-3)
    assert np.all(np.diff(rates[:31]) > 0) and np.all(np.diff(rates[30:]) < 0)


def test_one_cycle_survives_keras_serialisation():
    schedule = OneCycleSchedule(maximal_learning_rate=0.003, total_steps=40)
    # safe_mode=True loading resolves the class through its registered name, never through code.
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(restored, OneCycleSchedule) and restored.get_config() == schedule.get_config()


@pytest.mark.parametrize("schedule", ["constant", "cosine", "one_cycle"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_and_schedule_steps(name, schedule):
    learning_rate = build_learning_rate(schedule=schedule, learning_rate=0.01, total_steps=10)
    optimizer = build_optimizer(name, learning_rate=learning_rate, weight_decay=1e-4, momentum=0.9)
    variable = keras.Variable(np.ones(3, np.float32))
    optimizer.apply_gradients([(np.ones(3, np.float32), variable)])
    assert np.all(variable.numpy() < 1.0)
    assert 0 < current_learning_rate(optimizer) <= 0.01


def test_unknown_names_are_refused():
    with pytest.raises(CatsdogsError, match="Unknown optimizer"):
        build_optimizer("adagrad", learning_rate=0.1)
    with pytest.raises(CatsdogsError, match="Unknown learning-rate schedule"):
        build_learning_rate(schedule="step", learning_rate=0.1, total_steps=10)
