"""`catsdogs compare`: runs side by side, as a printed table, a CSV file and overlaid validation curves."""

import argparse

from catsdogs.cli.common import EXIT_OK


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Add the `compare` subcommand."""
    parser = subparsers.add_parser(
        "compare",
        help="Compare runs: a table of model, size, epochs, time, test accuracy, F1, ROC-AUC, and their curves.",
        description=(
            "Print one row per RUN (model, parameters, epochs, training time, test accuracy with its 95% interval, "
            "macro F1, ROC-AUC) and write the table as CSV plus an overlay of the validation curves to --out."
        ),
    )
    parser.add_argument("run_dirs", metavar="RUN", nargs="+", help="Run folders made by `catsdogs train`.")
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="comparison",
        help="Folder for comparison.csv and validation_curves.png. Default: comparison.",
    )
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    """Compare the runs, write the CSV and the curves, and print the table and both paths."""
    from catsdogs.evaluation.compare import write_comparison

    comparison = write_comparison(arguments.run_dirs, arguments.out)
    print(comparison.table, end="")
    print(f"table:  {comparison.table_path}")
    print(f"curves: {comparison.curves_path}")
    return EXIT_OK
