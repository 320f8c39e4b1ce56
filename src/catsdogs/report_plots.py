"""Figures for evaluation and interpretation: functions that take numbers and return Figures.

Confusion matrix, ROC, precision-recall, reliability, probability histograms,
the misclassified gallery, Grad-CAM overlays, feature-map grids and the
validation-curve overlay of `compare`. Like `plots`, everything is built on
`matplotlib.figure.Figure` with the Agg canvas, never pyplot, so nothing needs
a display or keeps global state.
"""

import math
from pathlib import Path

import numpy
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from catsdogs.choices import DEFAULT_THRESHOLD
from catsdogs.fileio import atomic_write_bytes
from catsdogs.plots import figure_png_bytes

CLASS_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
HEATMAP_COLORMAP = "turbo"
HEATMAP_OPACITY = 0.6


def new_figure(width, height):
    """Return an empty constrained-layout Figure with an Agg canvas."""
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path, dpi=100):
    """Write a Figure as a PNG atomically (readers never see half a file) and return the path."""
    atomic_write_bytes(path, figure_png_bytes(figure, dpi=dpi))
    return Path(path)


def confusion_matrix_figure(confusion, *, title="Confusion matrix"):
    """Draw the confusion matrix: rows are true classes, columns predicted; each cell shows count and row rate.

    Args:
        confusion: the "confusion_matrix" entry of `evaluation.classification_metrics`.
        title: the axes title.
    """
    counts = numpy.asarray(confusion["counts"])
    rates = numpy.asarray(confusion["row_rates"])
    names = confusion["class_names"]
    size = max(3.8, 1.1 * len(names) + 2.2)
    figure = new_figure(size + 0.8, size)
    axes = figure.subplots()
    image = axes.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for row in range(len(names)):
        for column in range(len(names)):
            # White text on the dark cells, black on the light ones, so every number reads.
            color = "white" if rates[row, column] > 0.6 else "black"
            axes.text(
                column,
                row,
                f"{counts[row, column]}\n{rates[row, column]:.1%}",
                ha="center",
                va="center",
                color=color,
                fontsize=11,
            )
    axes.set_xticks(range(len(names)), names, rotation=30 if len(names) > 4 else 0)
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true class (row rate)")
    return figure


def roc_figure(points, *, operating_points=None):
    """Draw ROC curves, one per class (one-vs-rest) or class 1 alone for two classes.

    Args:
        points: the result of `evaluation.curve_points`.
        operating_points: optional {label: (false positive rate, true positive rate)} to mark,
            e.g. the configured threshold and the thresholds chosen on validation.
    """
    figure = new_figure(5.6, 5.0)
    axes = figure.subplots()
    for (name, curve), color in zip(points.items(), CLASS_COLORS):
        axes.plot(curve["fpr"], curve["tpr"], color=color, linewidth=2, label=f"{name} (AUC {curve['roc_auc']:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    for (label, (fpr, tpr)), marker in zip((operating_points or {}).items(), "oDs^v"):
        axes.plot([fpr], [tpr], marker=marker, markersize=8, linestyle="none", markeredgecolor="black", label=label)
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate (recall)")
    axes.set_title("ROC curve" if len(points) == 1 else "ROC curves (one vs rest)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=9)
    return figure


def precision_recall_figure(points):
    """Draw precision-recall curves, with each class's prevalence as the no-skill line."""
    figure = new_figure(5.6, 5.0)
    axes = figure.subplots()
    for (name, curve), color in zip(points.items(), CLASS_COLORS):
        axes.step(
            curve["recall"],
            curve["precision"],
            where="post",
            color=color,
            linewidth=2,
            label=f"{name} (AP {curve['pr_auc']:.3f})",
        )
        axes.axhline(curve["prevalence"], color=color, linestyle=":", linewidth=1)
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(0.0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title("Precision-recall curve (dotted: no-skill level)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize=9)
    return figure


def calibration_figure(mean_predicted, observed, confidences, *, binary=True):
    """Draw a reliability diagram above a histogram of the predicted probabilities.

    Args:
        mean_predicted, observed, confidences: the result of `evaluation.calibration_points`.
        binary: whether the probabilities are P(class 1) (else top-class confidence).
    """
    figure = new_figure(5.6, 6.0)
    curve_axes, count_axes = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    curve_axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    curve_axes.plot(mean_predicted, observed, "o-", color="tab:blue", linewidth=2, label="model")
    curve_axes.set_ylabel("observed frequency of class 1" if binary else "observed accuracy")
    curve_axes.set_title("Calibration (reliability)")
    curve_axes.set_ylim(-0.02, 1.02)
    curve_axes.grid(alpha=0.3)
    curve_axes.legend(loc="upper left", fontsize=9)
    count_axes.hist(confidences, bins=20, range=(0, 1), color="tab:blue", alpha=0.7)
    count_axes.set_xlabel("predicted probability of class 1" if binary else "top-class confidence")
    count_axes.set_ylabel("images")
    return figure


def probability_histogram_figure(probabilities, labels, class_names, *, threshold=DEFAULT_THRESHOLD):
    """Draw, per class, how the predicted probability is spread for its members and for the others.

    Two classes: one panel of P(class 1), one histogram per true class, with the threshold.
    """
    probabilities = numpy.asarray(probabilities)
    labels = numpy.asarray(labels)
    bins = numpy.linspace(0, 1, 26)
    if len(class_names) == 2:
        figure = new_figure(6.4, 4.0)
        axes = figure.subplots()
        for index, (name, color) in enumerate(zip(class_names, CLASS_COLORS)):
            axes.hist(probabilities[labels == index, 1], bins=bins, alpha=0.6, color=color, label=f"true {name}")
        axes.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.2f}")
        axes.set_xlabel(f"predicted probability of '{class_names[1]}'")
        axes.set_ylabel("images")
        axes.set_title("Predicted probability by true class")
        axes.legend(fontsize=9)
        return figure
    columns = min(3, len(class_names))
    rows = math.ceil(len(class_names) / columns)
    figure = new_figure(4.2 * columns, 3.2 * rows)
    grid = figure.subplots(rows, columns, squeeze=False)
    for index, name in enumerate(class_names):
        axes = grid.flat[index]
        axes.hist(probabilities[labels == index, index], bins=bins, alpha=0.6, color="tab:blue", label=f"true {name}")
        axes.hist(probabilities[labels != index, index], bins=bins, alpha=0.6, color="tab:grey", label="other classes")
        axes.set_title(f"P({name})")
        axes.legend(fontsize=8)
    for axes in list(grid.flat)[len(class_names) :]:
        axes.set_visible(False)
    figure.suptitle("Predicted probability of each class, members vs the rest")
    return figure


def misclassified_gallery_figure(examples, *, columns=4, title="Most confident mistakes"):
    """Draw a grid of wrongly classified photos, each titled with its true and predicted label.

    Args:
        examples: list of dicts with "image" (uint8 array), "true", "predicted",
            "probability" (of the predicted class) and "name" (file name).
        columns: photos per row.
        title: the figure title.
    """

    def describe(example):
        caption = (
            f"{_shorten(example.get('name', ''), 28)}\ntrue: {example['true']}\n"
            f"predicted: {example['predicted']} ({example['probability']:.0%})"
        )
        return caption, "firebrick"

    return photo_grid_figure(
        examples, describe=describe, title=title, empty_text="No misclassified images in this split.", columns=columns
    )


def photo_grid_figure(examples, *, describe, title, empty_text, columns=4):
    """Draw photos in a grid, each under the caption `describe` gives it; one line of text when there are none.

    Args:
        examples: dicts, each with "image" (a uint8 array) and whatever `describe` reads.
        describe: example -> (caption, colour of the caption).
        title: the figure title.
        empty_text: what the figure says when `examples` is empty.
        columns: photos per row.
    """
    if not examples:
        figure = new_figure(6, 1.2)
        figure.text(0.5, 0.5, empty_text, ha="center", va="center", fontsize=12)
        return figure
    columns = min(columns, len(examples))
    rows = math.ceil(len(examples) / columns)
    figure = new_figure(3.0 * columns, 3.45 * rows + 0.4)
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes, example in zip(grid.flat, examples):
        axes.imshow(example["image"])
        caption, colour = describe(example)
        axes.set_title(caption, fontsize=9, color=colour)
        axes.set_xticks([])
        axes.set_yticks([])
    for axes in list(grid.flat)[len(examples) :]:
        axes.set_visible(False)
    figure.suptitle(title)
    return figure


def heatmap_overlay(image, heatmap, opacity=HEATMAP_OPACITY):
    """Blend a [0, 1] heatmap (any size) over a uint8 RGB image and return the uint8 result."""
    image = numpy.asarray(image, dtype=numpy.float32)
    heatmap = numpy.asarray(heatmap, dtype=numpy.float32)
    if heatmap.shape != image.shape[:2]:
        # Bilinear, so a heatmap stretched over a large photo stays smooth instead of blocky.
        resized = Image.fromarray(heatmap).resize((image.shape[1], image.shape[0]), Image.Resampling.BILINEAR)
        heatmap = numpy.clip(numpy.asarray(resized), 0.0, 1.0)
    colored = colormaps[HEATMAP_COLORMAP](heatmap)[..., :3] * 255.0
    # Cold regions get a light tint and hot ones the full opacity, so the photo stays readable
    # where the model did not look.
    alpha = (opacity * (0.35 + 0.65 * heatmap))[..., None]
    return numpy.clip((1 - alpha) * image + alpha * colored, 0, 255).astype(numpy.uint8)


def gradcam_figure(image, heatmap, *, title, layer=None):
    """Draw a photo next to its Grad-CAM overlay, titled with the prediction.

    Args:
        image: uint8 RGB array as shown to the model (or the original photo).
        heatmap: [0, 1] array from `interpret.grad_cam`.
        title: e.g. "predicted dogs (93%) · true cats".
        layer: the explained layer, named in the caption.
    """
    figure = new_figure(7.2, 3.9)
    original_axes, overlay_axes = figure.subplots(1, 2)
    original_axes.imshow(numpy.asarray(image, dtype=numpy.uint8))
    original_axes.set_title("photo", fontsize=10)
    overlay_axes.imshow(heatmap_overlay(image, heatmap))
    overlay_axes.set_title(f"Grad-CAM{f' ({layer})' if layer else ''}", fontsize=10)
    for axes in (original_axes, overlay_axes):
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(title, fontsize=11)
    return figure


def feature_map_figure(activations, *, layer, max_channels=32, columns=8):
    """Draw the strongest channels of one layer's activations as a grid.

    Args:
        activations: float array (height, width, channels) for one image.
        layer: the layer's name, for the title.
        max_channels: how many channels to show, strongest mean activation first.
        columns: channels per row.
    """
    activations = numpy.asarray(activations)
    strength = activations.reshape(-1, activations.shape[-1]).mean(axis=0)
    channels = numpy.argsort(-strength, kind="stable")[:max_channels]
    columns = min(columns, len(channels))
    rows = math.ceil(len(channels) / columns)
    figure = new_figure(1.5 * columns, 1.55 * rows + 0.5)
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes, channel in zip(grid.flat, channels):
        axes.imshow(activations[..., channel], cmap="viridis")
        axes.set_title(f"#{channel}", fontsize=7)
    for axes in grid.flat:
        axes.set_xticks([])
        axes.set_yticks([])
    for axes in list(grid.flat)[len(channels) :]:
        axes.set_visible(False)
    height, width, count = activations.shape
    figure.suptitle(f"{layer}: {len(channels)} strongest of {count} channels ({height}x{width})", fontsize=10)
    return figure


def validation_curves_figure(histories):
    """Overlay the validation accuracy and loss of several runs, for `compare`.

    Args:
        histories: {run label: {column: [value per epoch]}} as read from history.csv.
    """
    figure = new_figure(12, 4.4)
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    for (label, history), color in zip(histories.items(), CLASS_COLORS * 4):
        for axes, column in ((accuracy_axes, "val_accuracy"), (loss_axes, "val_loss")):
            values = history.get(column)
            if values:
                axes.plot(range(1, len(values) + 1), values, "o-", markersize=3, color=color, label=label)
    for axes, name in ((accuracy_axes, "accuracy"), (loss_axes, "loss")):
        axes.set_title(f"Validation {name}")
        axes.set_xlabel("epoch")
        axes.set_ylabel(f"validation {name}")
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
        if axes.lines:
            axes.legend(fontsize=8)
    return figure


def _shorten(text, width):
    return text if len(text) <= width else "…" + text[-(width - 1) :]
