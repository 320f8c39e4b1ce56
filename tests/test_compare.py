"""`compare_runs`, `write_comparison` and `catsdogs compare`: runs of different models side by side."""

import csv

import pytest

import fake_runs
from catsdogs.cli import main
from catsdogs.evaluation.compare import compare_runs, format_comparison_table, write_comparison
from catsdogs.evaluation.evaluate import evaluate_run


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    data_dir = fake_runs.make_data(root)
    evaluated = fake_runs.make_run(
        root / "runs", data_dir, name="functional-run", kind="functional", model_name="tiny_cnn", epochs=4
    )
    trained_only = fake_runs.make_run(
        root / "runs", data_dir, name="sequential-run", kind="sequential", model_name="tiny_seq", epochs=2
    )
    evaluate_run(evaluated.path, gradcam_examples=0)
    return evaluated, trained_only


def test_rows_describe_runs_of_different_models(two_runs):
    rows, figure = compare_runs([run.path for run in two_runs])
    evaluated, trained_only = rows
    assert (evaluated["run"], evaluated["model"], evaluated["epochs"]) == ("functional-run", "tiny_cnn", 4)
    assert (trained_only["run"], trained_only["model"], trained_only["epochs"]) == ("sequential-run", "tiny_seq", 2)
    # Both hold the same weights: the 3x3 detector convolution (2 filters) and a one-unit head.
    assert evaluated["parameters"] == trained_only["parameters"] == 3 * 3 * 3 * 2 + 2 + 2 + 1
    assert evaluated["training_seconds"] == 12.5
    assert evaluated["test_accuracy_low"] < evaluated["test_accuracy"] < evaluated["test_accuracy_high"]
    assert evaluated["test_f1"] is not None and evaluated["test_roc_auc"] is not None
    assert evaluated["source"] == "catsdogs evaluate"
    # Not evaluated: training's test accuracy, with an interval from the number of test images.
    assert trained_only["test_accuracy"] == 0.8 and trained_only["test_f1"] is None
    assert trained_only["test_accuracy_low"] < 0.8 < trained_only["test_accuracy_high"]
    accuracy_axes, loss_axes = figure.axes
    assert len(accuracy_axes.lines) == len(loss_axes.lines) == 2


def test_the_table_aligns_columns_and_notes_missing_numbers(two_runs):
    rows, _ = compare_runs([run.path for run in two_runs])
    lines = format_comparison_table(rows).splitlines()
    header, evaluated, trained_only, note = lines
    assert header.split("  ")[0] == "run" and "test accuracy (95% interval)" in header
    # Every column starts where its header does, and no line ends in spaces.
    for column in ("model", "parameters", "epochs", "time", "test accuracy", "F1", "ROC-AUC"):
        start = header.index(column)
        assert evaluated[start - 2 : start] == trained_only[start - 2 : start] == "  "
        assert evaluated[start] != " " and trained_only[start] != " "
    assert all(line == line.rstrip() for line in lines)
    assert "tiny_seq" in trained_only and "59" in trained_only and "0.2 min" in trained_only
    assert "0.8000 (" in trained_only and trained_only.split()[-2:] == ["n/a", "n/a"]
    assert note == "(n/a: run `catsdogs evaluate RUN` for F1 and ROC-AUC)"
    assert "(n/a" not in format_comparison_table(rows[:1])


def test_write_comparison_names_its_files(two_runs, tmp_path):
    comparison = write_comparison([run.path for run in two_runs], tmp_path / "out")
    assert comparison.table_path == tmp_path / "out" / "comparison.csv" and comparison.table_path.is_file()
    assert comparison.curves_path == tmp_path / "out" / "validation_curves.png" and comparison.curves_path.is_file()
    assert [row["run"] for row in comparison.rows] == ["functional-run", "sequential-run"]


def test_compare_command_prints_and_writes(two_runs, tmp_path, capsys):
    out = tmp_path / "comparison"
    assert main(["compare", *[str(run.path) for run in two_runs], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "functional-run" in printed and "sequential-run" in printed and "tiny_seq" in printed
    rows, _ = compare_runs([run.path for run in two_runs])
    assert (
        printed
        == f"{format_comparison_table(rows)}table:  {out / 'comparison.csv'}\ncurves: {out / 'validation_curves.png'}\n"
    )
    with open(out / "comparison.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["model"] for row in rows] == ["tiny_cnn", "tiny_seq"]
    assert (out / "validation_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
