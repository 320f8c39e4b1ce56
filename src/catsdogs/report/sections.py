"""The sections of the run's report.html, each rendered as HTML from the run folder's files.

Each `*_section` function returns the inside of one `<section>` of the page that
`report.render_report` assembles. They read what training, `catsdogs evaluate`
and `catsdogs export` wrote and compute nothing: every number on the page is a
number from one of the run's files, only formatted.
"""

import json
from pathlib import Path

from catsdogs.data.summary import imbalance_warning

# The Deployment section has its own module; `report.render_report` reaches it through this one.
from catsdogs.report.deployment import deployment_section as deployment_section
from catsdogs.report.markup import (
    LIST_LIMIT,
    cards_html,
    escape,
    figures_html,
    more_note,
    number,
    percent,
    table_html,
)
from catsdogs.report.markup import read_json as read_json  # `report.render_report` reads files through this module.
from catsdogs.runs import RunDir


def summary_section(run: RunDir, info: dict, metrics: dict, evaluated: dict | None) -> str:
    """Headline cards: the evaluated accuracy and scores, or training's own numbers before evaluation."""
    if not evaluated:
        cards = [("validation accuracy", percent(metrics.get("validation", {}).get("accuracy")), "from training")]
        if metrics.get("test"):
            cards.append(("test accuracy", percent(metrics["test"]["accuracy"]), "from training"))
        cards.append(("epochs", str(metrics.get("epochs_done", "—")), f"best epoch {metrics.get('best_epoch', '—')}"))
        return cards_html(cards) + not_evaluated()
    decided = evaluated["at_decision_threshold"]
    interval = decided["accuracy_interval"]
    half_width = (interval["high"] - interval["low"]) / 2
    averages = decided["macro_avg"]
    multiclass = evaluated["decision_rule"] == "argmax"
    interval_text = f"±{half_width * 100:.1f} pts · 95% CI {percent(interval['low'])}–{percent(interval['high'])}"
    averages_text = f"precision {number(averages['precision'])} · recall {number(averages['recall'])}"
    auc_text = "one-vs-rest, macro" if multiclass else f"positive class: {evaluated.get('positive_class')}"
    cards = [
        (f"{evaluated['split']} accuracy", percent(decided["accuracy"]), interval_text),
        ("macro F1", number(averages["f1"]), averages_text),
        ("ROC-AUC", number(evaluated.get("roc_auc")), auc_text),
        ("PR-AUC", number(evaluated.get("pr_auc")), "average precision"),
        ("log loss", number(evaluated["log_loss"]), f"Brier {number(evaluated['brier'])}"),
        ("images", str(evaluated["num_examples"]), f"{decided['num_examples'] - decided['num_correct']} mistakes"),
    ]
    where = (
        f"Evaluated on <code>{escape(evaluated.get('data_dir', ''))}</code>, split <b>{escape(evaluated['split'])}</b>."
    )
    return cards_html(cards) + f'<p class="muted">{where}</p>'


def data_section(info: dict, metrics: dict, manifest: dict | None) -> str:
    """The data folder: images per split and class, quarantined files and duplicate groups."""
    parts = [f"<p>Data folder: <code>{escape(info.get('data_dir', 'not recorded'))}</code></p>"]
    if manifest:
        arguments = manifest.get("arguments", {})
        counts = manifest.get("counts", {})
        class_names = arguments.get("class_names") or sorted({name for split in counts.values() for name in split})
        rows = []
        for split in ("train", "validation", "test"):
            by_class = counts.get(split, {})
            rows.append([split, *[by_class.get(name, 0) for name in class_names], sum(by_class.values())])
        parts.append(
            f"<p>Prepared from <code>{escape(arguments.get('source', '?'))}</code> with the "
            f"<b>{escape(arguments.get('split', '?'))}</b> split.</p>"
        )
        parts.append(table_html(["split", *class_names, "total"], rows))
        weighting = info.get("class_weight") or {}
        warning = imbalance_warning(counts.get("train", {}), weights=weighting.get("weights"))
        if warning:
            parts.append(f'<p class="warning">{escape(warning)}</p>')
        files = manifest.get("files", [])
        quarantined = [entry for entry in files if entry.get("status") == "quarantined"]
        duplicates = manifest.get("duplicate_groups", [])
        parts.append(
            f"<p><b>{len(quarantined)}</b> file(s) quarantined, <b>{len(duplicates)}</b> group(s) of identical "
            "files kept within one split.</p>"
        )
        if quarantined:
            rows = [[entry.get("source"), entry.get("reason")] for entry in quarantined[:LIST_LIMIT]]
            parts.append(
                "<h3>Quarantined files</h3>" + table_html(["file", "reason"], rows) + more_note(len(quarantined))
            )
        if duplicates:
            rows = [[group.get("split"), " = ".join(group.get("files", []))] for group in duplicates[:LIST_LIMIT]]
            parts.append(
                "<h3>Duplicate groups</h3>" + table_html(["split", "files"], rows) + more_note(len(duplicates))
            )
    elif metrics.get("images"):
        parts.append(table_html(["split", "images"], [[split, count] for split, count in metrics["images"].items()]))
        parts.append(
            '<p class="muted">No manifest.json in the data folder, so quarantined files and duplicates are unknown.</p>'
        )
    else:
        parts.append('<p class="muted">No data summary is available.</p>')
    return "".join(parts)


def training_section(run: RunDir, metrics: dict) -> str:
    """Epochs, stopping reason, time and end-of-training scores, with the history and augmentation figures."""
    rows = [
        ["epochs run", metrics.get("epochs_done", "—")],
        ["best epoch (lowest validation loss)", metrics.get("best_epoch", "—")],
        ["stopped because", metrics.get("stop_reason", "—")],
        ["training time", f"{metrics['fit_seconds'] / 60:.1f} min" if metrics.get("fit_seconds") is not None else "—"],
    ]
    for split in ("validation", "test"):
        if metrics.get(split):
            scores = metrics[split]
            rows.append(
                [f"{split} loss / accuracy at the end", f"{scores['loss']:.4f} / {percent(scores['accuracy'])}"]
            )
    figures = [
        (run.history_figure_path, "Accuracy, loss and learning rate per epoch, train against validation."),
        (run.augmentation_figure_path, "What augmentation does to a few training photos."),
    ]
    return table_html(["", ""], rows, header=False) + figures_html(run, figures, wide=True)


def metrics_section(evaluated: dict | None) -> str:
    """Scores by decision threshold and per class, and the confusion matrix."""
    if not evaluated:
        return not_evaluated()
    decided = evaluated["at_decision_threshold"]
    rows = [_threshold_row("configured threshold" if decided["threshold"] is not None else "argmax", decided)]
    selected = evaluated.get("selected_thresholds")
    if selected:
        rows.append(_threshold_row("best F1 on validation", selected["best_f1"]))
        rows.append(_threshold_row("Youden's J on validation", selected["youden_j"]))
    headers = ["rule", "threshold", "accuracy", "95% interval", "macro precision", "macro recall", "macro F1"]
    parts = ["<h3>By decision threshold</h3>", table_html(headers, rows)]
    if selected:
        if selected["in_sample"]:
            note = " (in-sample: the evaluated split is the validation split)"
        else:
            note = ", then applied unchanged"
        parts.append(
            f'<p class="muted">Thresholds chosen on {selected["chosen_on_examples"]} {escape(selected["chosen_on"])} '
            f"images{note}; never on test.</p>"
        )
        if evaluated.get("threshold_note"):
            parts.append(f'<p class="note">{escape(evaluated["threshold_note"])}.</p>')
    parts.append("<h3>Per class, at the configured threshold</h3>")
    parts.append(_per_class_table(evaluated, decided))
    confusion = decided["confusion_matrix"]
    rows = [
        [name, *[f"{count} ({rate:.1%})" for count, rate in zip(counts, rates)]]
        for name, counts, rates in zip(confusion["class_names"], confusion["counts"], confusion["row_rates"])
    ]
    parts.append("<h3>Confusion matrix (rows: true class, columns: predicted class)</h3>")
    parts.append(table_html(["true \\ predicted", *confusion["class_names"]], rows))
    unreadable = evaluated.get("unreadable")
    if unreadable:
        names = ", ".join(escape(Path(row["file"]).name) for row in unreadable[:LIST_LIMIT])
        parts.append(f'<p class="note">{len(unreadable)} image(s) could not be read and are left out: {names}</p>')
    return "".join(parts)


def _per_class_table(evaluated, decided):
    areas = evaluated.get("per_class", {})
    rows = [
        [
            name,
            number(scores["precision"]),
            number(scores["recall"]),
            number(scores["f1"]),
            scores["support"],
            number(areas.get(name, {}).get("roc_auc")),
            number(areas.get(name, {}).get("pr_auc")),
        ]
        for name, scores in decided["per_class"].items()
    ]
    for average in ("macro", "weighted"):
        scores = decided[f"{average}_avg"]
        rows.append(
            [
                f"{average} average",
                number(scores["precision"]),
                number(scores["recall"]),
                number(scores["f1"]),
                decided["num_examples"],
                "",
                "",
            ]
        )
    headers = ["class", "precision", "recall", "F1", "support", "ROC-AUC (vs rest)", "PR-AUC (vs rest)"]
    return table_html(headers, rows)


def _threshold_row(rule, entry):
    interval = entry["accuracy_interval"]
    threshold = "—" if entry["threshold"] is None else f"{entry['threshold']:.3f}"
    averages = entry["macro_avg"]
    return [
        rule,
        threshold,
        percent(entry["accuracy"]),
        f"{percent(interval['low'])} – {percent(interval['high'])}",
        number(averages["precision"]),
        number(averages["recall"]),
        number(averages["f1"]),
    ]


def diagnostics_section(run: RunDir, evaluated: dict | None) -> str:
    """The evaluation figures: confusion matrix, ROC, precision-recall, calibration, probability histogram."""
    if not evaluated:
        return not_evaluated()
    return figures_html(
        run,
        [
            ("confusion_matrix", "Counts and row rates: each row is one true class."),
            ("roc", "ROC curve; markers show the configured threshold and those chosen on validation."),
            ("precision_recall", "Precision against recall; the dotted line is what guessing achieves."),
            ("calibration", "When the model says 80%, is it right 80% of the time? Points on the diagonal mean yes."),
            ("probability_histogram", "How the predicted probabilities spread for each true class."),
        ],
    )


def mistakes_section(run: RunDir) -> str:
    """The gallery of the most confident mistakes."""
    caption = "The most confident mistakes: each photo as the model saw it, with its true and predicted label."
    return figures_html(run, [("misclassified", caption)], wide=True)


def gradcam_section(run: RunDir) -> str:
    """The Grad-CAM examples written by `catsdogs evaluate`."""
    paths = run.gradcam_figure_paths()
    if not paths:
        return '<p class="muted">No Grad-CAM examples were written.</p>'
    intro = "<p>Where the model looked: warm colours mark the regions that raised the score of the predicted class.</p>"
    return intro + figures_html(run, [(path, "") for path in paths])


def config_section(run: RunDir) -> str:
    """The resolved config, one table per section."""
    config = run.read_config()
    tables = []
    for section, values in config.items():
        if isinstance(values, dict):
            rows = [[key, json.dumps(value)] for key, value in values.items()]
            tables.append(f"<div><h3>[{escape(section)}]</h3>{table_html(['key', 'value'], rows)}</div>")
    return f'<div class="config">{"".join(tables)}</div>'


def not_evaluated() -> str:
    """The note shown in place of what only `catsdogs evaluate` writes."""
    return (
        '<p class="note">Not evaluated yet. Run <code>catsdogs evaluate RUN</code> for metrics, diagnostics, '
        "mistakes and Grad-CAM.</p>"
    )
