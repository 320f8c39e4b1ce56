"""Calibration and the abstain rule on synthetic numbers: the temperature fit, the threshold's guarantee, the rule
as the runtime applies it, and abstain.json's checks. No model and no TensorFlow: every test takes milliseconds."""

import json
import math

import numpy
import pytest

from catsdogs.errors import CatsdogsError
from catsdogs.evaluation.calibration import (
    choose_abstain_threshold,
    clopper_pearson_upper,
    expected_calibration_error,
    fit_temperature,
    minimum_answered,
    smallest_certifiable_error,
)
from catsdogs.runtime.answers import UNSURE, AbstainRule, calibrate, read_abstain_rule

CLASSES = ("cats", "dogs")


def sigmoid(values):
    return 1 / (1 + numpy.exp(-values))


def overconfident_two_class(count, temperature, seed=0):
    """Labels drawn from calibrated probabilities, and a model that reports them `temperature` times too sharp."""
    generator = numpy.random.default_rng(seed)
    logits = generator.normal(0.0, 3.0, count)
    labels = (generator.random(count) < sigmoid(logits)).astype(int)
    reported = sigmoid(logits * temperature)
    return numpy.stack([1 - reported, reported], axis=1), labels


def test_temperature_fit_recovers_a_known_temperature_for_two_classes():
    probabilities, labels = overconfident_two_class(20000, temperature=2.5)
    assert fit_temperature(probabilities, labels) == pytest.approx(2.5, rel=0.08)
    # A calibrated model keeps T close to 1.
    probabilities, labels = overconfident_two_class(20000, temperature=1.0, seed=1)
    assert fit_temperature(probabilities, labels) == pytest.approx(1.0, rel=0.08)


def test_temperature_fit_recovers_a_known_temperature_for_three_classes():
    generator = numpy.random.default_rng(2)
    logits = generator.normal(0.0, 2.0, (20000, 3))
    truth = numpy.exp(logits) / numpy.exp(logits).sum(axis=1, keepdims=True)
    labels = numpy.array([generator.choice(3, p=row) for row in truth])
    # The model is under-confident: its logits are half what they should be, so the fit sharpens (T < 1).
    reported = numpy.exp(logits * 0.5) / numpy.exp(logits * 0.5).sum(axis=1, keepdims=True)
    assert fit_temperature(reported, labels) == pytest.approx(0.5, rel=0.08)


def test_calibrate_is_sigmoid_of_the_scaled_logit_and_keeps_the_winner():
    probabilities = numpy.array([[0.1, 0.9], [0.7, 0.3], [0.5, 0.5]])
    calibrated = calibrate(probabilities, 2.0)
    logit = numpy.log(0.9 / 0.1)
    assert calibrated[0, 1] == pytest.approx(sigmoid(logit / 2.0))
    assert numpy.allclose(calibrated.sum(axis=1), 1.0)
    assert (calibrated.argmax(axis=1)[:2] == probabilities.argmax(axis=1)[:2]).all()
    assert numpy.allclose(calibrate(probabilities, 1.0), probabilities)
    # A saturated float32 output (exactly 1.0) gets a finite logit, not an infinite one.
    assert numpy.isfinite(calibrate(numpy.array([[0.0, 1.0]]), 3.0)).all()
    assert calibrate(numpy.array([[0.0, 1.0]]), 3.0)[0, 1] < 1.0


def test_expected_calibration_error_drops_after_temperature_scaling():
    probabilities, labels = overconfident_two_class(20000, temperature=3.0, seed=3)
    temperature = fit_temperature(probabilities, labels)
    predicted = probabilities.argmax(axis=1)
    correct = predicted == labels
    rows = numpy.arange(len(labels))
    before = expected_calibration_error(probabilities[rows, predicted], correct)
    after = expected_calibration_error(calibrate(probabilities, temperature)[rows, predicted], correct)
    assert before > 0.05 and after < 0.015 and after < before / 4


def calibrated_population(count, generator):
    """Confidences uniform on [0.5, 1], each right with exactly that probability: error rate known everywhere."""
    confidences = generator.uniform(0.5, 1.0, count)
    return confidences, generator.random(count) < confidences


def test_chosen_threshold_meets_its_target_on_new_photos_at_least_one_minus_delta_of_the_time():
    generator = numpy.random.default_rng(4)
    target, delta, trials, failures, coverages = 0.05, 0.05, 200, 0, []
    for _ in range(trials):
        confidences, correct = calibrated_population(2000, generator)
        choice = choose_abstain_threshold(confidences, correct, target_error=target, delta=delta)
        if choice.threshold is None:
            # The walk starts at the fewest photos that could pass (60, with no mistake allowed among them), so a
            # single early mistake stops it: answering nothing breaks no guarantee, but it costs power.
            coverages.append(0.0)
            continue
        # The true error rate among photos at or above t, for confidences uniform on [0.5, 1] with P(right) = c:
        # the mean of 1 - c over [t, 1] is (1 - t) / 2.
        true_error = (1 - choice.threshold) / 2
        failures += true_error > target
        coverages.append(choice.coverage)
        assert choice.error_bound <= target + 1e-12
    # Binomial(200, 0.05) exceeds 18 with probability below 0.1%: more failures would break the guarantee.
    assert failures <= 18
    # It is not vacuous either: most trials find a threshold. The loosest threshold meeting the target, 0.9,
    # answers 20% with an error rate of exactly 5%, which no finite sample certifies; around 10% coverage (2.5%
    # errors among 200 photos) a test passes about half the time, so a median near 5% is what the method can do.
    assert sum(coverage > 0 for coverage in coverages) > trials / 2
    assert 0.03 <= numpy.median([coverage for coverage in coverages if coverage > 0]) <= 0.2


def test_threshold_is_monotone_in_confidence_and_in_the_target():
    generator = numpy.random.default_rng(5)
    confidences, correct = calibrated_population(5000, generator)
    rule = AbstainRule(CLASSES, temperature=1.0, threshold=0.8, target_error=0.1, delta=0.05)
    answered = [not rule.answer([1 - value, value], 1).abstained for value in numpy.linspace(0.5, 1.0, 101)]
    # Once a probability is answered, every higher one is answered too.
    assert answered == sorted(answered)
    coverages = []
    for target in (0.02, 0.05, 0.1, 0.2, 0.3):
        choice = choose_abstain_threshold(confidences, correct, target_error=target)
        coverages.append(choice.coverage)
    assert coverages == sorted(coverages) and coverages[0] < coverages[-1] == 1.0


def test_too_few_validation_photos_cannot_certify_one_in_a_thousand():
    confidences = numpy.linspace(0.9, 1.0, 1000)
    correct = numpy.ones(1000, bool)
    # Even 1,000 right answers out of 1,000 certify at best 1 - 0.05 ** (1 / 1000), about 0.3%.
    assert minimum_answered(0.001) == 2995
    assert choose_abstain_threshold(confidences, correct, target_error=0.001).threshold is None
    smallest, choice = smallest_certifiable_error(confidences, correct)
    assert 1 - 0.05 ** (1 / 1000) <= smallest < 0.0033 and choice.coverage == 1.0
    assert clopper_pearson_upper(0, 1000) == pytest.approx(1 - 0.05 ** (1 / 1000))


def test_a_confident_mistake_early_stops_the_walk():
    confidences = numpy.linspace(1.0, 0.5, 1000)
    correct = numpy.ones(1000, bool)
    correct[[5, 10, 15]] = False  # Three mistakes among the most confident photos.
    choice = choose_abstain_threshold(confidences, correct, target_error=0.01)
    assert choice.threshold is None and choice.tests == 1


def test_rule_answers_the_label_or_unsure_with_a_reason():
    rule = AbstainRule(CLASSES, temperature=1.0, threshold=0.9, target_error=0.01, delta=0.05)
    sure = rule.answer([0.05, 0.95], 1)
    assert (sure.answer, sure.abstained, sure.reason) == ("dogs", False, None)
    assert sure.calibrated_probability == pytest.approx(0.95)
    unsure = rule.answer([0.8, 0.2], 0)
    assert unsure.answer == UNSURE and unsure.abstained and "below 0.9000" in unsure.reason
    assert unsure.calibrated_probability == pytest.approx(0.8)
    # A temperature above 1 softens 0.95 below the threshold.
    assert rule.__class__(CLASSES, 3.0, 0.9, 0.01, 0.05).answer([0.05, 0.95], 1).abstained
    off = AbstainRule(CLASSES, temperature=1.0, threshold=None, target_error=0.001, delta=0.05)
    assert not off.active and not off.answer([0.4, 0.6], 1).abstained


def write_rule(path, **changes):
    values = {**AbstainRule(CLASSES, 1.5, 0.97, 0.01, 0.05, source_model_sha256="ab" * 32).to_dict(), **changes}
    path.write_text(json.dumps(values), encoding="utf-8")
    return path


def test_abstain_file_round_trips_and_is_checked(tmp_path):
    path = write_rule(tmp_path / "abstain.json")
    rule, note = read_abstain_rule(path, class_names=CLASSES, model_sha256="ab" * 32)
    assert note is None and rule.temperature == 1.5 and rule.threshold == 0.97 and rule.active
    rule, note = read_abstain_rule(path, class_names=CLASSES, model_sha256="cd" * 32, where="export")
    assert rule is None and "another model" in note and "export again" in note
    with pytest.raises(CatsdogsError, match="other classes"):
        read_abstain_rule(path, class_names=("birds", "fish"))
    with pytest.raises(CatsdogsError, match="temperature"):
        read_abstain_rule(write_rule(tmp_path / "bad.json", temperature=-1), class_names=CLASSES)
    with pytest.raises(CatsdogsError, match="format version"):
        read_abstain_rule(write_rule(tmp_path / "new.json", format_version=2), class_names=CLASSES)
    (tmp_path / "torn.json").write_text("{", encoding="utf-8")
    with pytest.raises(CatsdogsError, match="cannot be read as JSON"):
        read_abstain_rule(tmp_path / "torn.json", class_names=CLASSES)


def test_missing_or_uncertified_rule_turns_abstaining_off_and_says_so(tmp_path):
    rule, note = read_abstain_rule(tmp_path / "abstain.json", class_names=CLASSES)
    assert rule is None and note.startswith("abstaining is off") and "catsdogs evaluate" in note
    path = write_rule(tmp_path / "off.json", threshold=None, note="abstaining is off: too few photos")
    rule, note = read_abstain_rule(path, class_names=CLASSES)
    assert rule is not None and not rule.active and note == "abstaining is off: too few photos"
    assert math.isclose(rule.answer([0.3, 0.7], 1).calibrated_probability, float(calibrate([0.3, 0.7], 1.5)[1]))
