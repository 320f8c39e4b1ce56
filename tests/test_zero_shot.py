"""Tests for the zero-shot ImageNet cat/dog mapping (`catsdogs.inference.zero_shot`)."""

import numpy
import pytest

from catsdogs.inference.zero_shot import zero_shot_cat_dog
from catsdogs.models.lite_weights import EfficientNetLiteError

# ---------------------------------------------------------------------------
# Zero-shot cat-vs-dog from ImageNet scores.
# ---------------------------------------------------------------------------


def _logits(**scores):
    row = numpy.full(1000, -50.0)  # Every class not named is practically impossible.
    for class_id, score in scores.items():
        row[int(class_id.removeprefix("c"))] = score
    return row


def test_zero_shot_mappings_on_handmade_logits():
    dog_photo = _logits(c207=12.0, c281=2.0)  # golden retriever far ahead
    cat_photo = _logits(c285=11.0, c200=3.0)  # Egyptian cat far ahead
    # A lion wins, a dog is second, a tabby is far behind: the mappings disagree.
    lion_photo = _logits(c291=10.0, c200=5.0, c281=1.0)
    logits = numpy.stack([dog_photo, cat_photo, lion_photo])

    summed = zero_shot_cat_dog(logits, mapping="sum")
    restricted = zero_shot_cat_dog(logits, mapping="restricted_softmax")
    argmax = zero_shot_cat_dog(logits, mapping="restricted_argmax")

    assert summed[0] > 0.99 and restricted[0] > 0.99 and argmax[0] == 1.0
    assert summed[1] < 0.01 and restricted[1] < 0.01 and argmax[1] == 0.0
    # 'sum' ignores the lion and compares the dog with the tabby.
    assert summed[2] == pytest.approx(1.0 / (1.0 + numpy.exp(-4.0)), abs=1e-3)
    assert restricted[2] < 0.01
    assert argmax[2] == 0.0


def test_zero_shot_gives_the_same_answer_for_probabilities_and_logits():
    logits = numpy.random.default_rng(3).normal(0.0, 3.0, size=(4, 1000))
    probabilities = numpy.exp(logits) / numpy.exp(logits).sum(axis=1, keepdims=True)
    for mapping in ("sum", "restricted_softmax", "restricted_argmax"):
        numpy.testing.assert_allclose(
            zero_shot_cat_dog(probabilities, mapping=mapping),
            zero_shot_cat_dog(logits, mapping=mapping),
            atol=1e-9,
        )


def test_zero_shot_refuses_an_unknown_mapping():
    with pytest.raises(EfficientNetLiteError, match="Received: mapping='majority'"):
        zero_shot_cat_dog(numpy.zeros((1, 1000)), mapping="majority")
