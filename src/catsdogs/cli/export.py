"""`catsdogs export`: an inference-only artifact of a run, verified against its Keras model."""

import argparse
import sys

from catsdogs.choices import DEFAULT_BATCH_SIZE, EXPORT_FORMATS, EXPORT_QUANTIZATIONS
from catsdogs.cli.common import EXIT_FAILURES, EXIT_OK


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="Export a trained run's model (ONNX, SavedModel or TFLite, float32 or quantized), verified against Keras.",
        description=(
            "Write RUN/export/<format>/, or RUN/export/<format>-<quantize>/ when quantized (or --out DIR): the "
            "artifact with its SHA-256, labels.json, preprocessing.json and export.json. Every export is checked "
            "against the Keras model on the run's data folder (or --data DIR). A float32 export must agree on "
            "every validation label, with probabilities within 1e-4; an int8 or float16 export may lose at most "
            "0.3 points of test accuracy (validation accuracy without a test split). int8 is calibrated on a "
            "class-balanced sample of training photos. An export that misses is still written, marked "
            "unverified, and the exit status is 1."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN", help="Run folder made by `catsdogs train`.")
    parser.add_argument(
        "--format",
        dest="format_name",
        default="onnx",
        metavar="FORMAT",
        help=(
            f"Export format, one of {', '.join(EXPORT_FORMATS)}. TFLite files hold builtin ops only (a model "
            "that needs TensorFlow select ops is refused, naming them). Default: onnx."
        ),
    )
    parser.add_argument(
        "--quantize",
        default="none",
        metavar="Q",
        help=(
            f"Precision, one of {', '.join(EXPORT_QUANTIZATIONS)}: none keeps float32; int8 (onnx: static QDQ "
            "per-channel; tflite: int8 with float32 input and output) and float16 shrink the artifact. "
            "saved_model stays float32. Default: none."
        ),
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help=(
            "Export folder to write (an earlier export there is replaced). Default: RUN/export/<format>/, or "
            "RUN/export/<format>-<quantize>/ when quantized."
        ),
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        help=(
            "Prepared folder whose validation and test splits check the export (its train split calibrates int8). "
            "Default: the run's own data folder."
        ),
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
    from catsdogs.export import check_export_format, check_quantize

    # Check the format and precision before TensorFlow loads, so a typo is answered at once.
    check_export_format(arguments.format_name)
    check_quantize(arguments.quantize, arguments.format_name)
    from catsdogs.export import export_run
    from catsdogs.export.table import format_table

    result = export_run(
        arguments.run_dir,
        format_name=arguments.format_name,
        quantize=arguments.quantize,
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
