"""`compare_runs` and `write_comparison`: what `catsdogs compare` does with several run folders.

A comparison reads each run's config, run.json, history and metrics (preferring
the numbers of `catsdogs evaluate` over training's own test accuracy), and
writes the side-by-side table as CSV plus an overlay of the validation curves.
"""

import csv
import dataclasses
import io
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from catsdogs import report_plots
from catsdogs.errors import CatsdogsError
from catsdogs.evaluation.metrics import wilson_interval
from catsdogs.fileio import atomic_write_text
from catsdogs.models.saving import load_model
from catsdogs.runs import EVALUATION_KEY, RunDir

COMPARISON_TABLE_FILE = "comparison.csv"
COMPARISON_CURVES_FILE = "validation_curves.png"
TABLE_HEADER = ("run", "model", "parameters", "epochs", "time", "test accuracy (95% interval)", "F1", "ROC-AUC")
MISSING_NUMBERS_NOTE = "(n/a: run `catsdogs evaluate RUN` for F1 and ROC-AUC)"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What `write_comparison` produced: the rows, the table as printed, and the files written."""

    rows: list[dict]
    table: str
    table_path: Path
    curves_path: Path


def compare_runs(run_dirs: Sequence[str | os.PathLike | RunDir]) -> tuple[list[dict], Figure]:
    """Summarise several runs side by side.

    Args:
        run_dirs: run folders, possibly of different models.

    Returns:
        (rows, figure): one dict per run (run, model, parameters, epochs, training
        seconds, test accuracy with its 95% interval, macro F1, ROC-AUC, source of
        the test numbers) and the overlay of their validation curves.

    Raises:
        CatsdogsError: if a folder is not a run folder.
    """
    rows, histories = [], {}
    for path in run_dirs:
        run = RunDir.open(path.path if isinstance(path, RunDir) else path)
        metrics = run.read_metrics() if run.metrics_path.is_file() else {}
        info = run.read_run_info()
        history = run.read_history()
        rows.append({"run": run.path.name, **_model_summary(run, info), **_test_summary(metrics)})
        histories[f"{run.path.name} ({rows[-1]['model']})"] = history
        rows[-1]["epochs"] = metrics.get("epochs_done", len(history.get("loss", [])))
        rows[-1]["training_seconds"] = metrics.get("fit_seconds", info.get("fit_seconds"))
    return rows, report_plots.validation_curves_figure(histories)


def format_comparison_table(rows: Sequence[dict]) -> str:
    """Render `compare_runs` rows as an aligned text table, with a note when some runs lack F1 and ROC-AUC.

    Returns:
        The table's lines, each ending in a newline.
    """
    table = [TABLE_HEADER]
    for row in rows:
        accuracy = _format_number(row["test_accuracy"])
        if row["test_accuracy_low"] is not None:
            accuracy += f" ({row['test_accuracy_low']:.4f}-{row['test_accuracy_high']:.4f})"
        seconds = row["training_seconds"]
        table.append(
            (
                row["run"],
                str(row["model"]),
                "n/a" if row["parameters"] is None else f"{row['parameters']:,}",
                str(row["epochs"]),
                "n/a" if seconds is None else f"{seconds / 60:.1f} min",
                accuracy,
                _format_number(row["test_f1"]),
                _format_number(row["test_roc_auc"]),
            )
        )
    widths = [max(len(line[column]) for line in table) for column in range(len(TABLE_HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    if any(row["test_f1"] is None for row in rows):
        lines.append(MISSING_NUMBERS_NOTE)
    return "".join(f"{line}\n" for line in lines)


def write_comparison(run_dirs: Sequence[str | os.PathLike | RunDir], out_dir: str | os.PathLike) -> Comparison:
    """Compare runs and write `comparison.csv` and `validation_curves.png` into `out_dir`.

    Args:
        run_dirs: run folders, possibly of different models.
        out_dir: the folder that receives both files; created if missing.

    Returns:
        A `Comparison` with the rows, the text table and the paths written.

    Raises:
        CatsdogsError: if a folder is not a run folder.
    """
    rows, figure = compare_runs(run_dirs)
    out_dir = Path(out_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    table_path = out_dir / COMPARISON_TABLE_FILE
    atomic_write_text(table_path, buffer.getvalue())
    curves_path = report_plots.save_figure(figure, out_dir / COMPARISON_CURVES_FILE)
    return Comparison(rows=rows, table=format_comparison_table(rows), table_path=table_path, curves_path=curves_path)


def _format_number(value):
    return "n/a" if value is None else f"{value:.4f}"


def _model_summary(run, info):
    model_name = info.get("model") or run.read_config().get("model", {}).get("name")
    try:
        parameters = load_model(run.model_path).count_params()
    except CatsdogsError:
        parameters = None
    return {"model": model_name, "parameters": parameters}


def _test_summary(metrics):
    evaluated = metrics.get(EVALUATION_KEY, {}).get("test")
    if evaluated:
        decided = evaluated["at_decision_threshold"]
        return {
            "test_accuracy": decided["accuracy"],
            "test_accuracy_low": decided["accuracy_interval"]["low"],
            "test_accuracy_high": decided["accuracy_interval"]["high"],
            "test_f1": decided["macro_avg"]["f1"],
            "test_roc_auc": evaluated.get("roc_auc"),
            "source": "catsdogs evaluate",
        }
    tested = metrics.get("test")
    if not tested:
        return {
            "test_accuracy": None,
            "test_accuracy_low": None,
            "test_accuracy_high": None,
            "test_f1": None,
            "test_roc_auc": None,
            "source": "no test split",
        }
    # Training's own test accuracy; its interval follows from the number of test images.
    total = metrics.get("images", {}).get("test", 0)
    low, high = wilson_interval(round(tested["accuracy"] * total), total) if total else (None, None)
    return {
        "test_accuracy": tested["accuracy"],
        "test_accuracy_low": low,
        "test_accuracy_high": high,
        "test_f1": None,
        "test_roc_auc": None,
        "source": "training (run `catsdogs evaluate` for F1 and ROC-AUC)",
    }
