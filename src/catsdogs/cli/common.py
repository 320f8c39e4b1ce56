"""What every subcommand shares: exit statuses, the --config/--set arguments, --tta, --engine, number formatting,
and the message for a command whose optional dependencies are not installed."""

import argparse
import dataclasses

from catsdogs.choices import DEFAULT_ENGINE, INFERENCE_ENGINES
from catsdogs.config import Config, load_config

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@dataclasses.dataclass(frozen=True)
class OptionalStack:
    """One extra of pyproject.toml's [project.optional-dependencies], as the command line names it.

    Attributes:
        extra: the extra's name, as in `pip install 'catsdogs[train]'`.
        description: what the extra brings, for the message.
        modules: the top-level modules its packages install (the names `import` uses).
    """

    extra: str
    description: str
    modules: tuple[str, ...]


# The one list of what each extra brings, kept equal to pyproject.toml by tests/test_runtime_install.py.
# The base install (numpy, Pillow, ONNX Runtime) predicts with an export folder; everything else needs one of these.
TRAINING_STACK = OptionalStack(
    extra="train",
    description="the training stack (TensorFlow, Keras, scikit-learn, matplotlib and the export tools)",
    modules=("tensorflow", "keras", "sklearn", "matplotlib", "tqdm", "tf2onnx", "onnx", "ai_edge_litert"),
)
SERVICE_STACK = OptionalStack(
    extra="serve",
    description="the web service stack (FastAPI, Uvicorn, python-multipart, prometheus-client)",
    modules=("fastapi", "uvicorn", "multipart", "python_multipart", "prometheus_client"),
)
OPTIONAL_STACKS = (TRAINING_STACK, SERVICE_STACK)


def missing_stack_message(command: str, error: ModuleNotFoundError) -> str | None:
    """Say which extra to install when a command failed on a module one of the extras brings.

    Args:
        command: the subcommand that failed, e.g. "train".
        error: the ModuleNotFoundError it raised.

    Returns:
        The message, or None when the missing module belongs to no extra (a real bug, to be raised as is).
    """
    module = (error.name or "").partition(".")[0]
    for stack in OPTIONAL_STACKS:
        if module in stack.modules:
            return (
                f"`catsdogs {command}` needs {stack.description}, which is not installed; the base install "
                "predicts with an export folder only (catsdogs predict EXPORT_DIR PHOTOS...). "
                f"Install it with: pip install 'catsdogs[{stack.extra}]' (in a clone of the repository: "
                f"pip install -e '.[{stack.extra}]'). Received: missing module={module}"
            )
    return None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --config FILE and the repeatable --set SECTION.KEY=VALUE to a subcommand."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with the config keys to change (see `catsdogs config` for every key).",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="SECTION.KEY=VALUE",
        action="append",
        default=[],
        help="Change one config key, e.g. --set train.epochs=10; repeatable; wins over --config.",
    )


def resolve_config(arguments: argparse.Namespace) -> Config:
    """Return the resolved config of a subcommand that has `add_config_arguments`: defaults < --config < --set."""
    return load_config(arguments.config, arguments.overrides)


def add_test_time_augmentation_argument(parser: argparse.ArgumentParser) -> None:
    """Add --tta/--no-tta; None (not given) means the run's own model.test_time_augmentation."""
    parser.add_argument(
        "--tta",
        dest="test_time_augmentation",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Test-time augmentation: average each prediction over the image and its mirror image (twice the time). "
        "Default: the run's model.test_time_augmentation.",
    )


def add_engine_argument(
    parser: argparse.ArgumentParser, choices: tuple[str, ...] = INFERENCE_ENGINES, more_help: str = ""
) -> None:
    """Add --engine auto|onnxruntime|keras (or `choices`): what runs a run folder's model (`inference.engines`)."""
    parser.add_argument(
        "--engine",
        choices=choices,
        default=DEFAULT_ENGINE,
        help="What runs a run folder's model: auto (ONNX Runtime when it is installed and agrees with Keras: the "
        "run's verified export/onnx, else the model converted and checked on its first batch; Keras otherwise), "
        f"onnxruntime (fail rather than fall back) or keras{more_help}. Default: {DEFAULT_ENGINE}.",
    )


def format_number(value: float | None) -> str:
    """Four decimals, or "n/a" for a number that could not be computed."""
    return "n/a" if value is None else f"{value:.4f}"
