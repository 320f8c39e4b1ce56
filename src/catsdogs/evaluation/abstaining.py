"""Fit the abstain rule on validation, write abstain.json, and measure the rule on the evaluated split.

`catsdogs evaluate` (and so `catsdogs train`, which evaluates at the end)
calls `fit_and_measure` once it has the validation and evaluated predictions:

1. fit the calibration temperature and the abstain threshold on validation
   (`evaluation.calibration`), for `predict.abstain_target_error`;
2. write them to the run's abstain.json, and into every export folder of the
   run that was made from the same model.keras, so that the TensorFlow-free
   runtime applies the same rule (`runtime.answers`);
3. measure the rule on the evaluated split: coverage, accuracy among the
   answered photos with its interval, expected calibration error before and
   after, the coverage-accuracy curve; and write its figures.

The numbers go into metrics.json under the evaluation's "abstain" key; the
report's "Unsure answers" section shows them.
"""

import json
import logging
import time
from pathlib import Path

import numpy

from catsdogs import report_plots
from catsdogs.evaluation import abstain_figures
from catsdogs.evaluation.calibration import (
    DEFAULT_DELTA,
    choose_abstain_threshold,
    expected_calibration_error,
    fit_temperature,
    minimum_answered,
    negative_log_likelihood,
    selective_curve,
    smallest_certifiable_error,
    thin_curve,
)
from catsdogs.evaluation.metrics import predicted_labels, wilson_interval
from catsdogs.fileio import atomic_write_json, checksum_path
from catsdogs.runs import EXPORT_DIR, EXPORT_RECORD_FILE, ExportDir, RunDir
from catsdogs.runtime.answers import AbstainRule, calibrate

logger = logging.getLogger("catsdogs.evaluation")

# The photos abstained on that the report shows as thumbnails, least sure first.
GALLERY_SIZE = 12
# The abstained photos metrics.json lists by name.
LISTED_ABSTAINED = 100


def fit_abstain_rule(validation, *, decision_threshold, target_error, delta=DEFAULT_DELTA, model_sha256=None):
    """Fit the temperature and the abstain threshold on the validation predictions.

    Args:
        validation: the validation split's `SplitPredictions`.
        decision_threshold: the decision threshold on P(class 1) that picks each photo's label (two classes).
        target_error: the highest acceptable error rate among the photos answered.
        delta: the guarantee holds with probability at least 1 - delta.
        model_sha256: the SHA-256 of the run's model.keras, recorded so that a rule is never applied to
            another model.

    Returns:
        (the `AbstainRule`, abstain.json's contents: the rule and what it did on validation).
    """
    temperature = fit_temperature(validation.probabilities, validation.labels)
    _, correct, before, after = confidences(validation, temperature=temperature, decision_threshold=decision_threshold)
    choice = choose_abstain_threshold(after, correct, target_error=target_error, delta=delta)
    smallest, smallest_choice = smallest_certifiable_error(after, correct, delta=delta)
    note = None
    if choice.threshold is None:
        best = f"{smallest:.2%}" if smallest is not None else "none"
        note = (
            f"abstaining is off: {len(correct)} validation photos with {int((~correct).sum())} mistakes cannot "
            f"certify at most {target_error:.2%} errors among the photos answered (with {1 - delta:.0%} "
            f"confidence: that needs at least {minimum_answered(target_error, delta)} error-free answers); the "
            f"smallest target they certify is {best}. Evaluate with --abstain-target-error {best}"
            if smallest is not None
            else f"abstaining is off: {len(correct)} validation photos cannot certify any target error rate"
        )
    rule = AbstainRule(
        class_names=tuple(validation.class_names),
        temperature=temperature,
        threshold=choice.threshold,
        target_error=target_error,
        delta=delta,
        source_model_sha256=model_sha256,
        note=note,
    )
    record = {
        **rule.to_dict(),
        "note": note,
        "decision_threshold": decision_threshold,
        "method": {
            "calibration": "temperature scaling: softmax(log p / T), T minimising the validation log loss",
            "threshold": (
                "Learn then Test, fixed-sequence testing over thresholds answering 1%, 2%, ... of the validation "
                "photos, exact binomial p-values; docs/abstain.md"
            ),
        },
        "validation": {
            "images": len(correct),
            "mistakes": int((~correct).sum()),
            "log_loss_before": negative_log_likelihood(validation.probabilities, validation.labels),
            "log_loss_after": negative_log_likelihood(
                calibrate(validation.probabilities, temperature), validation.labels
            ),
            "ece_before": expected_calibration_error(before, correct),
            "ece_after": expected_calibration_error(after, correct),
            "answered": choice.answered,
            "coverage": choice.coverage,
            "errors_answered": choice.errors,
            "error_bound": choice.error_bound,
            "thresholds_tested": choice.tests,
            "smallest_certifiable_error": smallest,
            "coverage_at_smallest": None if smallest_choice is None else smallest_choice.coverage,
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return rule, record


def fit_and_measure(run, validation, evaluated, *, predictor, decision_threshold, target_error, data_dir=None):
    """Fit the rule on validation, write abstain.json (run and matching exports), measure it and draw its figures.

    Args:
        run: the `RunDir`.
        validation: the validation split's `SplitPredictions` (the run's own, or the one thresholds borrowed).
        evaluated: the evaluated split's `SplitPredictions`.
        predictor: the run's predictor, whose `load_image` gives the thumbnails.
        decision_threshold: the decision threshold on P(class 1) (two classes).
        target_error: the highest acceptable error rate among the photos answered.
        data_dir: the folder whose validation split the rule was fitted on, recorded in abstain.json.

    Returns:
        (the metrics of the rule on the evaluated split, the paths of the figures written).
    """
    model_sha256 = _model_sha256(run)
    rule, record = fit_abstain_rule(
        validation, decision_threshold=decision_threshold, target_error=target_error, model_sha256=model_sha256
    )
    record.update(
        validation_data_dir=str(Path(data_dir).resolve()) if data_dir else None,
        test_time_augmentation=bool(predictor.test_time_augmentation),
    )
    atomic_write_json(run.abstain_path, record)
    copied = copy_into_exports(run, record, model_sha256)
    metrics = measure_rule(rule, evaluated, decision_threshold=decision_threshold)
    metrics.update(fitted=record["validation"], note=record["note"], exports_updated=copied)
    figures = write_figures(run, rule, validation, evaluated, metrics, predictor, decision_threshold)
    return metrics, figures


def copy_into_exports(run, record, model_sha256):
    """Write abstain.json into every export folder of the run made from this same model; return their names."""
    copied = []
    for folder in sorted((run.path / EXPORT_DIR).glob("*/")):
        try:
            export_record = json.loads((folder / EXPORT_RECORD_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(export_record, dict) or "format" not in export_record:
            continue
        # An export made from an earlier model.keras keeps no rule fitted on another model's probabilities.
        source = export_record.get("source_model") or {}
        if model_sha256 is None or not isinstance(source, dict) or source.get("sha256") != model_sha256:
            continue
        atomic_write_json(ExportDir(folder, format_name=export_record["format"]).abstain_path, record)
        copied.append(folder.name)
    if copied:
        logger.info("Wrote abstain.json into the exports %s", ", ".join(copied))
    return copied


def confidences(predictions, *, temperature, decision_threshold):
    """Each photo's predicted class and whether it is right, with its probability before and after calibration.

    Returns:
        (predicted class indices, correct, raw probability, calibrated probability) as numpy arrays.
    """
    predicted = predicted_labels(predictions, decision_threshold)
    rows = numpy.arange(len(predicted))
    calibrated = calibrate(predictions.probabilities, temperature)
    correct = predicted == predictions.labels
    return predicted, correct, predictions.probabilities[rows, predicted], calibrated[rows, predicted]


def measure_rule(rule, predictions, *, decision_threshold):
    """What the rule does on a split: coverage, accuracy among the answered, calibration before and after.

    Args:
        rule: the `AbstainRule`.
        predictions: the split's `SplitPredictions`.
        decision_threshold: the decision threshold on P(class 1) (two classes).

    Returns:
        A JSON-ready dict; "abstained" lists the photos abstained on, least sure first.
    """
    predicted, correct, raw, confidence = confidences(
        predictions, temperature=rule.temperature, decision_threshold=decision_threshold
    )
    total = len(predicted)
    answered = confidence >= rule.threshold if rule.active else numpy.ones(total, bool)
    answered_count, right = int(answered.sum()), int(correct[answered].sum())
    low, high = wilson_interval(right, answered_count)
    coverage, accuracy, _ = selective_curve(confidence, correct)
    abstained = numpy.flatnonzero(~answered)
    abstained = abstained[numpy.argsort(confidence[abstained], kind="stable")]
    calibrated = calibrate(predictions.probabilities, rule.temperature)
    return {
        "split": predictions.split,
        "active": rule.active,
        "temperature": rule.temperature,
        "threshold": rule.threshold,
        "target_error": rule.target_error,
        "delta": rule.delta,
        "images": total,
        "answered": answered_count,
        "coverage": answered_count / total if total else 0.0,
        "errors_answered": answered_count - right,
        "selective_accuracy": right / answered_count if answered_count else None,
        "selective_accuracy_interval": {"low": low, "high": high, "confidence": 0.95, "method": "wilson"},
        "accuracy_all": float(correct.mean()) if total else None,
        "mistakes_abstained_on": int((~correct[~answered]).sum()),
        "ece_before": expected_calibration_error(raw, correct),
        "ece_after": expected_calibration_error(confidence, correct),
        "log_loss_before": negative_log_likelihood(predictions.probabilities, predictions.labels),
        "log_loss_after": negative_log_likelihood(calibrated, predictions.labels),
        "curve": thin_curve(coverage, accuracy),
        "abstained": [
            {
                "file": str(predictions.paths[index]) if predictions.paths else str(index),
                "true": predictions.class_names[predictions.labels[index]],
                "predicted": predictions.class_names[predicted[index]],
                "calibrated_probability": float(confidence[index]),
            }
            for index in abstained[:LISTED_ABSTAINED]
        ],
    }


def write_figures(run, rule, validation, evaluated, metrics, predictor, decision_threshold):
    """Write the before/after reliability diagram, the coverage-accuracy curve and the abstained photos.

    Returns:
        The paths of the three figures.
    """
    panels = []
    for predictions in (validation, evaluated):
        _, correct, raw, confidence = confidences(
            predictions, temperature=rule.temperature, decision_threshold=decision_threshold
        )
        panels.append((predictions.split, raw, confidence, correct))
    examples = [
        {**entry, "image": predictor.load_image(entry["file"]), "name": Path(entry["file"]).name}
        for entry in (metrics["abstained"][:GALLERY_SIZE] if evaluated.paths else [])
    ]
    _, _, evaluated_confidence, evaluated_correct = panels[1]
    coverage, accuracy, _ = selective_curve(evaluated_confidence, evaluated_correct)
    figures = {
        "reliability_calibrated": abstain_figures.reliability_before_after_figure(panels, temperature=rule.temperature),
        "coverage_accuracy": abstain_figures.coverage_accuracy_figure(
            coverage,
            accuracy,
            chosen=(metrics["coverage"], metrics["selective_accuracy"]) if rule.active else None,
            target_error=rule.target_error,
            split=evaluated.split,
        ),
        "abstained": abstain_figures.abstained_gallery_figure(
            examples, title=f"Photos it abstains on ({len(examples)} of {metrics['images'] - metrics['answered']})"
        ),
    }
    return [report_plots.save_figure(figure, run.evaluation_figure_path(name)) for name, figure in figures.items()]


def _model_sha256(run: RunDir):
    """The SHA-256 recorded beside model.keras (the predictor checked it before loading), or None."""
    try:
        return checksum_path(run.model_path).read_text(encoding="utf-8").split()[0].lower()
    except (OSError, IndexError):
        return None
