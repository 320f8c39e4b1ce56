"""`catsdogs train`: train a model on a prepared data folder, then evaluate it and write the report."""

import argparse
import logging
import sys
import textwrap

from catsdogs.cli.common import EXIT_OK, add_config_arguments, missing_stack_message, resolve_config


class _HelpWithModels(argparse.Action):
    """`-h` for `train`: list the model registry, imported only when help is asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            from catsdogs.models import available_models, model_entry

            models = "\n".join(f"  {name:<22} {model_entry(name).description}" for name in available_models())
        except ModuleNotFoundError as error:
            # Help still answers on the base install; the registry needs Keras, so it says what to install instead.
            message = missing_stack_message("train", error)
            if message is None:
                raise
            models = "  (listed once the training stack is installed)\n" + textwrap.fill(
                message, width=100, initial_indent="  ", subsequent_indent="  "
            )
        parser.epilog = "models:\n" + models + "\n\n" + (parser.epilog or "")
        parser.print_help()
        parser.exit()


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` subcommand."""
    parser = subparsers.add_parser(
        "train",
        add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="Train a model on a prepared data folder; writes a run folder.",
        description=(
            "Train model.name (or --model) on DATA/train, validating on DATA/validation, and write "
            "RUNS/<timestamp>-<model>/ with the best model, config, history, curves and test metrics."
        ),
        epilog=(
            "resuming:\n"
            "  A killed run resumes when the same command is run again: the newest unfinished run\n"
            "  in RUNS with the same resolved config and DATA continues from its last complete epoch.\n"
            "  With --name, that folder is resumed if unfinished. --fresh always starts a new run."
        ),
    )
    parser.add_argument(
        "-h", "--help", action=_HelpWithModels, help="Show this help, with the available models, and exit."
    )
    parser.add_argument(
        "data", metavar="DATA", help="Folder made by `catsdogs prepare` (train/, validation/, optional test/)."
    )
    parser.add_argument("--model", metavar="NAME", help="Model to train (sets model.name); see the list below.")
    parser.add_argument(
        "--out", metavar="RUNS", default="runs", help="Folder that receives run folders. Default: runs."
    )
    parser.add_argument(
        "--name", metavar="NAME", help="Run folder name instead of <timestamp>-<model>; resumes it if unfinished."
    )
    parser.add_argument("--fresh", action="store_true", help="Start a new run even if an unfinished one matches.")
    add_config_arguments(parser)
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    """Train, evaluate and report, with progress on stderr, then print where the results are."""
    if arguments.model:
        arguments.overrides = [*arguments.overrides, f"model.name={arguments.model}"]
    config = resolve_config(arguments)
    from catsdogs.models import model_entry

    model_entry(config.model.name)  # Fail on an unknown model before loading any data.
    from catsdogs.workflow import train_and_report

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("catsdogs train: %(message)s"))
    # INFO for the whole command, so the evaluation after training reports as training does.
    package_logger = logging.getLogger("catsdogs")
    previous_level = package_logger.level
    package_logger.setLevel(logging.INFO)
    package_logger.addHandler(handler)
    try:
        run_dir = train_and_report(
            config, arguments.data, runs_dir=arguments.out, run_name=arguments.name, resume=not arguments.fresh
        )
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous_level)
    if run_dir is None:
        print("worker done: this multi-worker process is not the chief, whose run folder holds the results")
        return EXIT_OK
    metrics = run_dir.read_metrics()
    print(f"run folder: {run_dir.path}")
    print(
        f"stopped:    {metrics.get('stop_reason')} after {metrics.get('epochs_done')} epochs (best epoch "
        f"{metrics.get('best_epoch')})"
    )
    for split in ("validation", "test"):
        if split in metrics:
            print(f"{split + ':':<11} accuracy {metrics[split]['accuracy']:.4f}, loss {metrics[split]['loss']:.4f}")
    print(f"curves:     {run_dir.history_figure_path}")
    if run_dir.report_path.exists():
        print(f"report:     {run_dir.report_path}")
    return EXIT_OK
