"""The allowed values of every choice, and the documented defaults: one owner for each.

`config` checks config files against these tuples; the modules that implement
a choice (prepare's split modes, the optimizers, the feature engines) check
their own arguments against the same tuples without reading a `Config`, so
`data`, `models` and `training` stay free of the config. Default values live
in `default_config.toml` alone; `default("predict.threshold")` reads one.
"""

import functools
import tomllib
from importlib import resources

SPLITS = ("train", "validation", "test")
EVALUATION_SPLITS = ("test", "validation")
SPLIT_MODES = ("numbers", "fraction", "all")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine", "one_cycle")
# `train.feature_engine`; "ray" computes the features on a Ray cluster (`training.ray_features`, docs/scaling.md).
FEATURE_ENGINES = ("auto", "onnxruntime", "keras", "ray")
# What runs a run folder's model in `predict`, `evaluate` and the report: see `inference.engines`.
INFERENCE_ENGINES = ("auto", "onnxruntime", "keras")
# `catsdogs predict --engine`: the inference engines, plus "ray" for a whole photo collection on a Ray cluster
# (`inference.ray_engine`), which writes a file rather than answering in this process.
PREDICT_ENGINES = (*INFERENCE_ENGINES, "ray")
PRECISIONS = ("float32", "mixed_bfloat16")
# `train.class_weight`: "balanced" weighs each class by total / (classes x its count), as scikit-learn does.
CLASS_WEIGHTS = ("none", "balanced")
# `train.distribute`: the tf.distribute strategy training runs under (docs/scaling.md).
DISTRIBUTE_STRATEGIES = ("none", "mirrored", "multi_worker")
OUTPUT_FORMATS = ("table", "csv", "json")
# `catsdogs export --format`; `export.BUILT_FORMATS` says which of them work today.
EXPORT_FORMATS = ("onnx", "saved_model", "tflite")
# `catsdogs export --quantize`: "none" keeps float32; int8 and float16 shrink the artifact (not for saved_model).
EXPORT_QUANTIZATIONS = ("none", "int8", "float16")
# Training photos that calibrate an int8 export, balanced over the classes. A few hundred photos pin the
# activation ranges well (ONNX Runtime and TFLite both suggest about that many), while calibration on a
# CPU stays a matter of seconds.
EXPORT_CALIBRATION_IMAGES = 256


def default_config_text() -> str:
    """Return the documented default config file, as shipped with the package."""
    return resources.files("catsdogs").joinpath("default_config.toml").read_text(encoding="utf-8")


@functools.cache
def _defaults():
    return tomllib.loads(default_config_text())


def default(key: str):
    """Return the documented default of one config key, e.g. `default("predict.batch_size")` -> 32."""
    section, name = key.split(".")
    return _defaults()[section][name]


DEFAULT_THRESHOLD = default("predict.threshold")
DEFAULT_BATCH_SIZE = default("predict.batch_size")
DEFAULT_ENGINE = default("predict.engine")
DEFAULT_MAX_PIXELS = default("data.max_pixels")
DEFAULT_MIN_SIDE = default("data.min_side")
