"""Evaluation numbers, no plotting: accuracy with its interval, per-class scores, AUCs, thresholds.

Everything here works on `SplitPredictions`: true labels and a probability
matrix for one named split. Metrics follow scikit-learn exactly, so a number in
`metrics.json` means what scikit-learn's documentation says it means.

Decision thresholds (two classes only) are chosen on validation predictions
by `thresholds.select_thresholds` and applied here unchanged, by
`evaluate_predictions`, to the evaluated split.
"""

import dataclasses
import math
from statistics import NormalDist

import numpy
from sklearn import calibration, metrics

from catsdogs.choices import DEFAULT_THRESHOLD
from catsdogs.errors import CatsdogsError
from catsdogs.inference.predictor import decide

CONFIDENCE = 0.95


def wilson_interval(successes, total, confidence=CONFIDENCE):
    """Return the Wilson score interval for a proportion, e.g. accuracy.

    Unlike the textbook `p ± z·sqrt(p(1-p)/n)`, it stays inside [0, 1] and is
    honest for small n or accuracies near 100%. At n=1000 and p=0.9 it is
    about ±1.9 points.

    Args:
        successes: number of correct predictions.
        total: number of predictions.
        confidence: coverage of the interval, 0.95 for 95%.

    Returns:
        (low, high) as fractions; (0.0, 1.0) when `total` is 0.
    """
    if total == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    proportion = successes / total
    denominator = 1 + z * z / total
    centre = (proportion + z * z / (2 * total)) / denominator
    half_width = z * math.sqrt(proportion * (1 - proportion) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


@dataclasses.dataclass(frozen=True, eq=False)
class SplitPredictions:
    """The true labels and predicted probabilities of one split.

    Attributes:
        split: the split's name, e.g. "validation" or "test".
        labels: integer class indices, shape (n,).
        probabilities: class probabilities, shape (n, num_classes); rows sum to 1.
        class_names: class names in label order.
        paths: optional image file per row, for the misclassified gallery.
    """

    split: str
    labels: numpy.ndarray
    probabilities: numpy.ndarray
    class_names: tuple
    paths: tuple = ()

    def __post_init__(self):
        labels = numpy.asarray(self.labels).astype(int).reshape(-1)
        probabilities = probability_matrix(self.probabilities, len(self.class_names))
        if len(labels) != len(probabilities) or (self.paths and len(self.paths) != len(labels)):
            raise CatsdogsError(
                "Labels, probabilities and paths must have one row per image. "
                f"Received: labels={len(labels)}, probabilities={len(probabilities)}, paths={len(self.paths)}"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise CatsdogsError(
                f"Labels must be class indices from 0 to {len(self.class_names) - 1}. "
                f"Received: labels from {labels.min()} to {labels.max()}"
            )
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "probabilities", probabilities)
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "paths", tuple(str(path) for path in self.paths))

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def is_binary(self):
        return self.num_classes == 2

    @property
    def positive_scores(self):
        """The probability of class 1 (binary models), the score thresholds act on."""
        return self.probabilities[:, 1]


def probability_matrix(outputs, num_classes):
    """Turn model outputs into an (n, num_classes) probability matrix.

    Args:
        outputs: (n, num_classes) probabilities, or for two classes the
            probability of class 1 as (n,) or (n, 1), as a sigmoid gives.
        num_classes: number of classes.

    Returns:
        A float64 array (n, num_classes).
    """
    outputs = numpy.asarray(outputs, dtype=numpy.float64)
    if num_classes == 2 and (outputs.ndim == 1 or outputs.shape[-1] == 1):
        positive = outputs.reshape(-1)
        return numpy.stack([1.0 - positive, positive], axis=1)
    if outputs.ndim != 2 or outputs.shape[1] != num_classes:
        raise CatsdogsError(
            f"Expected probabilities of shape (n, {num_classes}) for {num_classes} classes. "
            f"Received: shape={outputs.shape}"
        )
    sums = outputs.sum(axis=1, keepdims=True)
    if len(outputs) and not numpy.allclose(sums, 1.0, atol=1e-3):
        raise CatsdogsError(
            "Each row of probabilities must sum to 1, as a softmax output does. Pass probabilities, not logits. "
            f"Received: row sums from {sums.min():.4f} to {sums.max():.4f}"
        )
    # A float32 softmax sums to 1 only up to rounding; scikit-learn checks in float64.
    return outputs / sums


def predicted_labels(predictions, threshold=DEFAULT_THRESHOLD):
    """Return predicted class indices by the one decision rule, `inference.decide`."""
    return decide(predictions.probabilities, threshold)


def classification_metrics(predictions, *, threshold=DEFAULT_THRESHOLD, confidence=CONFIDENCE):
    """Return the metrics that depend on the decision: accuracy, per-class scores, confusion matrix.

    Args:
        predictions: `SplitPredictions`.
        threshold: decision threshold on P(class 1) for two classes; ignored otherwise.
        confidence: coverage of the accuracy interval.

    Returns:
        A JSON-ready dict. The confusion matrix has rows = true class, columns = predicted class.
    """
    labels = predictions.labels
    predicted = predicted_labels(predictions, threshold)
    class_indices = list(range(predictions.num_classes))
    correct = int(numpy.sum(predicted == labels))
    low, high = wilson_interval(correct, len(labels), confidence)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predicted, labels=class_indices, zero_division=0
    )
    counts = metrics.confusion_matrix(labels, predicted, labels=class_indices)
    row_totals = counts.sum(axis=1, keepdims=True)
    row_rates = numpy.divide(counts, row_totals, out=numpy.zeros(counts.shape), where=row_totals > 0)
    result = {
        "threshold": float(threshold) if predictions.is_binary else None,
        "num_examples": len(labels),
        "num_correct": correct,
        "accuracy": correct / len(labels) if len(labels) else 0.0,
        "accuracy_interval": {"low": low, "high": high, "confidence": confidence, "method": "wilson"},
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(predictions.class_names, precision, recall, f1, support)
        },
        "confusion_matrix": {
            "class_names": list(predictions.class_names),
            "rows": "true class",
            "columns": "predicted class",
            "counts": counts.tolist(),
            "row_rates": row_rates.tolist(),
        },
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = metrics.precision_recall_fscore_support(
            labels, predicted, labels=class_indices, average=average, zero_division=0
        )
        result[f"{average}_avg"] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    return result


def probability_metrics(predictions):
    """Return the threshold-free metrics: ROC-AUC, PR-AUC, log loss and Brier score.

    Two classes: ROC-AUC and PR-AUC (average precision) of class 1. More classes:
    one-vs-rest per class plus their macro average. An AUC is None when the split
    lacks a class, because it is then undefined.
    """
    labels, probabilities = predictions.labels, predictions.probabilities
    class_indices = list(range(predictions.num_classes))
    one_hot = numpy.eye(predictions.num_classes)[labels]
    present = [index for index in class_indices if 0 < one_hot[:, index].sum() < len(labels)]
    per_class = {
        predictions.class_names[index]: {
            "roc_auc": float(metrics.roc_auc_score(one_hot[:, index], probabilities[:, index])),
            "pr_auc": float(metrics.average_precision_score(one_hot[:, index], probabilities[:, index])),
        }
        for index in present
    }
    result = {"log_loss": float(metrics.log_loss(labels, probabilities, labels=class_indices))}
    if predictions.is_binary:
        result["brier"] = float(metrics.brier_score_loss(labels, predictions.positive_scores))
        result["positive_class"] = predictions.class_names[1]
        positive = per_class.get(predictions.class_names[1], {})
        result["roc_auc"] = positive.get("roc_auc")
        result["pr_auc"] = positive.get("pr_auc")
    else:
        result["brier"] = float(metrics.brier_score_loss(labels, probabilities, labels=class_indices))
        complete = len(present) == predictions.num_classes
        result["roc_auc"] = (
            float(metrics.roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))
            if complete
            else None
        )
        result["pr_auc"] = float(numpy.mean([per_class[name]["pr_auc"] for name in per_class])) if complete else None
        result["averaging"] = "one-vs-rest, macro"
    result["per_class"] = per_class
    return result


def evaluate_predictions(predictions, *, decision_threshold=DEFAULT_THRESHOLD, selection=None, confidence=CONFIDENCE):
    """Compute every metric for one split.

    Args:
        predictions: `SplitPredictions` of the evaluated split.
        decision_threshold: the configured threshold on P(class 1) (two classes).
        selection: optional `thresholds.ThresholdSelection` from validation, applied unchanged.
        confidence: coverage of the accuracy interval.

    Returns:
        A JSON-ready dict: the probability metrics, the classification metrics at
        `decision_threshold` under "at_decision_threshold", and with a selection, the
        classification metrics at each chosen threshold under "selected_thresholds".
    """
    result = {
        "split": predictions.split,
        "num_examples": len(predictions.labels),
        "class_names": list(predictions.class_names),
        "decision_rule": "P(class 1) >= threshold" if predictions.is_binary else "argmax",
        **probability_metrics(predictions),
        "at_decision_threshold": classification_metrics(
            predictions, threshold=decision_threshold, confidence=confidence
        ),
    }
    if selection is not None and predictions.is_binary:
        result["selected_thresholds"] = {
            "chosen_on": selection.chosen_on,
            "chosen_on_examples": selection.num_examples,
            # Evaluating the validation split itself reuses the data the thresholds came from.
            "in_sample": predictions.split == selection.chosen_on,
            "best_f1": {
                "validation_f1": selection.best_f1_score,
                **classification_metrics(predictions, threshold=selection.best_f1, confidence=confidence),
            },
            "youden_j": {
                "validation_youden_j": selection.youden_j_score,
                **classification_metrics(predictions, threshold=selection.youden_j, confidence=confidence),
            },
        }
    return result


def curve_points(predictions):
    """Return ROC and precision-recall curve points per class (one-vs-rest), for plotting.

    Returns:
        {class name: {"fpr", "tpr", "roc_auc", "precision", "recall", "pr_auc"}} as numpy
        arrays; two-class models give only class 1. Classes absent from the split are left out.
    """
    classes = [1] if predictions.is_binary else range(predictions.num_classes)
    points = {}
    for index in classes:
        truth = (predictions.labels == index).astype(int)
        if truth.min() == truth.max():
            continue
        scores = predictions.probabilities[:, index]
        fpr, tpr, _ = metrics.roc_curve(truth, scores)
        precision, recall, _ = metrics.precision_recall_curve(truth, scores)
        points[predictions.class_names[index]] = {
            "fpr": fpr,
            "tpr": tpr,
            "roc_auc": metrics.auc(fpr, tpr),
            "precision": precision,
            "recall": recall,
            "pr_auc": metrics.average_precision_score(truth, scores),
            "prevalence": truth.mean(),
        }
    return points


def calibration_points(predictions, bins=10):
    """Return reliability-curve points: the observed frequency against the mean confidence per bin.

    Two classes: P(class 1) against how often class 1 is true. More classes: the
    top-class confidence against how often the top class is right.

    Returns:
        (mean predicted probability, observed frequency, confidences) as numpy arrays.
    """
    if predictions.is_binary:
        truth, confidences = predictions.labels == 1, predictions.positive_scores
    else:
        truth = numpy.argmax(predictions.probabilities, axis=1) == predictions.labels
        confidences = predictions.probabilities.max(axis=1)
    observed, mean_predicted = calibration.calibration_curve(truth.astype(int), confidences, n_bins=bins)
    return mean_predicted, observed, confidences


def most_confident_mistakes(predictions, *, threshold=DEFAULT_THRESHOLD, limit=12):
    """Return the indices of the wrong predictions, most confident first.

    Confidence is the probability the model gave its (wrong) predicted class.
    """
    predicted = predicted_labels(predictions, threshold)
    wrong = numpy.flatnonzero(predicted != predictions.labels)
    confidence = predictions.probabilities[wrong, predicted[wrong]]
    return wrong[numpy.argsort(-confidence, kind="stable")][:limit].tolist()
