"""Decision thresholds chosen on validation predictions, never on the split they are evaluated on.

A two-class model predicts class 1 when P(class 1) >= threshold. Besides the
configured threshold (0.5 by default), evaluation reports two chosen on the
validation split: the one with the best F1 and the one with the best Youden's
J (true positive rate minus false positive rate). `select_thresholds` accepts
validation predictions and nothing else; `evaluation.evaluate_predictions` then
applies the choice unchanged to the test split. Tuning a threshold on the test
split would make the test numbers optimistic.
"""

import dataclasses

import numpy
from sklearn import metrics

from catsdogs.errors import CatsdogsError

SELECTION_SPLIT = "validation"


@dataclasses.dataclass(frozen=True)
class ThresholdSelection:
    """Decision thresholds chosen on validation data, to be applied unchanged elsewhere.

    Attributes:
        best_f1: the threshold with the highest F1 of class 1 on validation.
        best_f1_score: that F1.
        youden_j: the threshold with the highest true minus false positive rate on validation.
        youden_j_score: that J.
        chosen_on: the split they were chosen on, always "validation".
        num_examples: how many validation images they were chosen on.
    """

    best_f1: float
    best_f1_score: float
    youden_j: float
    youden_j_score: float
    chosen_on: str
    num_examples: int


def select_thresholds(validation):
    """Choose decision thresholds on validation predictions: best F1 and Youden's J.

    Args:
        validation: `SplitPredictions` of the validation split of a binary model.

    Returns:
        A `ThresholdSelection`; a threshold t means "predict class 1 when P(class 1) >= t".

    Raises:
        CatsdogsError: if the predictions are not from the validation split (a
            threshold tuned on test data would flatter the test numbers), or the
            model has more than two classes.
    """
    if validation.split != SELECTION_SPLIT:
        raise CatsdogsError(
            "Thresholds may only be chosen on the validation split, never on the split they are "
            f"evaluated on. Pass validation predictions. Received: split={validation.split}"
        )
    if not validation.is_binary:
        raise CatsdogsError(
            "Threshold selection applies to two-class models; more classes use the argmax. "
            f"Received: class_names={list(validation.class_names)}"
        )
    if len(set(validation.labels.tolist())) < 2:
        raise CatsdogsError(
            "Choosing a threshold needs validation images of both classes. "
            f"Received: labels={sorted(set(validation.labels.tolist()))}"
        )
    scores = validation.positive_scores
    precision, recall, pr_thresholds = metrics.precision_recall_curve(validation.labels, scores)
    # The last precision/recall pair has no threshold (it is the "predict nothing" end).
    with numpy.errstate(divide="ignore", invalid="ignore"):
        f1 = numpy.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)[:-1]
    best_f1_index = int(numpy.argmax(f1))
    false_positive_rate, true_positive_rate, roc_thresholds = metrics.roc_curve(validation.labels, scores)
    # roc_curve starts at threshold +inf ("predict nothing"); it is never a usable choice.
    finite = numpy.isfinite(roc_thresholds)
    youden = numpy.where(finite, true_positive_rate - false_positive_rate, -numpy.inf)
    youden_index = int(numpy.argmax(youden))
    return ThresholdSelection(
        best_f1=float(pr_thresholds[best_f1_index]),
        best_f1_score=float(f1[best_f1_index]),
        youden_j=float(roc_thresholds[youden_index]),
        youden_j_score=float(youden[youden_index]),
        chosen_on=validation.split,
        num_examples=len(validation.labels),
    )
