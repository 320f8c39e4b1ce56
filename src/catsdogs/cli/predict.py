"""`catsdogs predict`: a label and probability per image, from a run folder or the zero-shot model."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from catsdogs.choices import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLD, OUTPUT_FORMATS
from catsdogs.cli.common import EXIT_FAILURES, EXIT_OK, add_test_time_augmentation_argument
from catsdogs.errors import CatsdogsError
from catsdogs.runs import is_run_dir

if TYPE_CHECKING:
    from catsdogs.inference import Predictor


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Add the `predict` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="Label image files, folders or globs with a trained run (or, without one, the zero-shot model).",
        description=(
            "Predict a label and probability for every image in PATH... (files, folders searched recursively, "
            "glob patterns). Images get the same normalisation as `prepare`. A file that cannot be read gets an "
            "error row; the exit status is 0 if every file succeeded and 1 otherwise. When the first argument is "
            "not a run folder, every argument is an image and the zero-shot ImageNet model answers cats or dogs."
        ),
    )
    parser.add_argument(
        "run_dir", metavar="RUN|PATH", help="Run folder made by `catsdogs train`; leave it out for the zero-shot model."
    )
    parser.add_argument("paths", metavar="PATH", nargs="*", help="Image files, folders or glob patterns.")
    add_test_time_augmentation_argument(parser)
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        metavar="T",
        help=f"For two classes: predict the second class when its probability >= T. Default: {DEFAULT_THRESHOLD}.",
    )
    parser.add_argument(
        "--format",
        dest="output_format",
        choices=OUTPUT_FORMATS,
        default="table",
        help="Output format. Default: table.",
    )
    parser.add_argument("--output", metavar="FILE", help="Write the output to FILE instead of printing it.")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"Images per model call. Default: {DEFAULT_BATCH_SIZE}.",
    )
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    """Predict every named image; return 1 if any of them failed, else 0."""
    from catsdogs.inference import check_threshold, format_predictions, predict_files

    check_threshold(arguments.threshold)
    predictor, paths = load_predictor(arguments)
    if len(predictor.class_names) > 2 and arguments.threshold != DEFAULT_THRESHOLD:
        print(
            "catsdogs predict: note: --threshold applies to two-class models only; the most probable class wins.",
            file=sys.stderr,
        )
    predictions = predict_files(predictor, paths)
    text = format_predictions(predictions, output_format=arguments.output_format)
    if arguments.output_format == "table" and getattr(predictor, "note", None):
        text = f"# {predictor.note}\n{text}"
    if arguments.output:
        from catsdogs.fileio import atomic_write_text

        atomic_write_text(arguments.output, text)
    else:
        print(text, end="")
    failed = sum(not prediction.ok for prediction in predictions)
    print(
        f"catsdogs predict: {len(predictions)} inputs, {len(predictions) - failed} predicted, {failed} failed",
        file=sys.stderr,
    )
    return EXIT_FAILURES if failed else EXIT_OK


def load_predictor(arguments: argparse.Namespace) -> tuple[Predictor, list[str]]:
    """Return (predictor, image paths): the run folder's model, or the zero-shot model when RUN is an image.

    Raises:
        CatsdogsError: for a run folder with no image after it, or a folder with run files but no config.json.
    """
    from catsdogs.inference import Predictor

    if is_run_dir(arguments.run_dir):
        if not arguments.paths:
            raise CatsdogsError(
                "Name at least one image, folder or glob pattern after the run folder. Received: "
                f"run_dir={arguments.run_dir}"
            )
        predictor = Predictor.from_run_dir(
            arguments.run_dir,
            threshold=arguments.threshold,
            batch_size=arguments.batch_size,
            test_time_augmentation=arguments.test_time_augmentation,
        )
        return predictor, arguments.paths
    from catsdogs.inference.zero_shot import ZeroShotPredictor

    # No run folder: every argument is an image, and the pretrained ImageNet model answers.
    predictor = ZeroShotPredictor.load(
        threshold=arguments.threshold,
        batch_size=arguments.batch_size,
        test_time_augmentation=bool(arguments.test_time_augmentation),
    )
    if arguments.output_format != "table" or arguments.output:
        print(f"catsdogs predict: {predictor.note}", file=sys.stderr)
    return predictor, [arguments.run_dir, *arguments.paths]
