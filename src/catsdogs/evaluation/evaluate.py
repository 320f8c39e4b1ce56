"""`evaluate_run`: what `catsdogs evaluate` does with a run folder (`compare.py` does `catsdogs compare`).

Evaluation predicts the validation split (only to choose decision thresholds)
and the evaluated split, computes every metric, writes figures and merges the
numbers into the run's metrics.json under "evaluation", leaving training's
entries alone, then rewrites report.html. A data folder with a test split but
no validation split borrows the validation split of the run's own data folder
for the thresholds, and the metrics say so.
"""

import dataclasses
import logging
from pathlib import Path

import numpy

from catsdogs import report_plots
from catsdogs.choices import DEFAULT_BATCH_SIZE, DEFAULT_ENGINE, DEFAULT_THRESHOLD, EVALUATION_SPLITS, default
from catsdogs.errors import CatsdogsError
from catsdogs.evaluation import abstaining, thresholds
from catsdogs.evaluation.metrics import (
    SplitPredictions,
    calibration_points,
    curve_points,
    evaluate_predictions,
    most_confident_mistakes,
    predicted_labels,
)
from catsdogs.runs import EVALUATION_KEY, RunDir

logger = logging.getLogger("catsdogs.evaluation")
DEFAULT_ABSTAIN_TARGET_ERROR = default("predict.abstain_target_error")


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """What `evaluate_run` produced: the metrics, the predictions and the files written."""

    run_dir: RunDir
    key: str
    metrics: dict
    predictions: SplitPredictions
    figures: list
    report_path: Path


def open_run(run_dir: str | Path | RunDir) -> RunDir:
    """Open a run folder given as a path or as a `RunDir` (as `train` passes it)."""
    return RunDir.open(run_dir.path if isinstance(run_dir, RunDir) else run_dir)


def resolve_data_dir(run_dir, data_dir=None):
    """Return the prepared data folder to evaluate: `data_dir`, else the one the run was trained on.

    Raises:
        CatsdogsError: if neither is given nor recorded, or the folder does not exist.
    """
    recorded = run_dir.read_run_info().get("data_dir")
    chosen = Path(data_dir) if data_dir is not None else Path(recorded) if recorded else None
    if chosen is None:
        raise CatsdogsError(
            f"The run folder does not record its data folder, so it is unclear what to evaluate. Pass the "
            f"prepared folder with --data DIR. Received: run={run_dir.path}"
        )
    if not chosen.is_dir():
        raise CatsdogsError(
            f"The data folder does not exist. Expected a folder made by `catsdogs prepare`; pass another with "
            f"--data DIR. Received: data_dir={chosen}"
        )
    return chosen


def predict_split(predictor, data_dir, split):
    """Predict every image of `data_dir/split` and return (`SplitPredictions`, unreadable rows).

    Raises:
        CatsdogsError: if the split's class folders differ from the model's classes.
    """
    from catsdogs.data.dataset import list_images

    paths, labels, class_names = list_images(Path(data_dir) / split)
    if list(class_names) != list(predictor.class_names):
        raise CatsdogsError(
            f"The {split} split's class folders differ from the classes the model was trained on, so its labels "
            f"would be misread. Evaluate a folder prepared with the same class names. "
            f"Received: model_classes={list(predictor.class_names)}, data_classes={list(class_names)}, "
            f"data_dir={data_dir}"
        )
    rows = predictor.predict(paths, sources=paths)
    readable = [index for index, row in enumerate(rows) if row.ok]
    unreadable = [{"file": row.source, "error": row.error} for row in rows if not row.ok]
    probabilities = numpy.array(
        [[rows[index].probabilities[name] for name in class_names] for index in readable]
    ).reshape(-1, len(class_names))
    predictions = SplitPredictions(
        split=split,
        labels=numpy.asarray(labels)[readable],
        probabilities=probabilities,
        class_names=class_names,
        paths=[paths[index] for index in readable],
    )
    return predictions, unreadable


def threshold_data_dir(data_dir: Path, recorded: str | None) -> tuple[Path, str | None]:
    """Return the folder whose validation split chooses the decision thresholds, and why, if it is a fallback.

    Thresholds are chosen on validation only. A folder with just a test split
    borrows the validation split of the run's own data folder, which the model
    was selected on too, so the evaluated split still takes no part in the choice.

    Args:
        data_dir: the prepared folder being evaluated.
        recorded: the run's own data folder, from run.json; None when not recorded.

    Returns:
        (folder, note): `data_dir` and None when it has a validation split, else the run's
        own data folder and a sentence that says so.

    Raises:
        CatsdogsError: if neither folder has a validation split.
    """
    if (data_dir / "validation").is_dir():
        return data_dir, None
    own = Path(recorded) if recorded else None
    if own is not None and (own / "validation").is_dir():
        note = (
            f"{data_dir.resolve()} has no validation split, so the decision thresholds were chosen on the "
            f"validation split of the run's own data folder, {own.resolve()}"
        )
        return own, note
    raise CatsdogsError(
        "Evaluation chooses its decision thresholds on a validation split, but neither the data folder nor the "
        "run's own data folder has one. Pass --data a folder made by `catsdogs prepare` that has a validation "
        "split, or put the run's data folder back where run.json says it is. "
        f"Received: data_dir={data_dir}, run_data_dir={recorded}"
    )


def evaluate_run(
    run_dir: str | Path | RunDir,
    *,
    split: str = "test",
    data_dir: str | Path | None = None,
    decision_threshold: float = DEFAULT_THRESHOLD,
    gallery_size: int = 12,
    gradcam_examples: int = 4,
    batch_size: int = DEFAULT_BATCH_SIZE,
    test_time_augmentation: bool | None = None,
    engine: str = DEFAULT_ENGINE,
    abstain_target_error: float = DEFAULT_ABSTAIN_TARGET_ERROR,
) -> EvaluationResult:
    """Evaluate a trained run on a split, write metrics, figures and the report.

    Two-class thresholds are chosen on the validation split of `data_dir`; when it
    has none, on the run's own validation split, recorded in the metrics as
    "threshold_data_dir" with a "threshold_note".

    Args:
        run_dir: the run folder.
        split: "test" (default) or "validation".
        data_dir: a prepared folder with the same class names; default the run's own data.
        decision_threshold: the configured threshold on P(class 1) for two classes.
        gallery_size: how many of the most confident mistakes to show.
        gradcam_examples: how many Grad-CAM overlays to add to the report.
        batch_size: images per model call.
        test_time_augmentation: average over each image and its mirror image; None takes the run's
            `model.test_time_augmentation`.
        engine: what runs the model: "auto" (ONNX Runtime where it agrees with Keras), "onnxruntime" or
            "keras" (`inference.engines`); the metrics record the engine used and why. Grad-CAM uses Keras.
        abstain_target_error: for two classes, the error rate among answered photos the "unsure" threshold is
            fitted for on validation (`evaluation.abstaining`), written to RUN/abstain.json and its exports.

    Returns:
        An `EvaluationResult`.

    Raises:
        CatsdogsError: for an unknown split or engine, a missing data folder or split, no validation split to
            choose thresholds on, other class names, or an "onnxruntime" engine that cannot run the model.
    """
    from catsdogs.inference import Predictor
    from catsdogs.report import write_report

    if split not in EVALUATION_SPLITS:
        raise CatsdogsError(f"Evaluate the test or the validation split. Received: split={split}")
    run = open_run(run_dir)
    recorded = run.read_run_info().get("data_dir")
    data_dir = resolve_data_dir(run, data_dir)
    predictor = Predictor.from_run_dir(
        run.path,
        threshold=decision_threshold,
        batch_size=batch_size,
        test_time_augmentation=test_time_augmentation,
        engine=engine,
        abstain=False,
    )
    validation, validation_dir, note = None, data_dir, None
    if split == "validation":
        evaluated, unreadable = predict_split(predictor, data_dir, split)
        validation = evaluated
    else:
        # Only two-class thresholds need validation predictions; more classes take the argmax.
        if len(predictor.class_names) == 2:
            validation_dir, note = threshold_data_dir(data_dir, recorded)
            validation, _ = predict_split(predictor, validation_dir, "validation")
        evaluated, unreadable = predict_split(predictor, data_dir, split)
    if not len(evaluated.labels):
        raise CatsdogsError(f"No image of the {split} split could be read. Received: data_dir={data_dir}")
    # Thresholds come from validation alone; the evaluated split never takes part in choosing them.
    selection = thresholds.select_thresholds(validation) if evaluated.is_binary else None
    metrics = evaluate_predictions(evaluated, decision_threshold=decision_threshold, selection=selection)
    own_data = recorded is not None and Path(recorded).resolve() == data_dir.resolve()
    key = split if own_data else f"{split} of {data_dir.resolve()}"
    metrics.update(
        data_dir=str(data_dir.resolve()), unreadable=unreadable, test_time_augmentation=predictor.test_time_augmentation
    )
    # Which engine gave these probabilities, and why: ONNX Runtime and Keras agree to about 1e-5, not bit for bit.
    runner = predictor.open_engine()
    metrics.update(engine=runner.engine, engine_choice=runner.choice.to_dict())
    if selection is not None:
        metrics["threshold_data_dir"] = str(validation_dir.resolve())
    if note:
        metrics["threshold_note"] = note
    figures = write_evaluation_figures(run, evaluated, metrics, predictor, decision_threshold, gallery_size)
    figures += write_gradcam_examples(run, evaluated, predictor, decision_threshold, gradcam_examples)
    if validation is not None and evaluated.is_binary:
        # Calibration and the "unsure" threshold, fitted on validation and measured on the evaluated split.
        metrics["abstain"], abstain_figures = abstaining.fit_and_measure(
            run,
            validation,
            evaluated,
            predictor=predictor,
            decision_threshold=decision_threshold,
            target_error=abstain_target_error,
            data_dir=validation_dir,
        )
        figures += abstain_figures
    stored = run.read_metrics() if run.metrics_path.is_file() else {}
    section = stored.setdefault(EVALUATION_KEY, {})
    section[key] = metrics
    section["latest"] = key
    run.write_metrics(stored)
    return EvaluationResult(run, key, metrics, evaluated, figures, write_report(run.path))


def report_after_training(run_dir, *, engine=DEFAULT_ENGINE, abstain_target_error=DEFAULT_ABSTAIN_TARGET_ERROR):
    """Evaluate a freshly trained run and write its complete report; `train` calls this last.

    The test split is evaluated when the data has one, else the validation split.

    Args:
        run_dir: the finished run folder.
        engine: what runs the model for the evaluation: "auto", "onnxruntime" or "keras".
        abstain_target_error: the "unsure" rule's target error rate among answered photos (`evaluate_run`).

    Returns:
        The path of report.html.
    """
    from catsdogs.report import write_report

    run = open_run(run_dir)
    data_dir = run.read_run_info().get("data_dir")
    split = "test" if data_dir and (Path(data_dir) / "test").is_dir() else "validation"
    try:
        result = evaluate_run(run.path, split=split, engine=engine, abstain_target_error=abstain_target_error)
        logger.info("Evaluated the %s split; report %s", split, result.report_path)
        return result.report_path
    except Exception:
        # The model is saved and the run finished: a failed evaluation must not turn that into an
        # error. The report is still written, without evaluation, and `catsdogs evaluate` can retry.
        logger.exception("Evaluation after training failed; writing the report without it")
        return write_report(run.path)


def operating_points(metrics):
    """Return {label: (false positive rate, true positive rate)} for each threshold of a binary evaluation."""
    if metrics["decision_rule"] == "argmax":
        return {}
    negative, positive = metrics["class_names"]
    entries = {f"threshold {metrics['at_decision_threshold']['threshold']:.3f}": metrics["at_decision_threshold"]}
    for name, label in (("best_f1", "best F1"), ("youden_j", "Youden's J")):
        chosen = metrics.get("selected_thresholds", {}).get(name)
        if chosen:
            entries[f"{label} on validation ({chosen['threshold']:.3f})"] = chosen
    return {
        label: (1.0 - entry["per_class"][negative]["recall"], entry["per_class"][positive]["recall"])
        for label, entry in entries.items()
    }


def write_evaluation_figures(run, predictions, metrics, predictor, threshold, gallery_size):
    """Write the confusion matrix, ROC, PR, calibration, histogram and gallery figures; return their paths."""
    points = curve_points(predictions)
    figures = {
        "confusion_matrix": report_plots.confusion_matrix_figure(
            metrics["at_decision_threshold"]["confusion_matrix"], title=f"Confusion matrix ({predictions.split})"
        ),
        "roc": report_plots.roc_figure(points, operating_points=operating_points(metrics)),
        "precision_recall": report_plots.precision_recall_figure(points),
        "calibration": report_plots.calibration_figure(*calibration_points(predictions), binary=predictions.is_binary),
        "probability_histogram": report_plots.probability_histogram_figure(
            predictions.probabilities, predictions.labels, predictions.class_names, threshold=threshold
        ),
    }
    predicted = predicted_labels(predictions, threshold)
    examples = []
    for index in most_confident_mistakes(predictions, threshold=threshold, limit=gallery_size):
        examples.append(
            {
                "image": predictor.load_image(predictions.paths[index]),
                "true": predictions.class_names[predictions.labels[index]],
                "predicted": predictions.class_names[predicted[index]],
                "probability": predictions.probabilities[index, predicted[index]],
                "name": Path(predictions.paths[index]).name,
            }
        )
    figures["misclassified"] = report_plots.misclassified_gallery_figure(
        examples, title=f"Most confident mistakes ({len(examples)} of {int((predicted != predictions.labels).sum())})"
    )
    return [report_plots.save_figure(figure, run.evaluation_figure_path(name)) for name, figure in figures.items()]


def gradcam_picks(predictions, threshold, count):
    """Pick images to explain: the most confident mistakes and the most confident right answers, alternately."""
    predicted = predicted_labels(predictions, threshold)
    confidence = predictions.probabilities[numpy.arange(len(predicted)), predicted]
    right = [int(i) for i in numpy.argsort(-confidence, kind="stable") if predicted[i] == predictions.labels[i]]
    # Right answers alternate between classes, so every class is shown when there is room.
    by_class = [[i for i in right if predictions.labels[i] == label] for label in range(predictions.num_classes)]
    right = [i for group in zip(*by_class) for i in group] or right
    wrong = most_confident_mistakes(predictions, threshold=threshold, limit=count)
    picks = [i for pair in zip(wrong, right) for i in pair] + wrong[len(right) :] + right[len(wrong) :]
    return picks[:count]


def write_gradcam_examples(run, predictions, predictor, threshold, count):
    """Write Grad-CAM overlays for a few evaluated images into figures/ and return their paths."""
    from catsdogs.interpret import grad_cam

    for stale in run.gradcam_figure_paths():
        stale.unlink()
    picks = gradcam_picks(predictions, threshold, count)
    if not picks:
        return []
    pixels = numpy.stack([predictor.load_image(predictions.paths[index]) for index in picks])
    predicted = predicted_labels(predictions, threshold)[picks]
    heatmaps, _, layer = grad_cam(predictor.model, pixels, class_index=predicted)
    paths = []
    for number, (index, image, heatmap, label) in enumerate(zip(picks, pixels, heatmaps, predicted), start=1):
        truth = predictions.class_names[predictions.labels[index]]
        verdict = "right" if label == predictions.labels[index] else "wrong"
        title = (
            f"{Path(predictions.paths[index]).name}: predicted {predictions.class_names[label]} "
            f"({predictions.probabilities[index, label]:.0%}), true {truth} — {verdict}"
        )
        figure = report_plots.gradcam_figure(image, heatmap, title=title, layer=layer)
        paths.append(report_plots.save_figure(figure, run.gradcam_figure_path(number)))
    return paths
