"""`catsdogs predict MODEL PHOTOS... --engine ray [--address ADDR] --output FILE.parquet`: the Ray side of `predict`.

`cli.predict` owns the command; this module adds its `--address` option and runs `--engine ray`, which labels
the photos on a Ray cluster (`inference.ray_engine`) and writes one row per photo to a Parquet or CSV file
instead of printing them. Ray is imported only when `--engine ray` runs, so `predict` keeps working on the
base install.
"""

import argparse
import sys

from catsdogs.cli.common import EXIT_FAILURES, EXIT_OK
from catsdogs.errors import CatsdogsError

ENGINE_HELP = (
    "; ray labels a whole photo collection with Ray Data on a Ray cluster (--address, or a local one) and writes "
    "one row per photo to --output FILE.parquet or FILE.csv (needs pip install 'catsdogs[scale]'; "
    "docs/scaling.md)"
)


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --address ADDR, the Ray cluster that `--engine ray` joins."""
    parser.add_argument(
        "--address",
        metavar="ADDR",
        help="With --engine ray: the Ray cluster to join (HOST:6379 as `ray start --head` prints it, auto, or "
        "ray://HOST:10001). Default: the RAY_ADDRESS environment variable, else a local cluster with this "
        "machine's CPUs.",
    )


def check_address(arguments: argparse.Namespace) -> None:
    """Refuse --address without --engine ray, where it would be silently ignored.

    Raises:
        CatsdogsError: when --address is given with another engine.
    """
    if arguments.address is not None and arguments.engine != "ray":
        raise CatsdogsError(
            "--address applies to --engine ray only: it names the Ray cluster that labels the photos. Add "
            f"--engine ray, or leave --address out. Received: engine={arguments.engine}, address={arguments.address}"
        )


def run_with_ray(arguments: argparse.Namespace) -> int:
    """Label every named photo on a Ray cluster into --output; return 1 if any photo failed, else 0.

    Raises:
        CatsdogsError: for a missing or wrong --output, no photo named, a model Ray cannot run, Ray not
            installed, or a cluster that cannot be reached.
    """
    from catsdogs.inference.ray_engine import WHAT, open_ray_model, output_format, predict_with_ray
    from catsdogs.runtime.ray_workers import import_ray

    output_format(arguments.output)
    # Before the model is read (a run folder may be converted to ONNX first): a missing Ray fails at once.
    import_ray(WHAT)
    if not arguments.paths:
        raise CatsdogsError(
            "Name at least one photo, folder, glob pattern or URI after the run or export folder. "
            f"Received: run_dir={arguments.run_dir}"
        )
    if arguments.output_format != "table":
        print(
            "catsdogs predict: note: with --engine ray the --output file's extension (.parquet or .csv) sets the "
            "format; --format is ignored.",
            file=sys.stderr,
        )
    model = open_ray_model(
        arguments.run_dir,
        threshold=arguments.threshold,
        batch_size=arguments.batch_size,
        test_time_augmentation=arguments.test_time_augmentation,
    )
    if not model.verified:
        print(
            "catsdogs predict: warning: this export did not pass its check against the Keras model "
            "(export.json has verified false); its answers may differ from the run's.",
            file=sys.stderr,
        )
    summary = predict_with_ray(
        model,
        arguments.paths,
        output=arguments.output,
        address=arguments.address,
        progress=bool(getattr(arguments, "verbose", False)),
    )
    print(f"catsdogs predict: engine: ray, {summary.actors} actor(s); model: {summary.model}", file=sys.stderr)
    print(
        f"catsdogs predict: {summary.inputs} inputs, {summary.predicted} predicted, {summary.failed} failed; "
        f"wrote {summary.output} in {summary.seconds:.1f} s (cluster start {summary.start_seconds:.1f} s)",
        file=sys.stderr,
    )
    return EXIT_FAILURES if summary.failed else EXIT_OK
