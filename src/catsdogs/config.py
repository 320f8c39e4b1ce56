"""The configuration: one frozen dataclass per section, loaded from TOML and `--set` overrides.

The documented defaults live in one place, `default_config.toml` beside this
module; the dataclasses below only give each key its type and its checks.
Precedence is written once, in `load_config`: defaults < file < overrides.
"""

import dataclasses
import difflib
import re
import tomllib
import typing
from pathlib import Path

from catsdogs.choices import (
    CLASS_WEIGHTS,
    DISTRIBUTE_STRATEGIES,
    FEATURE_ENGINES,
    INFERENCE_ENGINES,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    SPLIT_MODES,
    default_config_text,
)
from catsdogs.errors import CatsdogsError


@dataclasses.dataclass(frozen=True)
class DataConfig:
    image_size: list[int]
    class_names: list[str]
    split: str
    train_per_class: int
    validation_per_class: int
    test_per_class: int
    validation_fraction: float
    test_fraction: float
    max_pixels: int
    min_side: int
    cache: bool


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    enabled: bool
    flip: bool
    rotation: float
    zoom: float
    translation: float
    contrast: float
    brightness: float


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str
    dropout_rate: float
    weights: str
    test_time_augmentation: bool


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    seed: int
    optimizer: str
    learning_rate: float
    schedule: str
    weight_decay: float
    momentum: float
    checkpoint: bool
    early_stopping: bool
    early_stopping_patience: int
    reduce_lr: bool
    reduce_lr_factor: float
    reduce_lr_patience: int
    min_learning_rate: float
    tensorboard: bool
    deterministic: bool
    precision: str
    feature_cache: bool
    feature_flip: bool
    feature_engine: str
    fine_tune_blocks: int
    fine_tune_epochs: int
    fine_tune_learning_rate: float
    class_weight: str
    distribute: str


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    threshold: float
    batch_size: int
    engine: str
    abstain_target_error: float


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    host: str
    port: int
    precision: str
    max_upload_mb: int
    max_files: int
    max_pixels: int
    max_batch_size: int
    batch_wait_ms: float
    queue_size: int
    queue_timeout_s: float
    max_in_flight: int
    inference_workers: int
    intra_op_threads: int
    decode_threads: int
    body_timeout_s: float
    header_timeout_s: float
    keep_alive_timeout_s: int
    drain_timeout_s: float
    cors_origin: str


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig
    augment: AugmentConfig
    model: ModelConfig
    train: TrainConfig
    predict: PredictConfig
    serve: ServeConfig

    def to_dict(self):
        """Return the config as nested plain dicts, ready for JSON or TOML."""
        return dataclasses.asdict(self)


SECTIONS = {field.name: field.type for field in dataclasses.fields(Config)}

# Checks beyond the type, by "section.key": (test, what is expected).
_VALUE_CHECKS = {
    "data.image_size": (lambda v: len(v) == 2 and all(n >= 8 for n in v), "two integers >= 8, e.g. [180, 180]"),
    "data.class_names": (lambda v: len(v) >= 2 and len(set(v)) == len(v), "at least two distinct names"),
    "data.split": (lambda v: v in SPLIT_MODES, f"one of {', '.join(SPLIT_MODES)}"),
    "data.train_per_class": (lambda v: v >= 1, "a positive integer"),
    "data.validation_per_class": (lambda v: v >= 1, "a positive integer"),
    "data.test_per_class": (lambda v: v >= 0, "zero or a positive integer"),
    "data.validation_fraction": (lambda v: 0 < v < 1, "a number between 0 and 1"),
    "data.test_fraction": (lambda v: 0 <= v < 1, "a number from 0 up to 1"),
    "data.max_pixels": (lambda v: v >= 1, "a positive integer"),
    "data.min_side": (lambda v: v >= 1, "a positive integer"),
    "augment.rotation": (lambda v: 0 <= v <= 0.5, "a fraction of a turn from 0 to 0.5"),
    "augment.zoom": (lambda v: 0 <= v < 1, "a fraction from 0 up to 1"),
    "augment.translation": (lambda v: 0 <= v < 1, "a fraction from 0 up to 1"),
    "augment.contrast": (lambda v: 0 <= v < 1, "a factor from 0 up to 1"),
    "augment.brightness": (lambda v: 0 <= v < 1, "a fraction from 0 up to 1"),
    "model.dropout_rate": (lambda v: 0 <= v < 1, "a rate from 0 up to 1"),
    "train.epochs": (lambda v: v >= 1, "a positive integer"),
    "train.batch_size": (lambda v: v >= 1, "a positive integer"),
    "train.optimizer": (lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    "train.learning_rate": (lambda v: v > 0, "a positive number"),
    "train.schedule": (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
    "train.weight_decay": (lambda v: v >= 0, "zero or a positive number"),
    "train.momentum": (lambda v: 0 <= v < 1, "a number from 0 up to 1"),
    "train.early_stopping_patience": (lambda v: v >= 1, "a positive integer"),
    "train.reduce_lr_factor": (lambda v: 0 < v < 1, "a number between 0 and 1"),
    "train.reduce_lr_patience": (lambda v: v >= 1, "a positive integer"),
    "train.min_learning_rate": (lambda v: v >= 0, "zero or a positive number"),
    "train.precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "train.feature_engine": (lambda v: v in FEATURE_ENGINES, f"one of {', '.join(FEATURE_ENGINES)}"),
    "train.fine_tune_blocks": (lambda v: v >= 0, "zero (off) or a positive number of blocks"),
    "train.fine_tune_epochs": (lambda v: v >= 1, "a positive integer"),
    "train.fine_tune_learning_rate": (lambda v: v > 0, "a positive number"),
    "train.class_weight": (lambda v: v in CLASS_WEIGHTS, f"one of {', '.join(CLASS_WEIGHTS)}"),
    "train.distribute": (lambda v: v in DISTRIBUTE_STRATEGIES, f"one of {', '.join(DISTRIBUTE_STRATEGIES)}"),
    "predict.threshold": (lambda v: 0 < v < 1, "a probability strictly between 0 and 1, e.g. 0.5"),
    "predict.batch_size": (lambda v: v >= 1, "a positive integer"),
    "predict.engine": (lambda v: v in INFERENCE_ENGINES, f"one of {', '.join(INFERENCE_ENGINES)}"),
    "predict.abstain_target_error": (lambda v: 0 < v < 1, "an error rate strictly between 0 and 1, e.g. 0.005"),
    "serve.host": (lambda v: bool(v.strip()), "an address to listen on, e.g. 127.0.0.1 or 0.0.0.0"),
    "serve.port": (lambda v: 0 <= v <= 65535, "a port number from 0 to 65535"),
    "serve.precision": (
        lambda v: re.fullmatch(r"[a-z0-9_]+", v) is not None,
        'an export precision in lower case, e.g. "float32", "float16" or "int8"',
    ),
    "serve.max_upload_mb": (lambda v: v >= 1, "a positive integer"),
    "serve.max_files": (lambda v: v >= 1, "a positive integer"),
    "serve.max_pixels": (lambda v: v >= 1, "a positive integer"),
    "serve.max_batch_size": (lambda v: v >= 1, "a positive integer (1 turns micro-batching off)"),
    "serve.batch_wait_ms": (lambda v: 0 <= v <= 1000, "milliseconds from 0 to 1000"),
    "serve.queue_size": (lambda v: v >= 1, "a positive integer"),
    "serve.queue_timeout_s": (lambda v: v > 0, "a positive number of seconds"),
    "serve.max_in_flight": (lambda v: v >= 1, "a positive integer"),
    "serve.inference_workers": (lambda v: 0 <= v <= 64, "0 (one per core) or a number of workers up to 64"),
    "serve.intra_op_threads": (lambda v: 0 <= v <= 256, "0 (share the cores) or a number of threads up to 256"),
    "serve.decode_threads": (lambda v: 0 <= v <= 256, "0 (one per core) or a number of threads up to 256"),
    "serve.body_timeout_s": (lambda v: v > 0, "a positive number of seconds"),
    "serve.header_timeout_s": (lambda v: v > 0, "a positive number of seconds"),
    "serve.keep_alive_timeout_s": (lambda v: v >= 1, "a positive number of seconds"),
    "serve.drain_timeout_s": (lambda v: v >= 0, "zero or a positive number of seconds"),
    "serve.cors_origin": (
        lambda v: v == "" or re.fullmatch(r"https?://[^/\s]+", v) is not None,
        'empty (CORS off) or one origin: scheme and host without a path, e.g. "https://photos.example.com"',
    ),
}


def load_config(path=None, overrides=()):
    """Load the configuration: built-in defaults < the file at `path` < `overrides`.

    Args:
        path: optional TOML file holding the keys to change.
        overrides: strings `section.key=value`; the value is read as a TOML
            value (`[224, 224]`, `0.5`, `true`) or else as a plain string.

    Returns:
        A frozen `Config`.

    Raises:
        CatsdogsError: for a missing or unreadable file, an unknown section or
            key (with a did-you-mean suggestion) or a value of the wrong type.
    """
    values = tomllib.loads(default_config_text())
    if path is not None:
        _merge(values, _read_toml_file(path), origin=str(path))
    for override in overrides:
        section, key, value = _parse_override(override)
        _merge(values, {section: {key: value}}, origin="--set")
    return _build(values)


def config_to_toml(config):
    """Return a `Config` as a TOML document, one table per section (what `catsdogs config` prints)."""
    lines = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines) + "\n"


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return repr(value)


def config_from_dict(values):
    """Rebuild a `Config` from `Config.to_dict()` output, e.g. a run folder's config.json.

    Keys missing from `values` take their defaults, so older run folders still load.
    """
    merged = tomllib.loads(default_config_text())
    _merge(merged, values, origin="config.json")
    return _build(merged)


def _read_toml_file(path):
    path = Path(path)
    if not path.is_file():
        raise CatsdogsError(
            f"The config file does not exist. Expected a TOML file; pass an existing path "
            f"to --config. Received: path={path}"
        )
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CatsdogsError(
            f"The config file is not valid TOML ({error}). Fix the line it names. Received: path={path}"
        ) from None


def _parse_override(override):
    name, separator, raw_value = override.partition("=")
    if not separator or name.count(".") != 1:
        raise CatsdogsError(
            f"An override must look like section.key=value, e.g. train.epochs=10. Received: --set {override}"
        )
    section, key = name.strip().split(".")
    raw_value = raw_value.strip()
    try:
        value = tomllib.loads(f"value = {raw_value}")["value"]
    except tomllib.TOMLDecodeError:
        # A bare word such as seed_cnn_bn is a string; quoting it is optional.
        value = raw_value
    return section, key, value


def _suggest(name, candidates):
    matches = difflib.get_close_matches(name, candidates, n=1)
    return f" Did you mean '{matches[0]}'?" if matches else ""


def _merge(values, changes, origin):
    for section, section_changes in changes.items():
        if section not in SECTIONS:
            raise CatsdogsError(
                f"Unknown config section '{section}' in {origin}.{_suggest(section, SECTIONS)} "
                f"Valid sections: {', '.join(SECTIONS)}. Received: section={section}"
            )
        if not isinstance(section_changes, dict):
            raise CatsdogsError(
                f"Config section '{section}' in {origin} must be a table of keys. "
                f"Received: {section}={section_changes!r}"
            )
        known_keys = values[section]
        for key, value in section_changes.items():
            if key not in known_keys:
                raise CatsdogsError(
                    f"Unknown config key '{section}.{key}' in {origin}.{_suggest(key, known_keys)} "
                    f"Valid keys in [{section}]: {', '.join(known_keys)}. Received: {section}.{key}={value!r}"
                )
            known_keys[key] = value


def _build(values):
    sections = {}
    for section, section_class in SECTIONS.items():
        fields = {}
        for field in dataclasses.fields(section_class):
            name = f"{section}.{field.name}"
            fields[field.name] = _check_value(name, field.type, values[section][field.name])
        sections[section] = section_class(**fields)
    return Config(**sections)


def _type_name(expected_type):
    return (
        getattr(expected_type, "__name__", str(expected_type))
        if typing.get_origin(expected_type) is None
        else str(expected_type)
    )


def _check_value(name, expected_type, value):
    def wrong():
        return CatsdogsError(
            f"Config key '{name}' expects a value of type {_type_name(expected_type)}. Received: {name}={value!r}"
        )

    if typing.get_origin(expected_type) is list:
        (item_type,) = typing.get_args(expected_type)
        if not isinstance(value, list):
            raise wrong()
        value = [_check_scalar(item, item_type, wrong) for item in value]
    else:
        value = _check_scalar(value, expected_type, wrong)
    check = _VALUE_CHECKS.get(name)
    if check is not None and not check[0](value):
        raise CatsdogsError(f"Config key '{name}' expects {check[1]}. Received: {name}={value!r}")
    return value


def _check_scalar(value, expected_type, wrong):
    # bool is a subclass of int in Python; a flag is never a count.
    if isinstance(value, bool) != (expected_type is bool):
        raise wrong()
    if expected_type is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, expected_type):
        raise wrong()
    return value
