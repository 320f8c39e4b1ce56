"""The `catsdogs` command line: argument parsing and printing only, no ML logic.

Every subcommand reads the config at this edge and passes explicit keyword
arguments inward. Heavy imports (TensorFlow) happen inside the command that
needs them, so `catsdogs --help` answers at once.
"""

import argparse
import os
import sys

# TensorFlow's C++ start-up chatter (oneDNN, CPU feature notices) buries the output users need.
# Set before TensorFlow is first imported; a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from catsdogs import __version__
from catsdogs.choices import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLD, OUTPUT_FORMATS
from catsdogs.errors import CatsdogsError

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2


def _add_config_arguments(parser):
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


def _load_config(arguments):
    from catsdogs.config import load_config

    return load_config(arguments.config, arguments.overrides)


# ----------------------------------------------------------------------------- config


def _add_config_command(subparsers):
    parser = subparsers.add_parser(
        "config",
        help="Print the resolved configuration (defaults < --config < --set) as TOML.",
        description="Print the documented default config, or the resolved config with --config/--set.",
    )
    _add_config_arguments(parser)
    parser.set_defaults(run=_run_config)


def _run_config(arguments):
    from catsdogs.config import config_to_toml, default_config_text

    config = _load_config(arguments)
    if arguments.config is None and not arguments.overrides:
        print(default_config_text(), end="")
        return EXIT_OK
    print(config_to_toml(config), end="")
    return EXIT_OK


# ----------------------------------------------------------------------------- prepare


def _add_prepare_command(subparsers):
    parser = subparsers.add_parser(
        "prepare",
        help="Check every photo and copy them into train/validation/test class folders.",
        description=(
            "Read SOURCE (Kaggle's flat train/ folder with cat.12.jpg-style names, a tree of class "
            "folders, or a .zip of either), fully decode every image, quarantine bad files with a "
            "reason, keep exact duplicates in one split, and write DATA/{train,validation,test}/<class>/ "
            "plus DATA/manifest.json. SOURCE is never changed."
        ),
    )
    parser.add_argument("source", metavar="SOURCE", help="Folder or .zip of photos.")
    parser.add_argument("--out", metavar="DATA", required=True, help="Folder that receives the split.")
    parser.add_argument(
        "--split",
        choices=["numbers", "fraction", "all"],
        help="numbers: by Kaggle file number (the seed's split); fraction: seeded stratified shuffle "
        "using --val-fraction/--test-fraction of the counted images; all: every usable image, split by "
        "fraction. Default: data.split.",
    )
    parser.add_argument(
        "--train", type=int, metavar="N", help="Train images per class (numbers split). Default: data.train_per_class."
    )
    parser.add_argument(
        "--val",
        type=int,
        metavar="N",
        help="Validation images per class (numbers split). Default: data.validation_per_class.",
    )
    parser.add_argument(
        "--test", type=int, metavar="N", help="Test images per class (numbers split). Default: data.test_per_class."
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        metavar="F",
        help="Validation share per class (fraction/all). Default: data.validation_fraction.",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        metavar="F",
        help="Test share per class (fraction/all). Default: data.test_fraction.",
    )
    parser.add_argument("--seed", type=int, help="Seed for the fraction split. Default: train.seed.")
    parser.add_argument("--overwrite", action="store_true", help="Replace a different earlier split in DATA.")
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    _add_config_arguments(parser)
    parser.set_defaults(run=_run_prepare)


def _run_prepare(arguments):
    from catsdogs.data.prepare import prepare_dataset

    config = _load_config(arguments)

    def pick(value, default):
        return default if value is None else value

    report = prepare_dataset(
        arguments.source,
        arguments.out,
        class_names=config.data.class_names,
        split=pick(arguments.split, config.data.split),
        train_per_class=pick(arguments.train, config.data.train_per_class),
        validation_per_class=pick(arguments.val, config.data.validation_per_class),
        test_per_class=pick(arguments.test, config.data.test_per_class),
        validation_fraction=pick(arguments.val_fraction, config.data.validation_fraction),
        test_fraction=pick(arguments.test_fraction, config.data.test_fraction),
        seed=pick(arguments.seed, config.train.seed),
        max_pixels=config.data.max_pixels,
        min_side=config.data.min_side,
        overwrite=arguments.overwrite,
        progress=not arguments.no_progress,
    )
    print(report.summary())
    return EXIT_OK


# ----------------------------------------------------------------------------- train


class _HelpWithModels(argparse.Action):
    """`-h` for `train`: list the model registry, imported only when help is asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from catsdogs.models import available_models, model_entry

        lines = [f"  {name:<22} {model_entry(name).description}" for name in available_models()]
        parser.epilog = "models:\n" + "\n".join(lines) + "\n\n" + (parser.epilog or "")
        parser.print_help()
        parser.exit()


def _add_train_command(subparsers):
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
    _add_config_arguments(parser)
    parser.set_defaults(run=_run_train)


def _run_train(arguments):
    import logging

    if arguments.model:
        arguments.overrides = [*arguments.overrides, f"model.name={arguments.model}"]
    config = _load_config(arguments)
    from catsdogs.models import model_entry

    model_entry(config.model.name)  # Fail on an unknown model before loading any data.
    from catsdogs.workflow import train_and_report

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("catsdogs train: %(message)s"))
    logging.getLogger("catsdogs").addHandler(handler)
    try:
        run_dir = train_and_report(
            config, arguments.data, runs_dir=arguments.out, run_name=arguments.name, resume=not arguments.fresh
        )
    finally:
        logging.getLogger("catsdogs").removeHandler(handler)
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


# ----------------------------------------------------------------------------- predict


def _add_predict_command(subparsers):
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
    _add_test_time_augmentation_argument(parser)
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
    parser.set_defaults(run=_run_predict)


def _run_predict(arguments):
    from catsdogs.inference import Predictor, check_threshold, format_predictions, predict_files

    check_threshold(arguments.threshold)
    if _is_run_dir(arguments.run_dir):
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
    else:
        from catsdogs.inference.zero_shot import ZeroShotPredictor

        # No run folder: every argument is an image, and the pretrained ImageNet model answers.
        arguments.paths = [arguments.run_dir, *arguments.paths]
        predictor = ZeroShotPredictor.load(
            threshold=arguments.threshold,
            batch_size=arguments.batch_size,
            test_time_augmentation=bool(arguments.test_time_augmentation),
        )
        if arguments.output_format != "table" or arguments.output:
            print(f"catsdogs predict: {predictor.note}", file=sys.stderr)
    if len(predictor.class_names) > 2 and arguments.threshold != DEFAULT_THRESHOLD:
        print(
            "catsdogs predict: note: --threshold applies to two-class models only; the most probable class wins.",
            file=sys.stderr,
        )
    predictions = predict_files(predictor, arguments.paths)
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


def _add_test_time_augmentation_argument(parser):
    parser.add_argument(
        "--tta",
        dest="test_time_augmentation",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Test-time augmentation: average each prediction over the image and its mirror image (twice the time). "
        "Default: the run's model.test_time_augmentation.",
    )


def _is_run_dir(path):
    """Whether `path` is a run folder; a folder with run files but no config.json is refused, not taken for photos."""
    from pathlib import Path

    from catsdogs.runs import CONFIG_FILE, LABELS_FILE, MODEL_FILE, RUN_FILE, RunDir

    folder = Path(path)
    if not folder.is_dir():
        return False
    if (folder / CONFIG_FILE).is_file():
        return True
    if any((folder / name).exists() for name in (MODEL_FILE, RUN_FILE, LABELS_FILE)):
        RunDir.open(folder)  # Raises the "not a run folder" error, naming what is missing.
    return False


# ----------------------------------------------------------------------------- evaluate


def _add_evaluate_command(subparsers):
    parser = subparsers.add_parser(
        "evaluate",
        help="Measure a trained run: metrics with intervals, thresholds, figures and report.html.",
        description=(
            "Predict the test (or validation) split of the run's data folder, or of --data DIR, and write "
            "accuracy with its 95% interval, precision/recall/F1, ROC-AUC, PR-AUC, log loss, Brier score and "
            "the confusion matrix into metrics.json; thresholds are chosen on validation (best F1, Youden's J) "
            "and applied unchanged. Figures go to RUN/figures/, and RUN/report.html is rewritten."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN", help="Run folder made by `catsdogs train`.")
    parser.add_argument(
        "--split", choices=["test", "validation"], default="test", help="Split to evaluate. Default: test."
    )
    parser.add_argument(
        "--data", metavar="DIR", help="Another prepared folder with the same class names. Default: the run's own data."
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        metavar="T",
        help=f"Configured threshold on the second class's probability (two classes). Default: {DEFAULT_THRESHOLD}.",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"Images per model call. Default: {DEFAULT_BATCH_SIZE}.",
    )
    _add_test_time_augmentation_argument(parser)
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(arguments):
    from catsdogs.evaluation.evaluate import evaluate_run
    from catsdogs.inference import check_threshold

    result = evaluate_run(
        arguments.run_dir,
        split=arguments.split,
        data_dir=arguments.data,
        decision_threshold=check_threshold(arguments.threshold),
        batch_size=arguments.batch_size,
        test_time_augmentation=arguments.test_time_augmentation,
    )
    metrics = result.metrics
    decided = metrics["at_decision_threshold"]
    interval = decided["accuracy_interval"]
    tta = (
        " (test-time augmentation: each image averaged with its mirror image)"
        if metrics.get("test_time_augmentation")
        else ""
    )
    print(f"evaluated:  {metrics['split']} split, {metrics['num_examples']} images of {metrics['data_dir']}{tta}")
    print(f"accuracy:   {decided['accuracy']:.4f} (95% interval {interval['low']:.4f} to {interval['high']:.4f})")
    print(
        f"macro F1:   {decided['macro_avg']['f1']:.4f}   ROC-AUC: {_format_number(metrics.get('roc_auc'))}   "
        f"PR-AUC: {_format_number(metrics.get('pr_auc'))}"
    )
    print(f"log loss:   {metrics['log_loss']:.4f}   Brier: {metrics['brier']:.4f}")
    for name, label in (("best_f1", "best F1"), ("youden_j", "Youden's J")):
        chosen = metrics.get("selected_thresholds", {}).get(name)
        if chosen:
            print(
                f"{label + ':':<11} threshold {chosen['threshold']:.3f} (chosen on validation): accuracy "
                f"{chosen['accuracy']:.4f}, macro F1 {chosen['macro_avg']['f1']:.4f}"
            )
    if metrics["unreadable"]:
        print(f"unreadable: {len(metrics['unreadable'])} images left out (listed in metrics.json)")
    print(f"figures:    {result.run_dir.figures_dir}")
    print(f"report:     {result.report_path}")
    return EXIT_OK


def _format_number(value):
    return "n/a" if value is None else f"{value:.4f}"


# ----------------------------------------------------------------------------- explain


def _add_explain_command(subparsers):
    parser = subparsers.add_parser(
        "explain",
        help="Grad-CAM overlays and feature-map grids showing where a trained run looks.",
        description=(
            "For each IMAGE, write a Grad-CAM overlay (the photo next to its heatmap, labelled with the prediction) "
            "and a grid of feature maps per chosen convolutional layer. Grad-CAM uses the last convolutional layer "
            "unless --layer names another; nested backbones are supported."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN", help="Run folder made by `catsdogs train`.")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="Photos to explain.")
    parser.add_argument(
        "--layer",
        metavar="NAME",
        help="Layer Grad-CAM explains (name, or backbone/name). Default: the last convolutional layer.",
    )
    parser.add_argument(
        "--feature-layer",
        dest="feature_layers",
        metavar="NAME",
        action="append",
        help="Layer whose feature maps to draw; repeatable. Default: up to 6 convolutional layers, first to last.",
    )
    parser.add_argument("--no-feature-maps", action="store_true", help="Write only the Grad-CAM overlays.")
    parser.add_argument("--out", metavar="DIR", help="Folder for the PNGs. Default: RUN/figures/explain.")
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        metavar="T",
        help=f"Decision threshold on the second class's probability (two classes). Default: {DEFAULT_THRESHOLD}.",
    )
    parser.set_defaults(run=_run_explain)


def _run_explain(arguments):
    from catsdogs.explain import explain_images
    from catsdogs.inference import check_threshold

    explanations = explain_images(
        arguments.run_dir,
        arguments.images,
        layer=arguments.layer,
        out_dir=arguments.out,
        feature_layers=arguments.feature_layers,
        feature_maps=not arguments.no_feature_maps,
        threshold=check_threshold(arguments.threshold),
    )
    for explanation in explanations:
        if explanation.error:
            print(f"{explanation.source}: ERROR {explanation.error}")
            continue
        print(f"{explanation.source}: {explanation.label} ({explanation.probability:.4f})")
        print(f"  grad-cam:     {explanation.gradcam_path}")
        for path in explanation.feature_map_paths:
            print(f"  feature maps: {path}")
    failed = sum(explanation.error is not None for explanation in explanations)
    return EXIT_FAILURES if failed else EXIT_OK


# ----------------------------------------------------------------------------- compare


def _add_compare_command(subparsers):
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
    parser.set_defaults(run=_run_compare)


def _run_compare(arguments):
    import csv
    import io
    from pathlib import Path

    from catsdogs.evaluation.evaluate import compare_runs
    from catsdogs.fileio import atomic_write_text
    from catsdogs.report_plots import save_figure

    rows, figure = compare_runs(arguments.run_dirs)
    table = [("run", "model", "parameters", "epochs", "time", "test accuracy (95% interval)", "F1", "ROC-AUC")]
    for row in rows:
        accuracy = "n/a" if row["test_accuracy"] is None else f"{row['test_accuracy']:.4f}"
        if row["test_accuracy_low"] is not None:
            accuracy += f" ({row['test_accuracy_low']:.4f}-{row['test_accuracy_high']:.4f})"
        seconds = row["training_seconds"]
        table.append(
            (
                row["run"],
                str(row["model"]),
                "n/a" if row["parameters"] is None else f"{row['parameters']:,}",
                str(row["epochs"]),
                "n/a" if seconds is None else f"{seconds / 60:.1f} min",
                accuracy,
                _format_number(row["test_f1"]),
                _format_number(row["test_roc_auc"]),
            )
        )
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    if any(row["test_f1"] is None for row in rows):
        print("(n/a: run `catsdogs evaluate RUN` for F1 and ROC-AUC)")
    out = Path(arguments.out)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "comparison.csv", buffer.getvalue())
    save_figure(figure, out / "validation_curves.png")
    print(f"table:  {out / 'comparison.csv'}")
    print(f"curves: {out / 'validation_curves.png'}")
    return EXIT_OK


# ----------------------------------------------------------------------------- main

_COMMANDS = [
    _add_config_command,
    _add_prepare_command,
    _add_train_command,
    _add_predict_command,
    _add_evaluate_command,
    _add_explain_command,
    _add_compare_command,
]


def build_parser():
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="catsdogs",
        description="Turn a folder of photos into a working image classifier.",
    )
    parser.add_argument("--version", action="version", version=f"catsdogs {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in _COMMANDS:
        add_command(subparsers)
    return parser


def main(argv=None):
    """Run the command line and return the exit status.

    0: everything succeeded; 1: the command ran but some inputs failed
    (e.g. unreadable files in `predict`); 2: bad usage or input, with a message.
    """
    arguments = build_parser().parse_args(argv)
    try:
        return arguments.run(arguments)
    except CatsdogsError as error:
        print(f"catsdogs {arguments.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"catsdogs {arguments.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
