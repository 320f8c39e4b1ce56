"""The report's "Unsure answers" section: calibration, the abstain threshold, what it answers and what it does not.

It reads what `catsdogs evaluate` wrote (the evaluation's "abstain" entry in
metrics.json and three figures) and computes nothing.
"""

from catsdogs.report.markup import cards_html, escape, figures_html, number, percent
from catsdogs.runs import RunDir


def abstain_section(run: RunDir, evaluated: dict | None) -> str:
    """Cards for the temperature, calibration error, threshold and coverage; the figures; or why there is none."""
    abstain = (evaluated or {}).get("abstain")
    if not abstain:
        return (
            '<p class="note">No abstain rule for this evaluation. Run <code>catsdogs evaluate RUN</code> to fit the '
            "calibration and the &ldquo;unsure&rdquo; threshold on the validation split.</p>"
        )
    fitted = abstain.get("fitted") or {}
    split = escape(abstain.get("split", "?"))
    interval = abstain.get("selective_accuracy_interval") or {}
    cards = [
        (
            "temperature",
            f"{abstain['temperature']:.3f}",
            f"ECE validation {number(fitted.get('ece_before'))} → {number(fitted.get('ece_after'))}",
        ),
        (
            "threshold",
            "off" if not abstain["active"] else f"{abstain['threshold']:.4f}",
            f"for ≤ {abstain['target_error']:.2%} errors, {1 - abstain['delta']:.0%} confidence",
        ),
        (
            f"{abstain['split']} answered",
            percent(abstain["coverage"]),
            f"{abstain['answered']} of {abstain['images']} photos",
        ),
        (
            "accuracy when answered",
            _precise_percent(abstain.get("selective_accuracy")),
            f"95% CI {_precise_percent(interval.get('low'))}–{_precise_percent(interval.get('high'))} · "
            f"{abstain['errors_answered']} mistakes",
        ),
        (
            f"{abstain['split']} ECE",
            number(abstain.get("ece_after")),
            f"before calibration {number(abstain.get('ece_before'))}",
        ),
    ]
    parts = [cards_html(cards)]
    if abstain.get("note"):
        parts.append(f'<p class="note">{escape(abstain["note"])}</p>')
    smallest = fitted.get("smallest_certifiable_error")
    parts.append(
        f'<p class="muted">Fitted on {fitted.get("images", "?")} validation photos '
        f"({fitted.get('mistakes', '?')} mistakes). The threshold answers a photo only when the calibrated "
        "probability of its label reaches it; it was chosen by Learn then Test so that, with the stated confidence, "
        "the photos answered are wrong at most at the target rate (docs/abstain.md). The smallest target this "
        f"validation split certifies is {'none' if smallest is None else f'{smallest:.2%}'}. On the {split} split it "
        f"abstains on {abstain['images'] - abstain['answered']} photos, {abstain.get('mistakes_abstained_on', 0)} of "
        "which the plain label would have got wrong.</p>"
    )
    reliability = (
        f"Reliability before and after temperature scaling, on validation (where T was fitted) and on {split}: "
        "points on the diagonal mean the probabilities can be taken at their word."
    )
    coverage = (
        f"Answer the most confident {split} photos first: accuracy among those answered against the share "
        "answered. The dot is the threshold chosen on validation, the dashed line the target accuracy."
    )
    abstained = "The photos it answers “unsure” on, least sure first, as the model saw them."
    parts.append(figures_html(run, [("reliability_calibrated", reliability)], wide=True))
    parts.append(figures_html(run, [("coverage_accuracy", coverage)]))
    parts.append(figures_html(run, [("abstained", abstained)], wide=True))
    return "".join(parts)


def _precise_percent(value):
    # 99.89% and 99.9% differ by the whole goal: two decimals.
    return "—" if value is None else f"{value:.2%}"
