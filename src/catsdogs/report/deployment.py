"""The Deployment section of report.html: every export of the run, with its verification against Keras.

It reads the export.json of each folder under RUN/export/ and computes
nothing. A float32 export is shown with its agreement with Keras; a quantized
one (int8, float16) with the Keras accuracy that bounds it and its float32
counterpart's accuracy, size and speed beside its own.
"""

from catsdogs.report.markup import escape, percent, read_json
from catsdogs.runs import EXPORT_DIR, EXPORT_RECORD_FILE, RunDir


def deployment_section(run: RunDir) -> str:
    """Every export under RUN/export/*/ with its verification against Keras, or how to make one.

    Args:
        run: the run folder.

    Returns:
        The section's HTML: one table row per export folder that has an export.json, an unverified
        export shown in red and named in a warning above the table. A quantized export shows the Keras
        accuracy that bounds it, and its float32 counterpart's accuracy, size and speed beside its own.
    """
    exports = _read_exports(run)
    if not exports:
        return '<p class="muted">No export yet: <code>catsdogs export RUN</code></p>'
    rows, warnings = [], []
    for folder, record in exports:
        where = f"{EXPORT_DIR}/{folder.name}"
        if not isinstance(record, dict):
            # A damaged record cannot vouch for its model, so it counts as unverified.
            warnings.append(f"<code>{escape(where)}</code>: its {EXPORT_RECORD_FILE} cannot be read")
            cells = [folder.name, "?", where, *[""] * (len(_EXPORT_HEADERS) - 3)]
            rows.append(_export_row(cells, verified=False, reasons="unreadable record"))
            continue
        verified = record.get("verified") is True
        reasons = "; ".join(record.get("failures") or [])
        file_name = f"{where}/{record.get('artifact', '?')}"
        if not verified:
            warnings.append(f"<code>{escape(file_name)}</code>: {escape(reasons or 'not verified')}")
        rows.append(_export_row(_export_cells(record, folder, file_name), verified=verified, reasons=reasons))
    head = "<thead><tr>" + "".join(f"<th>{escape(cell)}</th>" for cell in _EXPORT_HEADERS) + "</tr></thead>"
    parts = []
    if warnings:
        parts.append(
            '<p class="warning"><b>Not verified:</b> these exports missed their bounds against the Keras model, so '
            "their answers may differ from the run's; do not ship them. " + "; ".join(warnings) + ".</p>"
        )
    parts.append(f'<table class="exports">{head}<tbody>{"".join(rows)}</tbody></table>')
    parts.append(_bounds_note(exports))
    return "".join(parts)


_EXPORT_HEADERS = [
    "format",
    "precision",
    "file",
    "verified",
    "label agreement (validation)",
    "max |difference in probability|",
    "test accuracy (artifact)",
    "accuracy (Keras)",
    "file size",
    "batch-1 latency",
    "batch-32 throughput",
    "exported",
]
_VERDICT_COLUMN = _EXPORT_HEADERS.index("verified")


def _read_exports(run):
    root = run.path / EXPORT_DIR
    if not root.is_dir():
        return []
    # Hidden folders are exports being built or replaced at this moment, not exports.
    folders = [path for path in sorted(root.iterdir()) if not path.name.startswith(".") and path.is_dir()]
    return [(path, read_json(path / EXPORT_RECORD_FILE)) for path in folders if (path / EXPORT_RECORD_FILE).is_file()]


def _export_cells(record, folder, file_name):
    validation = record.get("validation") or {}
    speed = record.get("speed") or {}
    # A quantized export carries its float32 counterpart's numbers; they are shown beside its own.
    float32 = record.get("float32")
    check = record.get("accuracy")
    agreement = validation.get("label_agreement")
    difference = validation.get("max_probability_difference")
    latency = speed.get("latency_batch1_ms")
    throughput = speed.get("throughput_batch32_photos_per_second")
    float_speed = (float32 or {}).get("speed") or {}
    return [
        record.get("format", folder.name),
        record.get("precision", "float32"),
        file_name,
        None,  # The verdict cell is rendered by `_export_row`.
        "n/a" if agreement is None else f"{agreement:.2%} of {validation.get('images', '?')}",
        "n/a" if difference is None else f"{difference:.2e}",
        _artifact_accuracy(record, check, float32),
        "—" if not check else f"{percent(check.get('keras'))} ({check.get('split', '?')})",
        _beside(
            _file_size(record.get("file_size_bytes")), float32, _file_size(float32 and float32.get("file_size_bytes"))
        ),
        _beside(_milliseconds(latency), float32, _milliseconds(float_speed.get("latency_batch1_ms"))),
        _beside(
            _photos_per_second(throughput),
            float32,
            _photos_per_second(float_speed.get("throughput_batch32_photos_per_second")),
        ),
        str(record.get("created", "?")).replace("T", " "),
    ]


def _artifact_accuracy(record, check, float32):
    if check:
        # A quantized export is judged on this split (test, or validation without a test split).
        own = f"{percent(check.get('artifact'))} of {check.get('images', '?')}"
        if check.get("split") != "test":
            own += f" ({check.get('split', '?')})"
        return _beside(own, float32, percent((float32 or {}).get("accuracy")))
    test = record.get("test")
    if not test:
        return "no test split"
    if test.get("accuracy") is None:
        return "n/a"
    return f"{percent(test['accuracy'])} of {test.get('images', '?')}"


def _beside(value, float32, float_value):
    return f"{value} (float32: {float_value})" if float32 else value


def _milliseconds(value):
    return "n/a" if value is None else f"{value:.2f} ms"


def _photos_per_second(value):
    return "n/a" if value is None else f"{value:.1f} photos/s"


def _export_row(cells, *, verified, reasons):
    if verified:
        verdict = '<span class="verdict-yes">yes</span>'
    else:
        verdict = f'<span class="verdict-no" title="{escape(reasons)}">NO</span>'
    html_cells = [
        f"<td>{verdict}</td>" if index == _VERDICT_COLUMN else f"<td>{escape(cell)}</td>"
        for index, cell in enumerate(cells)
    ]
    return f'<tr class="{"verified" if verified else "unverified"}">{"".join(html_cells)}</tr>'


def _bounds_note(exports):
    records = [record for _, record in exports if isinstance(record, dict)]
    rules = []
    if any(record.get("precision", "float32") == "float32" for record in records):
        bounds = next((r["bounds"] for r in records if "label_agreement" in (r.get("bounds") or {})), {})
        if "max_probability_difference" in bounds:
            rules.append(
                f"A float32 export must agree on at least {bounds['label_agreement']:.0%} of labels, with max "
                f"|difference in probability| at most {bounds['max_probability_difference']:g}."
            )
    quantized = next((r["bounds"] for r in records if "max_accuracy_drop" in (r.get("bounds") or {})), None)
    if quantized:
        rules.append(
            f"A quantized (int8 or float16) export may lose at most {quantized['max_accuracy_drop'] * 100:.1f} "
            "points of accuracy against the Keras model, on the test split (validation without one); its label "
            "agreement and probability difference are recorded, not bounded."
        )
    rule = "".join(f" {text}" for text in rules)
    return (
        '<p class="muted">Each export is run beside the Keras model on the validation split when it is made.'
        f"{escape(rule)} Latency is the median of single-photo calls and throughput the median of 32-photo "
        f"calls, both on the machine that exported. Each folder's {EXPORT_RECORD_FILE} holds the full record.</p>"
    )


def _file_size(size_bytes):
    if size_bytes is None:
        return "n/a"
    if size_bytes < 1024 * 1024:
        return f"{size_bytes / 1024:.1f} KiB"
    return f"{size_bytes / (1024 * 1024):.2f} MiB"
