"""Threshold selection: chosen on validation only, optimal there, applied unchanged elsewhere."""

import numpy
import pytest
from sklearn import metrics

from catsdogs.errors import CatsdogsError
from catsdogs.evaluation import metrics as evaluation
from catsdogs.evaluation import thresholds


def binary_predictions(split="test", seed=0, size=200):
    generator = numpy.random.default_rng(seed)
    labels = generator.integers(0, 2, size=size)
    # Informative but imperfect scores: the positive class tends to score higher.
    scores = numpy.clip(0.5 + 0.3 * (labels - 0.5) + generator.normal(0, 0.25, size=size), 0.001, 0.999)
    return evaluation.SplitPredictions(split=split, labels=labels, probabilities=scores, class_names=("cats", "dogs"))


def test_threshold_selection_refuses_test_data():
    with pytest.raises(CatsdogsError, match="validation split.*Received: split=test"):
        thresholds.select_thresholds(binary_predictions(split="test"))


def test_selected_thresholds_do_not_depend_on_the_evaluated_split():
    validation = binary_predictions(split="validation", seed=3)
    selection = thresholds.select_thresholds(validation)
    first = evaluation.evaluate_predictions(binary_predictions(seed=4), selection=selection)
    second = evaluation.evaluate_predictions(binary_predictions(seed=5), selection=selection)
    for name in ("best_f1", "youden_j"):
        assert first["selected_thresholds"][name]["threshold"] == second["selected_thresholds"][name]["threshold"]
    assert first["selected_thresholds"]["chosen_on"] == "validation"
    assert first["selected_thresholds"]["in_sample"] is False


def test_selected_thresholds_are_the_validation_optima():
    validation = binary_predictions(split="validation", seed=3)
    selection = thresholds.select_thresholds(validation)
    labels, scores = validation.labels, validation.positive_scores
    candidates = numpy.unique(scores)
    f1_scores = [metrics.f1_score(labels, scores >= threshold) for threshold in candidates]
    assert selection.best_f1_score == pytest.approx(max(f1_scores))
    assert metrics.f1_score(labels, scores >= selection.best_f1) == pytest.approx(max(f1_scores))
    youden = [
        metrics.recall_score(labels, scores >= t) - (1 - metrics.recall_score(labels, scores >= t, pos_label=0))
        for t in candidates
    ]
    assert selection.youden_j_score == pytest.approx(max(youden))


def test_selection_needs_two_classes_in_validation():
    validation = evaluation.SplitPredictions("validation", [1, 1, 1], [0.2, 0.6, 0.9], ("cats", "dogs"))
    with pytest.raises(CatsdogsError, match="both classes"):
        thresholds.select_thresholds(validation)
