"""Which files a `predict` command means, and how its answers are written: globs, folders, table, CSV, JSON."""

import csv
import glob
import io
import json
from pathlib import Path

from catsdogs.errors import CatsdogsError
from catsdogs.images import PHOTO_EXTENSIONS
from catsdogs.inference.predictor import Prediction


def expand_inputs(patterns):
    """Expand files, folders (recursively) and glob patterns, keeping the order they were given in.

    Args:
        patterns: paths or glob patterns (`photos/*.jpg`, `photos/**/*.png`).

    Returns:
        A list whose items are file paths (str), without repeats, or a `Prediction`
        error row in the place of a pattern that names nothing.
    """
    entries, seen = [], set()
    for pattern in map(str, patterns):
        if Path(pattern).exists():
            matches = [pattern]
        else:
            matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else []
        if not matches:
            reason = "no file matches this pattern" if glob.has_magic(pattern) else "no such file or folder"
            entries.append(Prediction(pattern, error=reason))
        for match in matches:
            for path in _files_under(Path(match)):
                if path not in seen:
                    seen.add(path)
                    entries.append(path)
    return entries


def _files_under(path):
    if not path.is_dir():
        return [str(path)]
    files = []
    for child in sorted(path.rglob("*")):
        hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
        if child.is_file() and child.suffix.lower() in PHOTO_EXTENSIONS and not hidden:
            files.append(str(child))
    return files


# What the abstain rule (`runtime.answers`) adds to every CSV row: the answer, or "unsure" and why.
ANSWER_COLUMNS = ("answer", "abstained", "calibrated_probability", "reason")


def _answer_cells(p):
    calibrated = "" if p.calibrated_probability is None else f"{p.calibrated_probability:.6f}"
    return [p.answer or "", "true" if p.abstained else "false", calibrated, p.reason or ""]


def _answer_table(predictions):
    """The table when an abstain rule applies: the answer ("unsure" or the label) first, then the plain label."""
    rows = [("file", "answer", "label", "probability", "calibrated")]
    for p in predictions:
        if p.ok:
            calibrated = "" if p.calibrated_probability is None else f"{p.calibrated_probability:.4f}"
            rows.append((p.source, p.answer or p.label, p.label, f"{p.probability:.4f}", calibrated))
        else:
            rows.append((p.source, "ERROR", p.error, "", ""))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ("  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths)).rstrip() for row in rows)
    return "".join(f"{line}\n" for line in lines)


def predict_files(predictor, patterns):
    """Predict every file that `patterns` name; what cannot be read becomes an error row.

    Returns:
        A list of `Prediction` in the order of `patterns`, with an error row where a pattern named nothing.
    """
    entries = expand_inputs(patterns)
    files = [entry for entry in entries if isinstance(entry, str)]
    predictions = iter(predictor.predict(files, sources=files))
    return [next(predictions) if isinstance(entry, str) else entry for entry in entries]


def format_predictions(predictions, *, output_format="table"):
    """Render predictions as an aligned text table, CSV (one column per class probability) or JSON."""
    if output_format == "json":
        rows = [
            {
                "file": p.source,
                "label": p.label,
                "probability": p.probability,
                "probabilities": p.probabilities,
                "answer": p.answer,
                "abstained": p.abstained,
                "calibrated_probability": p.calibrated_probability,
                "reason": p.reason,
                "error": p.error,
            }
            for p in predictions
        ]
        return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    if output_format == "csv":
        class_names = next((list(p.probabilities) for p in predictions if p.probabilities), [])
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            [
                "file",
                "label",
                "probability",
                *[f"probability_{name}" for name in class_names],
                *ANSWER_COLUMNS,
                "error",
            ]
        )
        for p in predictions:
            per_class = [f"{p.probabilities[name]:.6f}" if p.probabilities else "" for name in class_names]
            writer.writerow(
                [
                    p.source,
                    p.label or "",
                    "" if p.probability is None else f"{p.probability:.6f}",
                    *per_class,
                    *_answer_cells(p),
                    p.error or "",
                ]
            )
        return buffer.getvalue()
    if output_format == "table" and any(p.calibrated_probability is not None or p.abstained for p in predictions):
        return _answer_table(predictions)
    if output_format == "table":
        rows = [("file", "label", "probability")] + [
            (p.source, p.label, f"{p.probability:.4f}") if p.ok else (p.source, "ERROR", p.error) for p in predictions
        ]
        widths = [max(len(row[column]) for row in rows) for column in range(2)]
        return "".join(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}\n" for row in rows)
    raise CatsdogsError(f"Unknown output format. Choose table, csv or json. Received: output_format={output_format!r}")
