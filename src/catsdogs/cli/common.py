"""What every subcommand shares: exit statuses, the --config/--set arguments, --tta, number formatting."""

import argparse

from catsdogs.config import Config, load_config

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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


def format_number(value: float | None) -> str:
    """Four decimals, or "n/a" for a number that could not be computed."""
    return "n/a" if value is None else f"{value:.4f}"
