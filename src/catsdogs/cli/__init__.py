"""The `catsdogs` command line: parse -> load config -> call one function -> print; no ML logic.

Each subcommand lives in its own module with two functions: `add_command`
declares its arguments, `run` reads the config at this edge, passes explicit
keyword arguments inward and prints the result. Heavy imports (TensorFlow)
happen inside the `run` that needs them, so `catsdogs --help` answers at once
and works on the base install (numpy, Pillow, ONNX Runtime), where a command
that needs the `train` or `serve` extra says which one to install.
"""

import argparse
import sys
from collections.abc import Sequence

from catsdogs import __version__
from catsdogs.cli import compare, config, evaluate, explain, export, predict, prepare, serve, train
from catsdogs.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, missing_stack_message
from catsdogs.cli.quiet import quiet_start_up, verbose_requested
from catsdogs.errors import CatsdogsError

_COMMANDS = [config, prepare, train, predict, evaluate, explain, compare, export, serve]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with the global options and every subcommand."""
    parser = argparse.ArgumentParser(
        prog="catsdogs",
        description="Turn a folder of photos into a working image classifier.",
    )
    parser.add_argument("--version", action="version", version=f"catsdogs {__version__}")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Show TensorFlow's start-up notices and library warnings, which are hidden by default.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status.

    Args:
        argv: the arguments after the program name; None reads `sys.argv`.

    Returns:
        0: everything succeeded; 1: the command ran but some inputs failed
        (e.g. unreadable files in `predict`); 2: bad usage or input, or an
        optional stack the command needs is not installed, with a message;
        130: interrupted.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    # Before parsing: `train --help` imports TensorFlow while the arguments are parsed.
    if not verbose_requested(argv):
        quiet_start_up()
    arguments = build_parser().parse_args(argv)
    try:
        return arguments.run(arguments)
    except CatsdogsError as error:
        print(f"catsdogs {arguments.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as error:
        # The base install lacks the `train` and `serve` extras: one message for every command that needs them.
        message = missing_stack_message(arguments.command, error)
        if message is None:
            raise
        print(f"catsdogs {arguments.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"catsdogs {arguments.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
