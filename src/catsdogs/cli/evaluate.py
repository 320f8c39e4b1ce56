"""`catsdogs evaluate`: metrics with intervals, thresholds chosen on validation, figures and report.html."""

import argparse

from catsdogs.choices import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLD, EVALUATION_SPLITS, default
from catsdogs.cli.common import EXIT_OK, add_engine_argument, add_test_time_augmentation_argument, format_number


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` subcommand."""
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
        "--split", choices=list(EVALUATION_SPLITS), default="test", help="Split to evaluate. Default: test."
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
    parser.add_argument(
        "--abstain-target-error",
        type=float,
        default=default("predict.abstain_target_error"),
        metavar="RATE",
        help=(
            'Two classes: fit the "unsure" threshold on validation so that at most RATE of the photos answered are '
            "wrong, with 95%% confidence (RUN/abstain.json; docs/abstain.md). Default: %(default)s."
        ),
    )
    add_test_time_augmentation_argument(parser)
    add_engine_argument(parser)
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    """Evaluate the run and print its headline numbers and where the figures and report are."""
    from catsdogs.evaluation.evaluate import evaluate_run
    from catsdogs.inference import check_threshold

    result = evaluate_run(
        arguments.run_dir,
        split=arguments.split,
        data_dir=arguments.data,
        decision_threshold=check_threshold(arguments.threshold),
        batch_size=arguments.batch_size,
        test_time_augmentation=arguments.test_time_augmentation,
        engine=arguments.engine,
        abstain_target_error=check_target_error(arguments.abstain_target_error),
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
    choice = metrics.get("engine_choice") or {}
    print(f"engine:     {metrics.get('engine')} ({choice.get('reason', 'no reason recorded')})")
    if metrics.get("threshold_note"):
        print(f"thresholds: {metrics['threshold_note']}")
    print(f"accuracy:   {decided['accuracy']:.4f} (95% interval {interval['low']:.4f} to {interval['high']:.4f})")
    print(
        f"macro F1:   {decided['macro_avg']['f1']:.4f}   ROC-AUC: {format_number(metrics.get('roc_auc'))}   "
        f"PR-AUC: {format_number(metrics.get('pr_auc'))}"
    )
    print(f"log loss:   {metrics['log_loss']:.4f}   Brier: {metrics['brier']:.4f}")
    for name, label in (("best_f1", "best F1"), ("youden_j", "Youden's J")):
        chosen = metrics.get("selected_thresholds", {}).get(name)
        if chosen:
            print(
                f"{label + ':':<11} threshold {chosen['threshold']:.3f} (chosen on validation): accuracy "
                f"{chosen['accuracy']:.4f}, macro F1 {chosen['macro_avg']['f1']:.4f}"
            )
    abstain = metrics.get("abstain")
    if abstain:
        answered = "" if abstain["selective_accuracy"] is None else f", accuracy {abstain['selective_accuracy']:.4f}"
        print(
            f"unsure:     T = {abstain['temperature']:.3f}; answers {abstain['answered']} of {abstain['images']} "
            f"({abstain['coverage']:.2%}){answered} when answered"
        )
        if abstain.get("note"):
            print(f"            {abstain['note']}")
    if metrics["unreadable"]:
        print(f"unreadable: {len(metrics['unreadable'])} images left out (listed in metrics.json)")
    print(f"figures:    {result.run_dir.figures_dir}")
    print(f"report:     {result.report_path}")
    return EXIT_OK


def check_target_error(rate: float) -> float:
    """Return `rate` if it lies strictly between 0 and 1, else raise CatsdogsError."""
    from catsdogs.errors import CatsdogsError

    if not 0.0 < rate < 1.0:
        raise CatsdogsError(
            "--abstain-target-error is the error rate allowed among the photos answered: a number strictly between "
            f"0 and 1, e.g. 0.005 for 0.5%. Received: abstain_target_error={rate}"
        )
    return rate
