"""Answers that can abstain: a calibrated probability for every prediction, and "unsure" when it is too low.

`catsdogs evaluate` fits two numbers on the validation split and writes them
into the run folder's abstain.json (copied into every export folder):

- a temperature T that calibrates the model's probabilities: the log
  probabilities are divided by T and renormalised, softmax(log p / T). For
  two classes that is sigmoid(logit / T), plain temperature scaling; for more
  classes the log probabilities stand in for the softmax logits (they differ
  only by a constant per photo, which the softmax ignores);
- a threshold on the calibrated probability of the predicted class, chosen so
  that the photos it answers are wrong at most `target_error` of the time
  (`evaluation.calibration` explains the guarantee).

`AbstainRule.answer` applies both to one photo. The label stays what the
decision rule (`predictions.decide`) says; the answer is that label, or
`UNSURE` with a reason. `NeitherRule` is the second reason to abstain: too
little of an ImageNet head's probability on the cat and dog classes makes the
answer `NEITHER` (the photo shows neither), in the same `Answer` shape. This module needs numpy only, so
the TensorFlow-free runtime applies the very rule that evaluation fitted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from collections.abc import Sequence
from pathlib import Path

import numpy

from catsdogs.errors import CatsdogsError

if typing.TYPE_CHECKING:
    import numpy.typing

# The answer of a photo the model is not sure enough about.
UNSURE = "unsure"
# What a predictor says when the caller asked for the plain label.
OFF_BY_REQUEST = "abstaining is off: the plain label was asked for (--no-abstain)"
# Bumped when abstain.json changes shape; a newer file is refused rather than misread.
FORMAT_VERSION = 1
# A float32 sigmoid rounds to exactly 1.0 past a logit of about 16.6, leaving 0 for the other class; its
# probabilities are floored at float32's resolution next to 1 (2**-24), so a saturated output gets the
# logit of the largest output short of 1.0 instead of an infinite one.
PROBABILITY_FLOOR = 2.0**-24


def calibrate(probabilities: numpy.typing.ArrayLike, temperature: float) -> numpy.ndarray:
    """Temperature-scale class probabilities: softmax(log p / T), for one row (classes,) or rows (n, classes).

    T above 1 softens over-confident probabilities, below 1 sharpens them, and 1 leaves them as they are.
    The most probable class never changes.

    Args:
        probabilities: class probabilities, each row summing to 1.
        temperature: the positive temperature T.

    Returns:
        float64 calibrated probabilities shaped like `probabilities`.
    """
    logits = numpy.log(numpy.clip(numpy.asarray(probabilities, dtype=numpy.float64), PROBABILITY_FLOOR, 1.0))
    logits = logits / float(temperature)
    logits -= logits.max(axis=-1, keepdims=True)
    exponentials = numpy.exp(logits)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class Answer:
    """What a prediction answers once the abstain rule has looked at it.

    Attributes:
        answer: the predicted class name, or `UNSURE`.
        abstained: whether the answer is not a class.
        reason: why it abstained, in words; None when it answered.
        calibrated_probability: the calibrated probability of the predicted class; None without calibration.
    """

    answer: str
    abstained: bool
    reason: str | None
    calibrated_probability: float | None


@dataclasses.dataclass(frozen=True)
class AbstainRule:
    """A fitted calibration and abstain threshold, as abstain.json holds them.

    Attributes:
        class_names: the classes it was fitted for, in label order.
        temperature: the calibration temperature T (see `calibrate`).
        threshold: the smallest calibrated probability of the predicted class that is answered; None when the
            validation split could not certify `target_error` (then nothing is abstained on, and `note` says so).
        target_error: the error rate among answered photos the threshold was chosen for.
        delta: the guarantee holds with probability at least 1 - delta.
        source_model_sha256: the SHA-256 of the model.keras it was fitted on; None when not recorded.
        note: why abstaining is off although the rule exists; None when it is on.
    """

    class_names: tuple[str, ...]
    temperature: float
    threshold: float | None
    target_error: float
    delta: float
    source_model_sha256: str | None = None
    note: str | None = None

    @property
    def active(self) -> bool:
        """Whether the rule abstains at all (a threshold was certified on validation)."""
        return self.threshold is not None

    def answer(self, probabilities: numpy.typing.ArrayLike, label_index: int) -> Answer:
        """The answer for one photo: its predicted class, or `UNSURE` when the calibrated probability is too low.

        Args:
            probabilities: the photo's class probabilities (classes,), as the model gave them.
            label_index: the class the decision rule chose.

        Returns:
            An `Answer`.
        """
        confidence = float(calibrate(probabilities, self.temperature)[label_index])
        name = self.class_names[label_index]
        if self.threshold is None or confidence >= self.threshold:
            return Answer(name, False, None, confidence)
        reason = (
            f"calibrated probability {confidence:.3f} of {name} is below {self.threshold:.4f}, the threshold "
            f"chosen on validation for at most {self.target_error:.2%} errors among the photos answered"
        )
        return Answer(UNSURE, True, reason, confidence)

    def to_dict(self) -> dict:
        """The rule's part of abstain.json (evaluation adds what it measured beside it)."""
        return {
            "format_version": FORMAT_VERSION,
            "class_names": list(self.class_names),
            "temperature": self.temperature,
            "threshold": self.threshold,
            "target_error": self.target_error,
            "delta": self.delta,
            "source_model_sha256": self.source_model_sha256,
        }

    @classmethod
    def from_dict(cls, values: dict, *, path: str | os.PathLike = "abstain.json") -> AbstainRule:
        """Rebuild a rule from abstain.json's contents, checking every field it needs.

        Raises:
            CatsdogsError: for a newer format, or a missing or out-of-range field.
        """
        version = values.get("format_version")
        if version != FORMAT_VERSION:
            raise CatsdogsError(
                f"abstain.json has format version {version!r}, and this catsdogs reads version {FORMAT_VERSION}. "
                f"Fit it again with `catsdogs evaluate RUN`, or upgrade catsdogs. Received: path={path}"
            )
        names = values.get("class_names")
        temperature = values.get("temperature")
        threshold = values.get("threshold")
        target_error = values.get("target_error")
        delta = values.get("delta")
        problems = [
            (
                "class_names",
                names,
                isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names),
            ),
            ("temperature", temperature, _is_number(temperature) and temperature > 0),
            ("threshold", threshold, threshold is None or (_is_number(threshold) and 0 <= threshold <= 1)),
            ("target_error", target_error, _is_number(target_error) and 0 < target_error < 1),
            ("delta", delta, _is_number(delta) and 0 < delta < 1),
        ]
        for name, value, valid in problems:
            if not valid:
                raise CatsdogsError(
                    f"abstain.json has no valid {name}, so its rule cannot be applied. Fit it again with "
                    f"`catsdogs evaluate RUN` (and export again). Received: path={path}, {name}={value!r}"
                )
        sha256 = values.get("source_model_sha256")
        return cls(
            class_names=tuple(names),
            temperature=float(temperature),
            threshold=None if threshold is None else float(threshold),
            target_error=float(target_error),
            delta=float(delta),
            source_model_sha256=sha256 if isinstance(sha256, str) else None,
            note=values.get("note") if threshold is None and isinstance(values.get("note"), str) else None,
        )


# The answer of a photo that shows neither a cat nor a dog, by the ImageNet head's account.
NEITHER = "neither"
# ImageNet-1k classes whose probability mass says a photo shows a cat or a dog: dogs 151 (Chihuahua) to 268
# (Mexican hairless) and the domestic cats 281 (tabby) to 285 (Egyptian cat).
IMAGENET_CAT_DOG_CLASSES = (*range(151, 269), *range(281, 286))
# The smallest cat-and-dog mass that is answered, chosen on the seed validation photos (Kaggle numbers 1000-1499
# of each class, 1,000 photos) as the highest threshold turning away at most 0.5% of them (5), with the
# pretrained EfficientNet-Lite0 at 224 x 224. Measured by benchmarks/neither.py: it turns away 0.62% of the
# large test (37 of 6,000; 95% interval 0.45%-0.85%) and catches 21 of 25 images that show neither
# (docs/abstain.md).
NEITHER_MASS_THRESHOLD = 0.0528
# Why an export predictor never answers "neither": it runs the classifier only.
NEITHER_OFF_IN_EXPORTS = (
    "the 'neither' check is off: an export carries the classifier only, not the ImageNet head the check needs "
    "(predict the run folder, or without a run folder, for it)"
)


@dataclasses.dataclass(frozen=True)
class NeitherRule:
    """ "Not a cat or a dog": too little of the ImageNet head's probability on the cat and dog classes.

    Attributes:
        threshold: the smallest mass on `classes` that is answered.
        classes: the ImageNet class ids whose mass counts.
    """

    threshold: float = NEITHER_MASS_THRESHOLD
    classes: tuple[int, ...] = IMAGENET_CAT_DOG_CLASSES

    def mass(self, imagenet_probabilities: numpy.typing.ArrayLike) -> numpy.ndarray:
        """The probability mass on `classes` of each row of ImageNet probabilities (n, 1000); (n,) float64."""
        probabilities = numpy.asarray(imagenet_probabilities, dtype=numpy.float64)
        if probabilities.ndim != 2 or probabilities.shape[1] <= max(self.classes):
            raise CatsdogsError(
                "The 'neither' check needs ImageNet probabilities shaped (images, 1000), the softmax of an ImageNet "
                f"head. Pass the head's output. Received: shape={probabilities.shape}"
            )
        return probabilities[:, list(self.classes)].sum(axis=1)

    def check(self, answer: Answer, mass: float) -> Answer:
        """`answer`, or `NEITHER` with a reason when the cat-and-dog mass is below the threshold.

        The "neither" check comes first: a photo of no cat and no dog is that, however sure the classifier is.
        """
        if mass >= self.threshold:
            return answer
        reason = (
            f"the ImageNet head puts {mass:.1%} of its probability on cat and dog classes, below {self.threshold:.2%}:"
            " the photo seems to show neither a cat nor a dog"
        )
        return Answer(NEITHER, True, reason, answer.calibrated_probability)


def softmax(logits: numpy.typing.ArrayLike) -> numpy.ndarray:
    """Row-wise softmax in float64 (ImageNet logits to probabilities)."""
    logits = numpy.asarray(logits, dtype=numpy.float64)
    exponentials = numpy.exp(logits - logits.max(axis=-1, keepdims=True))
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def read_abstain_rule(
    path: str | os.PathLike, *, class_names: Sequence[str], model_sha256: str | None = None, where: str = "run"
) -> tuple[AbstainRule | None, str | None]:
    """Read abstain.json and check it belongs to this model; say why abstaining is off when it is.

    An older run or export has no abstain.json: that is no error, abstaining is simply off.

    Args:
        path: the abstain.json file (`runs.RunDir.abstain_path` or `runs.ExportDir.abstain_path`).
        class_names: the model's classes, in label order.
        model_sha256: the SHA-256 of the model.keras the predictor runs (or that the export was made from);
            None skips the check.
        where: "run" or "export", for the messages.

    Returns:
        (rule, note): the rule, or None; and a sentence saying why abstaining is off, or None when it is on.

    Raises:
        CatsdogsError: for an abstain.json that cannot be read, has an invalid field, or names other classes.
    """
    path = Path(path)
    if not path.is_file():
        how = "`catsdogs evaluate RUN` writes it" + (", then export again" if where == "export" else "")
        return None, f"abstaining is off: this {where} has no {path.name} ({how})"
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CatsdogsError(
            f"{path.name} cannot be read as JSON. Fit it again with `catsdogs evaluate RUN`, or delete it to "
            f"predict without abstaining. Received: path={path}, error={error}"
        ) from None
    if not isinstance(values, dict):
        raise CatsdogsError(
            f"{path.name} should hold a JSON object. Fit it again with `catsdogs evaluate RUN`. Received: path={path}"
        )
    rule = AbstainRule.from_dict(values, path=path)
    if list(rule.class_names) != list(class_names):
        raise CatsdogsError(
            f"{path.name} was fitted for other classes than the model's, so its threshold means nothing here. Fit "
            f"it again with `catsdogs evaluate RUN`. Received: rule_classes={list(rule.class_names)}, "
            f"model_classes={list(class_names)}, path={path}"
        )
    if model_sha256 and rule.source_model_sha256 and rule.source_model_sha256 != model_sha256:
        return None, (
            f"abstaining is off: {path.name} was fitted on another model (SHA-256 {rule.source_model_sha256[:12]}…); "
            "run `catsdogs evaluate RUN` again" + (" and export again" if where == "export" else "")
        )
    if not rule.active:
        return rule, rule.note or (
            f"abstaining is off: the validation split cannot certify at most {rule.target_error:.2%} errors among "
            "the photos answered; see abstain.json for the smallest target it can"
        )
    return rule, None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
