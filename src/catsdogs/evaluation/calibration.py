"""Calibration and the abstain threshold, both fitted on the validation split: the math behind "unsure".

Temperature scaling (Guo et al. 2017, "On calibration of modern neural
networks") divides the model's logits by one scalar T chosen to minimise the
validation negative log likelihood. One scalar cannot overfit 1,000 photos,
it never changes which class wins (so accuracy is untouched), and applying it
is one line of numpy in the TensorFlow-free runtime (`runtime.answers.calibrate`).
Isotonic regression would carry a fitted step function into the runtime, and
with a handful of validation mistakes its steps at the confident end would
rest on a few photos. The fit is a bounded one-dimensional minimisation over
log T (`scipy.optimize.minimize_scalar`): a few lines are simpler to own than
a dependency (`crepes` and `mapie` build conformal prediction sets and p-values
around scikit-learn estimators; neither chooses a threshold for the error rate
among answered photos with a finite-sample bound).

The threshold comes with a stated guarantee, from Learn then Test
(Angelopoulos, Bates, Candès, Jordan and Lei 2021, "Learn then Test:
calibrating predictive algorithms to achieve risk control"), for the risk that
matters to a user, the error rate among the photos that get an answer:

- Candidate thresholds answer the 1%, 2%, ..., 100% most confident validation
  photos. They are put in that order before any label is looked at (only the
  calibrated confidences and the number of photos decide them).
- For each candidate, the null hypothesis "the error rate among the photos it
  answers is above `target_error`" is tested with the exact binomial tail:
  among n answered photos with k errors, p = P(Binomial(n, target_error) <= k).
  (Given n, the answered photos are n independent draws from the answered
  population, so k is binomial; this is the one-sided Clopper-Pearson test.)
- Fixed-sequence testing: candidates are tested in order, from the fewest
  photos answered to the most, and the walk stops at the first p above delta.
  Testing in a fixed order needs no multiple-testing correction, so with
  probability at least 1 - delta every threshold passed has an error rate
  among answered photos of at most `target_error`; the loosest of them is
  chosen (it answers the most). Candidates answering fewer photos than could
  ever pass (even with no error: n < log(delta) / log(1 - target_error)) are
  skipped, which depends on counts only, so the order stays fixed in advance.

What that costs: with no error at all, n answered photos certify at best an
error rate of 1 - delta^(1/n). 1,000 validation photos can therefore never
certify 0.1% at delta = 0.05 (that needs about 3,000 error-free answers);
`smallest_certifiable_error` says what a validation split can certify.
Caveats, stated in docs/abstain.md: validation and future photos must be
exchangeable (same source, same kind of photo), and the candidate thresholds
are quantiles of the validation confidences rather than fixed numbers, the
usual practice (Geifman and El-Yaniv 2017 do the same) that the theorem
strictly does not cover.
"""

import dataclasses
import math

import numpy
from scipy import optimize, stats

from catsdogs.runtime.answers import PROBABILITY_FLOOR, calibrate

# The guarantee holds with probability at least 1 - DEFAULT_DELTA over the draw of the validation split.
DEFAULT_DELTA = 0.05
# Candidate thresholds answer 1%, 2%, ..., 100% of the validation photos.
COVERAGE_STEP = 0.01
# The temperature is searched between these; a fit at either end means something is badly wrong.
TEMPERATURE_BOUNDS = (0.05, 20.0)
# Equal-width confidence bins of the expected calibration error (15, as Guo et al. use).
CALIBRATION_BINS = 15


def negative_log_likelihood(probabilities, labels):
    """The mean negative log probability of the true class (log loss), with probabilities floored as in `calibrate`.

    Args:
        probabilities: class probabilities (n, classes).
        labels: true class indices (n,).

    Returns:
        The mean negative log likelihood, a float.
    """
    probabilities = numpy.asarray(probabilities, dtype=numpy.float64)
    labels = numpy.asarray(labels, dtype=int)
    chosen = probabilities[numpy.arange(len(labels)), labels]
    return float(-numpy.mean(numpy.log(numpy.clip(chosen, PROBABILITY_FLOOR, 1.0))))


def fit_temperature(probabilities, labels):
    """The temperature T that minimises the negative log likelihood of `calibrate(probabilities, T)`.

    Args:
        probabilities: the model's class probabilities on the validation split (n, classes).
        labels: the true class indices (n,).

    Returns:
        T as a float: above 1 when the model is over-confident, below 1 when it is under-confident.
    """
    probabilities = numpy.asarray(probabilities, dtype=numpy.float64)
    labels = numpy.asarray(labels, dtype=int)

    def objective(log_temperature):
        return negative_log_likelihood(calibrate(probabilities, math.exp(log_temperature)), labels)

    low, high = (math.log(bound) for bound in TEMPERATURE_BOUNDS)
    result = optimize.minimize_scalar(objective, bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(result.x))


def expected_calibration_error(confidences, correct, bins=CALIBRATION_BINS):
    """The expected calibration error: the gap between confidence and accuracy, averaged over equal-width bins.

    Args:
        confidences: the probability each photo's predicted class was given (n,).
        correct: whether each prediction was right (n,).
        bins: how many equal-width bins split [0, 1].

    Returns:
        sum over bins of (photos in bin / n) x |accuracy - mean confidence|, a float; 0 for no photos.
    """
    mean_confidence, accuracy, counts = reliability_points(confidences, correct, bins)
    total = counts.sum()
    return float(numpy.sum(counts * numpy.abs(accuracy - mean_confidence)) / total) if total else 0.0


def reliability_points(confidences, correct, bins=CALIBRATION_BINS):
    """Per non-empty confidence bin: the mean confidence, the accuracy and the number of photos.

    Returns:
        (mean confidence, accuracy, counts) as numpy arrays, one entry per non-empty bin.
    """
    confidences = numpy.asarray(confidences, dtype=numpy.float64)
    correct = numpy.asarray(correct, dtype=bool)
    # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of 0 goes into the first bin.
    index = numpy.clip(numpy.ceil(confidences * bins).astype(int) - 1, 0, bins - 1)
    counts = numpy.bincount(index, minlength=bins)
    sums = numpy.bincount(index, weights=confidences, minlength=bins)
    hits = numpy.bincount(index, weights=correct.astype(float), minlength=bins)
    filled = counts > 0
    return sums[filled] / counts[filled], hits[filled] / counts[filled], counts[filled]


def minimum_answered(target_error, delta=DEFAULT_DELTA):
    """The fewest answered photos that could certify `target_error`, reached only if none of them is wrong."""
    return math.ceil(math.log(delta) / math.log1p(-target_error))


def clopper_pearson_upper(errors, answered, delta=DEFAULT_DELTA):
    """The one-sided (1 - delta) Clopper-Pearson upper bound of an error rate seen as `errors` of `answered`."""
    if answered == 0 or errors >= answered:
        return 1.0
    return float(stats.beta.ppf(1 - delta, errors + 1, answered - errors))


@dataclasses.dataclass(frozen=True)
class ThresholdChoice:
    """The abstain threshold chosen on validation, and what it did there.

    Attributes:
        threshold: the smallest calibrated confidence answered; None when no candidate passed.
        target_error: the error rate among answered photos it was chosen for.
        delta: the guarantee holds with probability at least 1 - delta.
        total: validation photos.
        answered: validation photos at or above the threshold (0 when None).
        errors: wrong answers among them.
        error_bound: the (1 - delta) Clopper-Pearson upper bound of their error rate; None when no threshold.
        tests: how many candidates were tested before the walk stopped.
    """

    threshold: float | None
    target_error: float
    delta: float
    total: int
    answered: int
    errors: int
    error_bound: float | None
    tests: int

    @property
    def coverage(self):
        """The fraction of validation photos answered."""
        return self.answered / self.total if self.total else 0.0


def choose_abstain_threshold(confidences, correct, *, target_error, delta=DEFAULT_DELTA, coverage_step=COVERAGE_STEP):
    """Choose the loosest threshold whose error rate among answered photos is certified at most `target_error`.

    Learn then Test with fixed-sequence testing and exact binomial p-values; see the module docstring.

    Args:
        confidences: calibrated probability of each validation photo's predicted class (n,).
        correct: whether each prediction was right (n,).
        target_error: the highest acceptable error rate among the photos answered, e.g. 0.01.
        delta: the guarantee's failure probability, e.g. 0.05.
        coverage_step: candidate thresholds answer coverage_step, 2 x coverage_step, ... of the photos.

    Returns:
        A `ThresholdChoice`; its threshold is None when no candidate passed.
    """
    confidences = numpy.asarray(confidences, dtype=numpy.float64)
    correct = numpy.asarray(correct, dtype=bool)
    total = len(confidences)
    order = numpy.argsort(-confidences, kind="stable")
    descending = confidences[order]
    errors_so_far = numpy.cumsum(~correct[order])
    needed = minimum_answered(target_error, delta)
    chosen, tests, tested_counts = None, 0, set()
    for step in range(1, round(1 / coverage_step) + 1):
        count = min(total, math.ceil(step * coverage_step * total - 1e-9))
        if count < max(needed, 1) or count in tested_counts:
            continue
        tested_counts.add(count)
        threshold = descending[count - 1]
        # Ties with the threshold are answered too, so count what the rule will really answer.
        answered = int(numpy.searchsorted(-descending, -threshold, side="right"))
        errors = int(errors_so_far[answered - 1])
        tests += 1
        if stats.binom.cdf(errors, answered, target_error) > delta:
            break
        chosen = (float(threshold), answered, errors)
    if chosen is None:
        return ThresholdChoice(None, target_error, delta, total, 0, 0, None, tests)
    threshold, answered, errors = chosen
    bound = clopper_pearson_upper(errors, answered, delta)
    return ThresholdChoice(threshold, target_error, delta, total, answered, errors, bound, tests)


def smallest_certifiable_error(confidences, correct, *, delta=DEFAULT_DELTA, candidates=None):
    """The smallest target error rate for which `choose_abstain_threshold` finds a threshold on this split.

    Args:
        confidences: calibrated probability of each photo's predicted class (n,).
        correct: whether each prediction was right (n,).
        delta: the guarantee's failure probability.
        candidates: target error rates to try, ascending; default 200 from 0.01% to 50%, evenly on a log scale.

    Returns:
        (target error, `ThresholdChoice`) for the smallest target that passes, or (None, None).
    """
    targets = numpy.geomspace(1e-4, 0.5, 200) if candidates is None else candidates
    for target in targets:
        choice = choose_abstain_threshold(confidences, correct, target_error=float(target), delta=delta)
        if choice.threshold is not None:
            return float(target), choice
    return None, None


def selective_curve(confidences, correct):
    """Coverage against accuracy among the answered photos, answering the most confident first.

    Returns:
        (coverage, selective accuracy, threshold) as numpy arrays with one entry per photo, from the single most
        confident photo answered to all of them.
    """
    confidences = numpy.asarray(confidences, dtype=numpy.float64)
    correct = numpy.asarray(correct, dtype=bool)
    order = numpy.argsort(-confidences, kind="stable")
    answered = numpy.arange(1, len(order) + 1)
    accuracy = numpy.cumsum(correct[order]) / answered
    return answered / max(len(order), 1), accuracy, confidences[order]


def thin_curve(coverage, accuracy, points=200):
    """Keep about `points` evenly spaced entries of a selective curve (and its last one), for metrics.json."""
    if len(coverage) <= points:
        return [[float(c), float(a)] for c, a in zip(coverage, accuracy)]
    keep = numpy.unique(numpy.linspace(0, len(coverage) - 1, points).round().astype(int))
    return [[float(coverage[index]), float(accuracy[index])] for index in keep]
