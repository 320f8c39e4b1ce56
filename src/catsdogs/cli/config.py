"""`catsdogs config`: print the documented defaults, or the resolved config as TOML."""

import argparse

from catsdogs.cli.common import EXIT_OK, add_config_arguments, resolve_config


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Add the `config` subcommand."""
    parser = subparsers.add_parser(
        "config",
        help="Print the resolved configuration (defaults < --config < --set) as TOML.",
        description="Print the documented default config, or the resolved config with --config/--set.",
    )
    add_config_arguments(parser)
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    """Print the documented default config file, or the config that --config/--set resolve to."""
    from catsdogs.config import config_to_toml, default_config_text

    config = resolve_config(arguments)
    if arguments.config is None and not arguments.overrides:
        print(default_config_text(), end="")
        return EXIT_OK
    print(config_to_toml(config), end="")
    return EXIT_OK
