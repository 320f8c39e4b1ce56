"""The run's `report.html`: one self-contained page that opens offline.

Figures are embedded as base64 PNG `data:` URIs and the style sheet is inline;
there is no script, font or style sheet from anywhere else, so the file can be
mailed or opened from a USB stick. It shows whatever the run folder holds:
right after training the config, data and curves, after `catsdogs evaluate`
also the metrics, diagnostics, mistakes and Grad-CAM examples.
"""

import base64
import html
import json
import time
from pathlib import Path

from catsdogs.data.summary import MANIFEST_NAME
from catsdogs.fileio import atomic_write_text
from catsdogs.runs import EVALUATION_KEY, RunDir

LIST_LIMIT = 20
STYLE = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --accent: #2f6fb0; --soft: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: linear-gradient(120deg, #1d3f63, #2f6fb0); color: #fff; padding: 28px 40px 22px; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 650; }
header p { margin: 0; opacity: .85; }
nav { position: sticky; top: 0; z-index: 1; background: #fff; border-bottom: 1px solid var(--line); padding: 8px 40px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 18px; font-size: 14px; }
main { max-width: 1240px; margin: 0 auto; padding: 8px 40px 40px; }
section { padding-top: 18px; border-bottom: 1px solid var(--line); padding-bottom: 18px; }
h2 { font-size: 20px; margin: 8px 0 12px; }
h3 { font-size: 16px; margin: 16px 0 8px; color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; }
.card { background: var(--soft); border: 1px solid var(--line); border-radius: 10px; padding: 12px 16px; }
.card .label { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.card .value { font-size: 26px; font-weight: 650; }
.card .detail { font-size: 13px; color: var(--muted); }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 12px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: var(--soft); font-weight: 600; }
tbody tr:nth-child(even) { background: #fafbfc; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 18px; align-items: start; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 10px; padding: 10px; background: #fff; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: 13px; color: var(--muted); padding-top: 6px; }
.wide { grid-column: 1 / -1; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 14px; border-radius: 4px; }
.muted { color: var(--muted); }
code { background: var(--soft); padding: 1px 5px; border-radius: 4px; font-size: 13px; }
.config { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 0 24px; }
footer { color: var(--muted); font-size: 13px; padding: 18px 40px; max-width: 1240px; margin: 0 auto; }
"""


def write_report(run_dir):
    """Render the run folder's report.html from what the folder holds, and write it atomically.

    Training calls this at the end of every run and `catsdogs evaluate` calls it again
    once the evaluation figures exist.

    Args:
        run_dir: the run folder, as a path or a `RunDir`.

    Returns:
        The path of report.html.

    Raises:
        CatsdogsError: if the folder is not a run folder.
    """
    run = RunDir.open(run_dir.path if isinstance(run_dir, RunDir) else run_dir)
    atomic_write_text(run.report_path, render_report(run))
    return run.report_path


def render_report(run):
    """Return the report page for a `RunDir` as an HTML string."""
    info = run.read_run_info()
    metrics = _read_json(run.metrics_path) or {}
    evaluations = metrics.get(EVALUATION_KEY, {})
    evaluated = evaluations.get(evaluations.get("latest")) if evaluations else None
    manifest = _read_json(Path(info["data_dir"]) / MANIFEST_NAME) if info.get("data_dir") else None
    sections = [
        ("summary", "Summary", _summary_section(run, info, metrics, evaluated)),
        ("data", "Data", _data_section(info, metrics, manifest)),
        ("training", "Training", _training_section(run, metrics)),
        ("metrics", "Metrics", _metrics_section(evaluated)),
        ("diagnostics", "Diagnostics", _diagnostics_section(run, evaluated)),
        ("mistakes", "Misclassified", _mistakes_section(run) if evaluated else _not_evaluated()),
        ("gradcam", "Grad-CAM", _gradcam_section(run) if evaluated else _not_evaluated()),
        ("config", "Configuration", _config_section(run)),
    ]
    navigation = "".join(f'<a href="#{key}">{title}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{title}</h2>{content}</section>' for key, title, content in sections)
    versions = ", ".join(f"{name} {version}" for name, version in info.get("versions", {}).items())
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>catsdogs report: {_e(run.path.name)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{_e(run.path.name)}</h1><p>model <b>{_e(info.get('model') or metrics.get('model') or '?')}</b>"
        f" · status {_e(info.get('status', 'unknown'))} · started {_e(info.get('started', '?'))}</p></header>"
        f"<nav>{navigation}</nav><main>{body}</main>"
        f"<footer>Written by catsdogs on {time.strftime('%Y-%m-%d %H:%M')}. {_e(versions)}</footer></body></html>\n"
    )


def _summary_section(run, info, metrics, evaluated):
    if not evaluated:
        cards = [("validation accuracy", _percent(metrics.get("validation", {}).get("accuracy")), "from training")]
        if metrics.get("test"):
            cards.append(("test accuracy", _percent(metrics["test"]["accuracy"]), "from training"))
        cards.append(("epochs", str(metrics.get("epochs_done", "—")), f"best epoch {metrics.get('best_epoch', '—')}"))
        return _cards(cards) + _not_evaluated()
    decided = evaluated["at_decision_threshold"]
    interval = decided["accuracy_interval"]
    half_width = (interval["high"] - interval["low"]) / 2
    averages = decided["macro_avg"]
    multiclass = evaluated["decision_rule"] == "argmax"
    interval_text = f"±{half_width * 100:.1f} pts · 95% CI {_percent(interval['low'])}–{_percent(interval['high'])}"
    averages_text = f"precision {_number(averages['precision'])} · recall {_number(averages['recall'])}"
    auc_text = "one-vs-rest, macro" if multiclass else f"positive class: {evaluated.get('positive_class')}"
    cards = [
        (f"{evaluated['split']} accuracy", _percent(decided["accuracy"]), interval_text),
        ("macro F1", _number(averages["f1"]), averages_text),
        ("ROC-AUC", _number(evaluated.get("roc_auc")), auc_text),
        ("PR-AUC", _number(evaluated.get("pr_auc")), "average precision"),
        ("log loss", _number(evaluated["log_loss"]), f"Brier {_number(evaluated['brier'])}"),
        ("images", str(evaluated["num_examples"]), f"{decided['num_examples'] - decided['num_correct']} mistakes"),
    ]
    where = f"Evaluated on <code>{_e(evaluated.get('data_dir', ''))}</code>, split <b>{_e(evaluated['split'])}</b>."
    return _cards(cards) + f'<p class="muted">{where}</p>'


def _data_section(info, metrics, manifest):
    parts = [f"<p>Data folder: <code>{_e(info.get('data_dir', 'not recorded'))}</code></p>"]
    if manifest:
        arguments = manifest.get("arguments", {})
        counts = manifest.get("counts", {})
        class_names = arguments.get("class_names") or sorted({name for split in counts.values() for name in split})
        rows = []
        for split in ("train", "validation", "test"):
            by_class = counts.get(split, {})
            rows.append([split, *[by_class.get(name, 0) for name in class_names], sum(by_class.values())])
        parts.append(
            f"<p>Prepared from <code>{_e(arguments.get('source', '?'))}</code> with the "
            f"<b>{_e(arguments.get('split', '?'))}</b> split.</p>"
        )
        parts.append(_table(["split", *class_names, "total"], rows))
        files = manifest.get("files", [])
        quarantined = [entry for entry in files if entry.get("status") == "quarantined"]
        duplicates = manifest.get("duplicate_groups", [])
        parts.append(
            f"<p><b>{len(quarantined)}</b> file(s) quarantined, <b>{len(duplicates)}</b> group(s) of identical "
            "files kept within one split.</p>"
        )
        if quarantined:
            rows = [[entry.get("source"), entry.get("reason")] for entry in quarantined[:LIST_LIMIT]]
            parts.append("<h3>Quarantined files</h3>" + _table(["file", "reason"], rows) + _more(len(quarantined)))
        if duplicates:
            rows = [[group.get("split"), " = ".join(group.get("files", []))] for group in duplicates[:LIST_LIMIT]]
            parts.append("<h3>Duplicate groups</h3>" + _table(["split", "files"], rows) + _more(len(duplicates)))
    elif metrics.get("images"):
        parts.append(_table(["split", "images"], [[split, count] for split, count in metrics["images"].items()]))
        parts.append(
            '<p class="muted">No manifest.json in the data folder, so quarantined files and duplicates are unknown.</p>'
        )
    else:
        parts.append('<p class="muted">No data summary is available.</p>')
    return "".join(parts)


def _training_section(run, metrics):
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
                [f"{split} loss / accuracy at the end", f"{scores['loss']:.4f} / {_percent(scores['accuracy'])}"]
            )
    figures = [
        (run.history_figure_path, "Accuracy, loss and learning rate per epoch, train against validation."),
        (run.augmentation_figure_path, "What augmentation does to a few training photos."),
    ]
    return _table(["", ""], rows, header=False) + _figures_html(run, figures, wide=True)


def _metrics_section(evaluated):
    if not evaluated:
        return _not_evaluated()
    decided = evaluated["at_decision_threshold"]
    rows = [_threshold_row("configured threshold" if decided["threshold"] is not None else "argmax", decided)]
    selected = evaluated.get("selected_thresholds")
    if selected:
        rows.append(_threshold_row("best F1 on validation", selected["best_f1"]))
        rows.append(_threshold_row("Youden's J on validation", selected["youden_j"]))
    headers = ["rule", "threshold", "accuracy", "95% interval", "macro precision", "macro recall", "macro F1"]
    parts = ["<h3>By decision threshold</h3>", _table(headers, rows)]
    if selected:
        if selected["in_sample"]:
            note = " (in-sample: the evaluated split is the validation split)"
        else:
            note = ", then applied unchanged"
        parts.append(
            f'<p class="muted">Thresholds chosen on {selected["chosen_on_examples"]} {_e(selected["chosen_on"])} '
            f"images{note}; never on test.</p>"
        )
        if evaluated.get("threshold_note"):
            parts.append(f'<p class="note">{_e(evaluated["threshold_note"])}.</p>')
    parts.append("<h3>Per class, at the configured threshold</h3>")
    parts.append(_per_class_table(evaluated, decided))
    confusion = decided["confusion_matrix"]
    rows = [
        [name, *[f"{count} ({rate:.1%})" for count, rate in zip(counts, rates)]]
        for name, counts, rates in zip(confusion["class_names"], confusion["counts"], confusion["row_rates"])
    ]
    parts.append("<h3>Confusion matrix (rows: true class, columns: predicted class)</h3>")
    parts.append(_table(["true \\ predicted", *confusion["class_names"]], rows))
    unreadable = evaluated.get("unreadable")
    if unreadable:
        names = ", ".join(_e(Path(row["file"]).name) for row in unreadable[:LIST_LIMIT])
        parts.append(f'<p class="note">{len(unreadable)} image(s) could not be read and are left out: {names}</p>')
    return "".join(parts)


def _per_class_table(evaluated, decided):
    areas = evaluated.get("per_class", {})
    rows = [
        [
            name,
            _number(scores["precision"]),
            _number(scores["recall"]),
            _number(scores["f1"]),
            scores["support"],
            _number(areas.get(name, {}).get("roc_auc")),
            _number(areas.get(name, {}).get("pr_auc")),
        ]
        for name, scores in decided["per_class"].items()
    ]
    for average in ("macro", "weighted"):
        scores = decided[f"{average}_avg"]
        rows.append(
            [
                f"{average} average",
                _number(scores["precision"]),
                _number(scores["recall"]),
                _number(scores["f1"]),
                decided["num_examples"],
                "",
                "",
            ]
        )
    headers = ["class", "precision", "recall", "F1", "support", "ROC-AUC (vs rest)", "PR-AUC (vs rest)"]
    return _table(headers, rows)


def _threshold_row(rule, entry):
    interval = entry["accuracy_interval"]
    threshold = "—" if entry["threshold"] is None else f"{entry['threshold']:.3f}"
    averages = entry["macro_avg"]
    return [
        rule,
        threshold,
        _percent(entry["accuracy"]),
        f"{_percent(interval['low'])} – {_percent(interval['high'])}",
        _number(averages["precision"]),
        _number(averages["recall"]),
        _number(averages["f1"]),
    ]


def _diagnostics_section(run, evaluated):
    if not evaluated:
        return _not_evaluated()
    return _figures_html(
        run,
        [
            ("confusion_matrix", "Counts and row rates: each row is one true class."),
            ("roc", "ROC curve; markers show the configured threshold and those chosen on validation."),
            ("precision_recall", "Precision against recall; the dotted line is what guessing achieves."),
            ("calibration", "When the model says 80%, is it right 80% of the time? Points on the diagonal mean yes."),
            ("probability_histogram", "How the predicted probabilities spread for each true class."),
        ],
    )


def _mistakes_section(run):
    caption = "The most confident mistakes: each photo as the model saw it, with its true and predicted label."
    return _figures_html(run, [("misclassified", caption)], wide=True)


def _gradcam_section(run):
    paths = run.gradcam_figure_paths()
    if not paths:
        return '<p class="muted">No Grad-CAM examples were written.</p>'
    intro = "<p>Where the model looked: warm colours mark the regions that raised the score of the predicted class.</p>"
    return intro + _figures_html(run, [(path, "") for path in paths])


def _config_section(run):
    config = run.read_config()
    tables = []
    for section, values in config.items():
        if isinstance(values, dict):
            rows = [[key, json.dumps(value)] for key, value in values.items()]
            tables.append(f"<div><h3>[{_e(section)}]</h3>{_table(['key', 'value'], rows)}</div>")
    return f'<div class="config">{"".join(tables)}</div>'


def _figures_html(run, figures, wide=False):
    items = []
    for figure, caption in figures:
        path = Path(figure) if isinstance(figure, Path) else run.evaluation_figure_path(figure)
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            items.append(
                f'<figure class="{"wide" if wide else ""}"><img alt="{_e(path.stem)}" data-figure="{_e(path.stem)}" '
                f'src="data:image/png;base64,{data}"><figcaption>{_e(caption)}</figcaption></figure>'
            )
    return f'<div class="figures">{"".join(items)}</div>' if items else '<p class="muted">No figure yet.</p>'


def _not_evaluated():
    return (
        '<p class="note">Not evaluated yet. Run <code>catsdogs evaluate RUN</code> for metrics, diagnostics, '
        "mistakes and Grad-CAM.</p>"
    )


def _cards(cards):
    items = "".join(
        f'<div class="card"><div class="label">{_e(label)}</div><div class="value">{_e(value)}</div>'
        f'<div class="detail">{_e(detail)}</div></div>'
        for label, value, detail in cards
    )
    return f'<div class="cards">{items}</div>'


def _table(headers, rows, header=True):
    head = "<thead><tr>" + "".join(f"<th>{_e(cell)}</th>" for cell in headers) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _more(count):
    return f'<p class="muted">… and {count - LIST_LIMIT} more in manifest.json.</p>' if count > LIST_LIMIT else ""


def _read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _percent(value):
    return "—" if value is None else f"{value * 100:.1f}%"


def _number(value):
    return "—" if value is None else f"{value:.3f}"


def _e(value):
    return html.escape(str(value))
