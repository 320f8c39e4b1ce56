import re
import tomllib
from pathlib import Path

import pytest

from catsdogs.config import Config, config_from_dict, config_to_toml, default_config_text, load_config
from catsdogs.errors import CatsdogsError
from catsdogs.models import available_models


def test_defaults_are_the_seed_config():
    config = load_config()
    assert config.data.image_size == [180, 180]
    assert config.data.class_names == ["cats", "dogs"]
    assert (config.data.train_per_class, config.data.validation_per_class, config.data.test_per_class) == (
        1000,
        500,
        500,
    )
    assert (config.train.batch_size, config.train.epochs, config.train.seed) == (16, 50, 42)
    assert config.train.optimizer == "adam"


def test_file_overrides_defaults_and_set_overrides_file(tmp_path):
    config_file = tmp_path / "my.toml"
    config_file.write_text("[train]\nepochs = 7\nbatch_size = 32\n")
    config = load_config(config_file, ["train.epochs=3"])
    assert config.train.epochs == 3  # --set wins over the file
    assert config.train.batch_size == 32  # the file wins over the defaults
    assert config.train.seed == 42  # untouched keys keep their defaults


def test_set_values_are_parsed_as_toml_or_bare_strings():
    config = load_config(
        overrides=[
            "data.image_size=[224, 224]",
            "model.name=seed_cnn_bn",
            "train.learning_rate=1",
            "augment.flip=false",
        ]
    )
    assert config.data.image_size == [224, 224]
    assert config.model.name == "seed_cnn_bn"
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert config.augment.flip is False


def test_set_never_evaluates_python():
    config = load_config(overrides=["model.name=__import__('os').getcwd()"])
    assert config.model.name == "__import__('os').getcwd()"


def test_unknown_key_suggests_the_closest():
    with pytest.raises(CatsdogsError, match=r"Did you mean 'epochs'\?.*Received: train\.epoch=5"):
        load_config(overrides=["train.epoch=5"])


def test_unknown_section_suggests_the_closest(tmp_path):
    config_file = tmp_path / "bad.toml"
    config_file.write_text("[trian]\nepochs = 1\n")
    with pytest.raises(CatsdogsError, match=r"Did you mean 'train'\?"):
        load_config(config_file)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epochs=ten", "type int"),
        ("train.epochs=true", "type int"),
        ("augment.flip=1", "type bool"),
        ("train.optimizer=adagrad", "one of adam, adamw, rmsprop, sgd"),
        ("train.epochs=0", "a positive integer"),
        ("data.image_size=[180]", "two integers"),
        ("data.class_names=['cats', 'cats']", "distinct"),
    ],
)
def test_bad_values_say_what_was_expected_and_end_with_received(override, expected):
    with pytest.raises(CatsdogsError) as error:
        load_config(overrides=[override])
    message = str(error.value)
    assert expected in message
    key = override.split("=")[0]
    assert re.search(rf"Received: {re.escape(key)}=", message)


def test_malformed_override_and_missing_file_are_clear(tmp_path):
    with pytest.raises(CatsdogsError, match="section.key=value"):
        load_config(overrides=["epochs=3"])
    with pytest.raises(CatsdogsError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    with pytest.raises(CatsdogsError, match="not valid TOML"):
        load_config(broken)


def test_every_default_key_is_documented_with_a_type():
    lines = default_config_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^\w+ = ", line):
            # The comment block right above the key starts with its type.
            start = index
            while start > 0 and lines[start - 1].startswith("# "):
                start -= 1
            comment = lines[start] if start < index else ""
            assert re.match(r"^# (int|float|bool|str|list\[[^\]]+\]): ", comment), f"undocumented key: {line}"
    # Every dataclass field appears in the documented file, and nothing else does.
    documented = {line.split(" = ")[0] for line in lines if re.match(r"^\w+ = ", line)}
    fields = {key for section in load_config().to_dict().values() for key in section}
    assert documented == fields


def test_toml_output_reads_back_as_the_same_config():
    # Quotes, backslashes, lists, booleans and floats must survive, in every section including [predict].
    config = load_config(
        overrides=[
            'data.class_names=["cats \\"tabby\\"", "dogs\\\\pups", "birds"]',
            "augment.flip=false",
            "predict.threshold=0.7",
            "train.learning_rate=1e-05",
        ]
    )
    assert config.data.class_names[:2] == ['cats "tabby"', "dogs\\pups"]
    assert config_from_dict(tomllib.loads(config_to_toml(config))) == config
    assert tomllib.loads(config_to_toml(config))["predict"]["threshold"] == 0.7


def test_round_trip_through_a_dict():
    config = load_config(overrides=["train.epochs=3"])
    assert config_from_dict(config.to_dict()) == config
    assert isinstance(config, Config)


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml")), ids=lambda p: p.name
)
def test_shipped_config_files_load(path):
    # A misspelt key or a bad value in a shipped recipe would only surface when a user runs it.
    config = load_config(path, [])
    assert config.model.name in available_models()
