"""The verification of an export as the plain-text table that `catsdogs export` prints.

It reads an export.json record and computes nothing. A quantized export gets a
second column with its float32 counterpart's accuracy, size and speed, so the
trade is visible at a glance, and a row with the Keras model's accuracy that
bounds it.
"""

from __future__ import annotations

import os
from pathlib import Path


def format_table(record: dict, *, export_path: str | os.PathLike) -> str:
    """Return the verification of an export (its export.json) as a plain-text table.

    Args:
        record: the contents of export.json.
        export_path: the export folder, for the first line.

    Returns:
        The table, ending in a newline; its last line is the verdict ("verified  yes" or "verified  NO: ...").
    """
    validation, speed, bounds = record["validation"], record["speed"], record["bounds"]
    float32 = record.get("float32")
    check = record.get("accuracy")
    agreement = validation["label_agreement"]
    difference = validation["max_probability_difference"]
    not_bounded = "recorded, not bounded"
    rows = [
        ("format", record["format"], "", ""),
        ("precision", record.get("precision", "float32"), "float32" if float32 else "", ""),
        (
            "label agreement (validation)",
            "n/a" if agreement is None else f"{agreement:.2%} of {validation['images']} images",
            "",
            not_bounded if check else f">= {bounds['label_agreement']:.0%}",
        ),
        (
            "max |difference in probability|",
            "n/a" if difference is None else f"{difference:.2e}",
            "",
            not_bounded if check else f"<= {bounds['max_probability_difference']:g}",
        ),
    ]
    if check:
        split = check["split"]
        rows.append((f"{split} accuracy (Keras)", _accuracy(check["keras"], check["images"]), "", ""))
        rows.append(
            (
                f"{split} accuracy (artifact)",
                _accuracy(check["artifact"], check["images"]),
                _accuracy(float32["accuracy"], None),
                f">= Keras - {bounds['max_accuracy_drop'] * 100:.1f} points",
            )
        )
        if check.get("note"):
            rows.append(("note", check["note"], "", ""))
    else:
        rows.append(("test accuracy (artifact)", _test_accuracy(record.get("test")), "", ""))
    # The float32 column is empty for a float export, which is its own float32 counterpart.
    beside = float32 or {}
    rows += [
        ("file size", _size(record["file_size_bytes"]), _size(beside.get("file_size_bytes")) if float32 else "", ""),
        ("batch-1 latency", _latency(speed, median=True), _latency(beside.get("speed")) if float32 else "", ""),
        ("batch-32 throughput", _throughput(speed), _throughput(beside.get("speed")) if float32 else "", ""),
    ]
    return _render(record, export_path, rows, second_column=bool(float32))


def _render(record, export_path, rows, *, second_column):
    width = max(len(name) for name, _, _, _ in rows)
    value_width = max(len(value) for _, value, _, _ in rows)
    float_width = max(len(value) for _, _, value, _ in rows)
    lines = [f"export: {Path(export_path) / record['artifact']}"]
    for name, value, float_value, bound in rows:
        middle = f"  {float_value:<{float_width}}" if second_column else ""
        lines.append(f"  {name:<{width}}  {value:<{value_width}}{middle}  {bound}".rstrip())
    verdict = "yes" if record["verified"] else "NO: " + "; ".join(record["failures"])
    lines.append(f"  {'verified':<{width}}  {verdict}")
    return "\n".join(lines) + "\n"


def _accuracy(value, images):
    if value is None:
        return "n/a"
    return f"{value:.4f}" + (f" of {images} images" if images is not None else "")


def _test_accuracy(test):
    if not test:
        return "no test split"
    if test["accuracy"] is None:
        return "n/a (no test image could be read)"
    return f"{test['accuracy']:.4f} of {test['images']} images"


def _size(size_bytes):
    return "n/a" if size_bytes is None else f"{size_bytes:,} bytes"


def _latency(speed, *, median=False):
    if not speed:
        return "n/a"
    calls = f" (median of {speed['latency_calls']})" if median else ""
    return f"{speed['latency_batch1_ms']:.2f} ms{calls}"


def _throughput(speed):
    return f"{speed['throughput_batch32_photos_per_second']:.1f} photos/s" if speed else "n/a"
