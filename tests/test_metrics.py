"""Evaluation numbers: each metric equals scikit-learn's, thresholds come from validation only."""

import math

import numpy
import pytest
from sklearn import metrics

from catsdogs.errors import CatsdogsError
from catsdogs.evaluation import metrics as evaluation

CLASS_NAMES = ("cats", "dogs")


def binary_predictions(split="test", seed=0, size=200):
    generator = numpy.random.default_rng(seed)
    labels = generator.integers(0, 2, size=size)
    # Informative but imperfect scores: the positive class tends to score higher.
    scores = numpy.clip(0.5 + 0.3 * (labels - 0.5) + generator.normal(0, 0.25, size=size), 0.001, 0.999)
    return evaluation.SplitPredictions(split=split, labels=labels, probabilities=scores, class_names=CLASS_NAMES)


def three_class_predictions():
    generator = numpy.random.default_rng(1)
    labels = numpy.repeat([0, 1, 2], 30)
    logits = generator.normal(0, 1, size=(90, 3)) + 1.5 * numpy.eye(3)[labels]
    probabilities = numpy.exp(logits) / numpy.exp(logits).sum(axis=1, keepdims=True)
    return evaluation.SplitPredictions("test", labels, probabilities, ("bird", "cat", "dog"))


def test_binary_metrics_equal_scikit_learn():
    predictions = binary_predictions()
    result = evaluation.evaluate_predictions(predictions, decision_threshold=0.5)
    labels, scores = predictions.labels, predictions.positive_scores
    predicted = (scores >= 0.5).astype(int)
    decided = result["at_decision_threshold"]
    assert decided["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted))
    for index, name in enumerate(CLASS_NAMES):
        assert decided["per_class"][name]["precision"] == pytest.approx(
            metrics.precision_score(labels, predicted, pos_label=index)
        )
        assert decided["per_class"][name]["recall"] == pytest.approx(
            metrics.recall_score(labels, predicted, pos_label=index)
        )
        assert decided["per_class"][name]["f1"] == pytest.approx(metrics.f1_score(labels, predicted, pos_label=index))
        assert decided["per_class"][name]["support"] == int((labels == index).sum())
    for average in ("macro", "weighted"):
        assert decided[f"{average}_avg"]["f1"] == pytest.approx(metrics.f1_score(labels, predicted, average=average))
        assert decided[f"{average}_avg"]["precision"] == pytest.approx(
            metrics.precision_score(labels, predicted, average=average)
        )
    assert result["roc_auc"] == pytest.approx(metrics.roc_auc_score(labels, scores))
    assert result["pr_auc"] == pytest.approx(metrics.average_precision_score(labels, scores))
    assert result["log_loss"] == pytest.approx(metrics.log_loss(labels, scores))
    assert result["brier"] == pytest.approx(metrics.brier_score_loss(labels, scores))


def test_multiclass_metrics_equal_scikit_learn():
    predictions = three_class_predictions()
    result = evaluation.evaluate_predictions(predictions)
    labels, probabilities = predictions.labels, predictions.probabilities
    predicted = probabilities.argmax(axis=1)
    decided = result["at_decision_threshold"]
    assert result["decision_rule"] == "argmax" and decided["threshold"] is None
    assert decided["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted))
    assert decided["macro_avg"]["f1"] == pytest.approx(metrics.f1_score(labels, predicted, average="macro"))
    assert result["roc_auc"] == pytest.approx(metrics.roc_auc_score(labels, probabilities, multi_class="ovr"))
    assert result["log_loss"] == pytest.approx(metrics.log_loss(labels, probabilities))
    assert result["brier"] == pytest.approx(metrics.brier_score_loss(labels, probabilities, labels=[0, 1, 2]))
    assert result["per_class"]["cat"]["roc_auc"] == pytest.approx(
        metrics.roc_auc_score(labels == 1, probabilities[:, 1])
    )
    assert numpy.asarray(decided["confusion_matrix"]["counts"]).shape == (3, 3)
    assert "selected_thresholds" not in result


def test_confusion_matrix_rows_are_true_classes_and_columns_predictions():
    # Three true cats: two predicted cat, one predicted dog. One true dog, predicted cat.
    predictions = evaluation.SplitPredictions(
        "test", labels=[0, 0, 0, 1], probabilities=[0.1, 0.2, 0.9, 0.3], class_names=CLASS_NAMES
    )
    confusion = evaluation.classification_metrics(predictions)["confusion_matrix"]
    assert confusion["counts"] == [[2, 1], [1, 0]]
    assert confusion["row_rates"][0] == pytest.approx([2 / 3, 1 / 3])
    assert confusion["row_rates"][1] == pytest.approx([1.0, 0.0])
    assert (confusion["rows"], confusion["columns"]) == ("true class", "predicted class")


@pytest.mark.parametrize(
    "correct, total, half_width_points",
    [(900, 1000, 1.86), (500, 1000, 3.09), (90, 100, 5.9)],
)
def test_wilson_interval_width_for_known_n(correct, total, half_width_points):
    low, high = evaluation.wilson_interval(correct, total)
    assert (high - low) / 2 * 100 == pytest.approx(half_width_points, abs=0.1)
    assert low < correct / total < high


def test_wilson_interval_stays_inside_zero_and_one():
    assert evaluation.wilson_interval(10, 10)[1] == 1.0
    assert evaluation.wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert evaluation.wilson_interval(0, 0) == (0.0, 1.0)


def test_accuracy_interval_is_reported_with_its_method():
    interval = evaluation.classification_metrics(binary_predictions(size=1000))["accuracy_interval"]
    assert interval["method"] == "wilson" and interval["confidence"] == 0.95
    assert 0.015 < (interval["high"] - interval["low"]) / 2 < 0.035


def test_probability_matrix_accepts_a_sigmoid_column():
    matrix = evaluation.probability_matrix([[0.2], [0.9]], 2)
    numpy.testing.assert_allclose(matrix, [[0.8, 0.2], [0.1, 0.9]])
    with pytest.raises(CatsdogsError, match=r"shape \(n, 3\)"):
        evaluation.probability_matrix([[0.2, 0.8]], 3)


def test_most_confident_mistakes_come_first():
    predictions = evaluation.SplitPredictions(
        "test", labels=[0, 0, 1, 1], probabilities=[0.6, 0.95, 0.2, 0.7], class_names=CLASS_NAMES
    )
    # Wrong: index 1 (dog at 95%), index 2 (cat at 80%), index 0 (dog at 60%).
    assert evaluation.most_confident_mistakes(predictions) == [1, 2, 0]


def test_auc_is_none_when_a_class_is_missing():
    predictions = evaluation.SplitPredictions("test", labels=[1, 1], probabilities=[0.6, 0.9], class_names=CLASS_NAMES)
    result = evaluation.evaluate_predictions(predictions)
    assert result["roc_auc"] is None and math.isfinite(result["log_loss"])


def test_one_decision_rule_for_metrics_and_predictions():
    from catsdogs.inference import decide

    binary = numpy.array([[0.6, 0.4], [0.5, 0.5], [0.2, 0.8]])
    assert decide(binary, 0.5).tolist() == [0, 1, 1]
    assert decide(binary, 0.45).tolist() == [0, 1, 1]
    assert decide(binary, 0.9).tolist() == [0, 0, 0]
    assert int(decide(binary[0], 0.3)) == 1
    three = numpy.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    assert decide(three, 0.99).tolist() == [1, 0]  # The threshold does not apply to more classes.
    predictions = evaluation.SplitPredictions("test", [0, 1, 1], binary, CLASS_NAMES)
    assert evaluation.predicted_labels(predictions, 0.45).tolist() == decide(binary, 0.45).tolist()
