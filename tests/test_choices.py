"""choices.py: the one owner of allowed values and defaults, and the config checks that use it."""

import pytest

from catsdogs import choices
from catsdogs.config import load_config
from catsdogs.errors import CatsdogsError


def test_defaults_come_from_the_documented_config_file():
    config = load_config()
    assert choices.DEFAULT_THRESHOLD == config.predict.threshold == 0.5
    assert choices.DEFAULT_BATCH_SIZE == config.predict.batch_size == 32
    assert choices.default("train.seed") == config.train.seed


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        ("data.split", choices.SPLIT_MODES),
        ("train.optimizer", choices.OPTIMIZERS),
        ("train.schedule", choices.SCHEDULES),
        ("train.feature_engine", choices.FEATURE_ENGINES),
        ("train.precision", choices.PRECISIONS),
    ],
)
def test_config_accepts_exactly_the_allowed_values(key, allowed):
    section, name = key.split(".")
    for value in allowed:
        assert getattr(getattr(load_config(overrides=[f"{key}={value}"]), section), name) == value
    with pytest.raises(CatsdogsError, match=f"one of {', '.join(allowed)}"):
        load_config(overrides=[f"{key}=no_such_value"])


@pytest.mark.parametrize("threshold", ["0", "1", "1.5"])
def test_predict_threshold_must_be_a_probability(threshold):
    with pytest.raises(CatsdogsError, match="predict.threshold"):
        load_config(overrides=[f"predict.threshold={threshold}"])


def test_the_implementations_check_against_the_same_tuples():
    from catsdogs.training.optimizers import build_optimizer

    with pytest.raises(CatsdogsError, match=", ".join(choices.OPTIMIZERS)):
        build_optimizer("nadam", learning_rate=0.001)
