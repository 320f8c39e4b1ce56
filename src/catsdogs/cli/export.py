"""`catsdogs export`: an inference-only artifact of a run, verified against its Keras model."""

import argparse
import sys

from catsdogs.choices import DEFAULT_BATCH_SIZE, EXPORT_FORMATS
from catsdogs.cli.common import EXIT_FAILURES, EXIT_OK


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="Export a trained run's model for inference without Keras (ONNX), verified against Keras.",
        description=(
            "Write RUN/export/<format>/ (or --out DIR): the artifact with its SHA-256, labels.json, "
            "preprocessing.json and export.json. Every export is checked against the Keras model on the "
            "validation split of the run's data folder (or --data DIR): labels must agree on every image and "
            "probabilities within 1e-4. An export that misses is still written, marked unverified, and the exit "
            "status is 1."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN", help="Run folder made by `catsdogs train`.")
    parser.add_argument(
        "--format",
        dest="format_name",
        default="onnx",
        metavar="FORMAT",
        help=f"Export format, one of {', '.join(EXPORT_FORMATS)}; only onnx is built so far. Default: onnx.",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="Export folder to write (an earlier export there is replaced). Default: RUN/export/<format>/.",
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="Prepared folder whose validation split checks the export. Default: the run's own data folder.",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"Images per model call while checking. Default: {DEFAULT_BATCH_SIZE}.",
    )
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    """Export and verify; print the verification table; return 1 if the export missed its bounds, else 0."""
    from catsdogs.export import check_export_format

    # Check the format before TensorFlow loads, so a typo is answered at once.
    check_export_format(arguments.format_name)
    from catsdogs.export import export_run
    from catsdogs.export.verify import format_table

    result = export_run(
        arguments.run_dir,
        format_name=arguments.format_name,
        out_dir=arguments.out,
        data_dir=arguments.data,
        batch_size=arguments.batch_size,
    )
    print(format_table(result.record, export_path=result.export_dir.path), end="")
    if not result.verified:
        print(
            f"catsdogs export: the export was written but is NOT verified: {'; '.join(result.record['failures'])}",
            file=sys.stderr,
        )
        return EXIT_FAILURES
    return EXIT_OK
