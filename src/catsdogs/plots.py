"""Every matplotlib call of the project: functions that take numbers and return Figures.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never
through pyplot, so nothing here needs a display or keeps global state, and a
figure is freed as soon as it is no longer referenced.
"""

import io
import math

import numpy
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _new_figure(width, height):
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_png_bytes(figure, dpi=100):
    """Render a Figure as PNG bytes (the run folder writes them atomically)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def history_figure(history, *, title=None):
    """Plot training curves: accuracy and loss, train vs validation, and the learning rate.

    Args:
        history: {column: [value per epoch]} as read from history.csv; uses the
            columns epoch, accuracy, val_accuracy, loss, val_loss and learning_rate
            where present.
        title: optional figure title, e.g. the run name.

    Returns:
        A Figure with three panels side by side.
    """
    epochs_done = len(next(iter(history.values()), []))
    epochs = [int(value) + 1 for value in history.get("epoch", range(epochs_done))]
    figure = _new_figure(15, 4.2)
    accuracy_axes, loss_axes, rate_axes = figure.subplots(1, 3)
    for axes, metric, label in ((accuracy_axes, "accuracy", "Accuracy"), (loss_axes, "loss", "Loss")):
        for column, name, style in ((metric, "train", "o-"), (f"val_{metric}", "validation", "s-")):
            if column in history:
                axes.plot(epochs, history[column], style, markersize=3, label=name)
        axes.set_title(f"{label}: train vs validation")
        axes.set_xlabel("epoch")
        axes.set_ylabel(label.lower())
        axes.grid(alpha=0.3)
        axes.legend()
    if "loss" in history and history["loss"]:
        # ln 2 is where a binary classifier that has learned nothing sits; the seed's run never left it.
        loss_axes.axhline(math.log(2), color="grey", linestyle=":", linewidth=1, label="ln 2 (chance)")
        loss_axes.legend()
    if "learning_rate" in history:
        rates = history["learning_rate"]
        rate_axes.plot(epochs, rates, "o-", markersize=3, color="tab:green")
        if all(rate > 0 for rate in rates):
            rate_axes.set_yscale("log")
    rate_axes.set_title("Learning rate at epoch end")
    rate_axes.set_xlabel("epoch")
    rate_axes.set_ylabel("learning rate")
    rate_axes.grid(alpha=0.3, which="both")
    for axes in (accuracy_axes, loss_axes, rate_axes):
        # Epochs are whole numbers; a short run gets one tick per epoch rather than fractions.
        if epochs and len(epochs) <= 20:
            axes.set_xticks(epochs)
            axes.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
        else:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        figure.suptitle(title)
    return figure


def augmentation_figure(
    originals, augmented, *, row_titles=None, title="Augmentation: original, then augmented versions"
):
    """Show a few training photos, each followed by several augmented versions of it.

    Args:
        originals: array (rows, height, width, 3), pixels 0..255.
        augmented: array (rows, versions, height, width, 3), pixels 0..255.
        row_titles: optional label per row, e.g. the class name.
        title: the figure title.

    Returns:
        A Figure with one row per photo.
    """
    originals = numpy.asarray(originals)
    augmented = numpy.asarray(augmented)
    rows, versions = augmented.shape[:2]
    columns = versions + 1
    figure = _new_figure(1.9 * columns, 1.95 * rows + 0.4)
    grid = figure.subplots(rows, columns, squeeze=False)
    for row in range(rows):
        images = [originals[row]] + [augmented[row, version] for version in range(versions)]
        for column, image in enumerate(images):
            axes = grid[row, column]
            axes.imshow(numpy.clip(image, 0, 255).astype(numpy.uint8))
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title("original" if column == 0 else f"augmented {column}", fontsize=9)
        if row_titles is not None:
            grid[row, 0].set_ylabel(str(row_titles[row]), fontsize=9)
    figure.suptitle(title)
    return figure
