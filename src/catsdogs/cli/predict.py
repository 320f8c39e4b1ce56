"""`catsdogs predict`: a label and probability per image, from a run folder, an export folder or the zero-shot model.

An export folder (made by `catsdogs export`) is predicted with
`runtime.OnnxPredictor` or `runtime.TflitePredictor`, as its format says, and
this path never imports TensorFlow: only the
formatting helpers of `inference.files` are imported besides the runtime.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from catsdogs.choices import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLD, OUTPUT_FORMATS, PREDICT_ENGINES
from catsdogs.cli.common import EXIT_FAILURES, EXIT_OK, add_engine_argument, add_test_time_augmentation_argument
from catsdogs.cli.predict_ray import ENGINE_HELP as RAY_ENGINE_HELP
from catsdogs.cli.predict_ray import add_ray_arguments, check_address, run_with_ray
from catsdogs.errors import CatsdogsError
from catsdogs.runs import is_run_dir

if TYPE_CHECKING:
    from catsdogs.runtime import ImagePredictor


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Add the `predict` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="Label image files, folders or globs with a trained run (or, without one, the zero-shot model).",
        description=(
            "Predict a label and probability for every image in PATH... (files, folders searched recursively, "
            "glob patterns). Images get the same normalisation as `prepare`. A file that cannot be read gets an "
            "error row; the exit status is 0 if every file succeeded and 1 otherwise. The first argument may also be "
            "an export folder made by `catsdogs export` (RUN/export/onnx, RUN/export/tflite-int8, ...), which "
            "predicts with ONNX Runtime or LiteRT and without TensorFlow. When the first argument is neither, every "
            "argument is an image and the zero-shot ImageNet model answers cats or dogs."
        ),
    )
    parser.add_argument(
        "run_dir",
        metavar="RUN|PATH",
        help=(
            "Run folder made by `catsdogs train`, or export folder made by `catsdogs export`; leave it out for the "
            "zero-shot model."
        ),
    )
    parser.add_argument("paths", metavar="PATH", nargs="*", help="Image files, folders or glob patterns.")
    add_test_time_augmentation_argument(parser)
    add_engine_argument(parser, choices=PREDICT_ENGINES, more_help=RAY_ENGINE_HELP)
    add_ray_arguments(parser)
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
    parser.add_argument(
        "--no-abstain",
        dest="abstain",
        action="store_false",
        help=(
            'Always answer the plain label, never "unsure" or "neither". By default a run or export evaluated '
            "with `catsdogs evaluate` answers unsure when its calibrated probability is below the threshold fitted "
            "on validation, and a run on an ImageNet EfficientNet-Lite (or the zero-shot model) answers neither "
            "when its ImageNet head sees no cat and no dog (docs/abstain.md)."
        ),
    )
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    """Predict every named image; return 1 if any of them failed, else 0."""
    # inference.files and runtime.predictions import no TensorFlow, so an export folder predicts without it.
    from catsdogs.inference.files import format_predictions, predict_files
    from catsdogs.runtime.answers import OFF_BY_REQUEST
    from catsdogs.runtime.predictions import check_threshold

    check_threshold(arguments.threshold)
    check_address(arguments)
    if arguments.engine == "ray":
        return run_with_ray(arguments)
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
    # Why an answer can never be "unsure" or "neither" here, off the output proper (docs/abstain.md).
    notes = (
        (getattr(predictor, "abstain_note", None), getattr(predictor, "neither_note", None))
        if arguments.abstain
        else (OFF_BY_REQUEST,)
    )
    for note in filter(None, notes):
        print(f"catsdogs predict: {note}", file=sys.stderr)
    runner = getattr(predictor, "runner", None)
    if runner is not None and getattr(predictor, "note", None) is None:
        # A run folder's model runs where `inference.engines` chose; say where and why, off the output proper.
        print(f"catsdogs predict: engine: {runner.engine} ({runner.choice.reason})", file=sys.stderr)
    print(
        f"catsdogs predict: {len(predictions)} inputs, {len(predictions) - failed} predicted, {failed} failed",
        file=sys.stderr,
    )
    return EXIT_FAILURES if failed else EXIT_OK


def load_predictor(arguments: argparse.Namespace) -> tuple[ImagePredictor, list[str]]:
    """Return (predictor, image paths): the run folder's or export folder's model, or the zero-shot model.

    Raises:
        CatsdogsError: for a run or export folder with no image after it, a folder with run files but no
            config.json, a partial export folder, or an export whose model fails its SHA-256 check.
    """
    from catsdogs.runtime.export_folder import is_export_dir

    # An export folder holds labels.json but no config.json, which `is_run_dir` reports as a broken run.
    if is_export_dir(arguments.run_dir):
        # The export's own format picks its predictor: OnnxPredictor or TflitePredictor.
        from catsdogs.runtime.export_folder import open_export_predictor

        _check_images_named(arguments, "export folder")
        _check_export_engine(arguments)
        predictor = open_export_predictor(
            arguments.run_dir,
            threshold=arguments.threshold,
            batch_size=arguments.batch_size,
            test_time_augmentation=arguments.test_time_augmentation,
            abstain=arguments.abstain,
        )
        if not predictor.verified:
            print(
                "catsdogs predict: warning: this export did not pass its check against the Keras model "
                "(export.json has verified false); its answers may differ from the run's.",
                file=sys.stderr,
            )
        return predictor, arguments.paths
    if is_run_dir(arguments.run_dir):
        from catsdogs.inference import Predictor

        _check_images_named(arguments, "run folder")
        predictor = Predictor.from_run_dir(
            arguments.run_dir,
            threshold=arguments.threshold,
            batch_size=arguments.batch_size,
            test_time_augmentation=arguments.test_time_augmentation,
            engine=arguments.engine,
            abstain=arguments.abstain,
        )
        return predictor, arguments.paths
    if arguments.engine == "onnxruntime":
        raise CatsdogsError(
            "The zero-shot model (used when the first argument is not a run or export folder) runs in Keras only, "
            "so --engine onnxruntime cannot apply. Pass a run folder made by `catsdogs train`, or use --engine "
            f"auto or keras. Received: engine=onnxruntime, first argument={arguments.run_dir}"
        )
    from catsdogs.inference.zero_shot import ZeroShotPredictor

    # No run folder: every argument is an image, and the pretrained ImageNet model answers.
    predictor = ZeroShotPredictor.load(
        threshold=arguments.threshold,
        batch_size=arguments.batch_size,
        test_time_augmentation=bool(arguments.test_time_augmentation),
        neither=arguments.abstain,
    )
    if arguments.output_format != "table" or arguments.output:
        print(f"catsdogs predict: {predictor.note}", file=sys.stderr)
    return predictor, [arguments.run_dir, *arguments.paths]


def _check_export_engine(arguments: argparse.Namespace) -> None:
    """Refuse an --engine that an export folder cannot honour: it holds no Keras model, and TFLite is not ONNX."""
    from catsdogs.runtime.export_folder import export_format

    format_name = export_format(arguments.run_dir)
    if arguments.engine == "keras" or (arguments.engine == "onnxruntime" and format_name != "onnx"):
        raise CatsdogsError(
            f"An export folder runs its own {format_name} model and holds no Keras model, so --engine "
            f"{arguments.engine} cannot apply to it. Pass the run folder itself for --engine keras, or leave "
            f"--engine at auto. Received: engine={arguments.engine}, path={arguments.run_dir}, format={format_name}"
        )


def _check_images_named(arguments: argparse.Namespace, what: str) -> None:
    if not arguments.paths:
        raise CatsdogsError(
            f"Name at least one image, folder or glob pattern after the {what}. Received: run_dir={arguments.run_dir}"
        )
