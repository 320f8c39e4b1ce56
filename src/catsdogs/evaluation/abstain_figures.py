"""The figures of the "Unsure answers" report section: calibration before and after, coverage, abstained photos.

Built like every figure of `report_plots`: a `matplotlib.figure.Figure` on the
Agg canvas, never pyplot. `evaluation.abstaining` writes them to the paths
`runs.RunDir.evaluation_figure_path` names.
"""

import numpy

from catsdogs.evaluation.calibration import expected_calibration_error, reliability_points
from catsdogs.report_plots import new_figure, photo_grid_figure

RIGHT_COLOUR = "tab:green"
WRONG_COLOUR = "firebrick"


def reliability_before_after_figure(panels, *, temperature):
    """Reliability diagrams before and after temperature scaling, one panel per split.

    Args:
        panels: (split name, raw confidences, calibrated confidences, correct) per split: the predicted
            class's probability before and after calibration, and whether the prediction was right.
        temperature: the fitted temperature, for the title.
    """
    figure = new_figure(5.2 * len(panels), 4.8)
    grid = figure.subplots(1, len(panels), squeeze=False)
    for axes, (split, raw, calibrated, correct) in zip(grid.flat, panels):
        axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
        for confidences, colour, name in ((raw, "tab:grey", "before"), (calibrated, "tab:blue", "after")):
            mean_confidence, accuracy, _ = reliability_points(confidences, correct)
            error = expected_calibration_error(confidences, correct)
            axes.plot(mean_confidence, accuracy, "o-", color=colour, label=f"{name} (ECE {error:.4f})")
        axes.set_xlabel("probability of the predicted class")
        axes.set_ylabel("observed accuracy")
        axes.set_title(f"{split} ({len(correct)} photos)")
        axes.set_xlim(0.45 if _two_class_range(raw) and _two_class_range(calibrated) else -0.02, 1.02)
        axes.set_ylim(-0.02, 1.02)
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize=9)
    figure.suptitle(f"Calibration before and after temperature scaling (T = {temperature:.3f}, fitted on validation)")
    return figure


def coverage_accuracy_figure(coverage, accuracy, *, chosen, target_error, split):
    """Accuracy among the answered photos against the fraction answered, most confident answered first.

    Args:
        coverage, accuracy: the selective curve (`calibration.selective_curve`).
        chosen: (coverage, selective accuracy) of the threshold chosen on validation, or None when off.
        target_error: the error rate among answered photos the threshold was chosen for.
        split: the split's name, for the title.
    """
    # Wide and low: the report shows it across the page, and the interesting part is the last few percent.
    figure = new_figure(10.5, 4.0)
    axes = figure.subplots()
    axes.plot(numpy.asarray(coverage) * 100, numpy.asarray(accuracy) * 100, color="tab:blue", label=split)
    axes.axhline((1 - target_error) * 100, color="black", linestyle="--", linewidth=1, label="target accuracy")
    if chosen is not None and chosen[1] is not None:
        axes.plot(chosen[0] * 100, chosen[1] * 100, "o", color="firebrick", label="threshold chosen on validation")
    low = min(float(numpy.min(accuracy)) if len(accuracy) else 1.0, 1 - target_error)
    axes.set_ylim(max(0.0, 100 * low - 0.5), 100.05)
    axes.set_xlim(0, 100.5)
    axes.set_xlabel("photos answered (%)")
    axes.set_ylabel("accuracy on the photos answered (%)")
    axes.set_title(f"Coverage against accuracy on the {split} split")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize=9)
    return figure


def abstained_gallery_figure(examples, *, columns=4, title="Photos it abstains on"):
    """Thumbnails of photos answered "unsure", each titled with its true class and what the model leaned to.

    Args:
        examples: dicts with "image" (uint8 array), "name", "true", "predicted" and "calibrated_probability".
        columns: photos per row.
        title: the figure title.
    """

    def describe(example):
        name = example.get("name", "")
        caption = (
            f"{name if len(name) <= 28 else name[:27] + '…'}\ntrue: {example['true']}\n"
            f"leaned to: {example['predicted']} ({example['calibrated_probability']:.0%})"
        )
        return caption, RIGHT_COLOUR if example["true"] == example["predicted"] else WRONG_COLOUR

    return photo_grid_figure(
        examples,
        describe=describe,
        title=f"{title}; green: the label would have been right, red: wrong",
        empty_text="It abstains on no photo of this split.",
        columns=columns,
    )


def _two_class_range(confidences):
    # With two classes the predicted class's probability is never below one half: zoom onto [0.5, 1].
    return len(confidences) > 0 and float(numpy.min(confidences)) >= 0.5
