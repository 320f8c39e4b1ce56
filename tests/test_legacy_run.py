"""A run folder written before the re-layout (commit 7bb201e's format) still loads, predicts, evaluates and reports."""

import json
from pathlib import Path

import pytest

from catsdogs.cli import main
from catsdogs.evaluation.evaluate import evaluate_run
from catsdogs.inference import Predictor
from catsdogs.report import write_report
from legacy_run import CLASS_NAMES, LEGACY_CONFIG, write_legacy_run


@pytest.fixture(scope="module")
def legacy_run(tmp_path_factory):
    return write_legacy_run(tmp_path_factory.mktemp("legacy") / "20261127-120000-seed_cnn")


@pytest.fixture(scope="module")
def photos(legacy_run):
    data_dir = Path(json.loads((legacy_run / "run.json").read_text(encoding="utf-8"))["data_dir"])
    return sorted(str(path) for path in (data_dir / "test").rglob("*.png"))


def test_the_fixture_is_in_the_old_format(legacy_run):
    # The point of the fixture: the config predates the [predict] section, and nothing of today wrote it.
    config = json.loads((legacy_run / "config.json").read_text(encoding="utf-8"))
    assert config == LEGACY_CONFIG and "predict" not in config
    digest, name = (legacy_run / "model.keras.sha256").read_text(encoding="utf-8").split()
    assert name == "model.keras" and len(digest) == 64
    assert (
        (legacy_run / "history.csv")
        .read_bytes()
        .startswith(b"epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\r\n")
    )
    assert "evaluation" not in json.loads((legacy_run / "metrics.json").read_text(encoding="utf-8"))


def test_predictor_loads_and_predicts(legacy_run, photos):
    predictor = Predictor.from_run_dir(legacy_run)
    assert predictor.class_names == list(CLASS_NAMES) and predictor.image_size == (32, 32)
    rows = predictor.predict(photos)
    assert len(rows) == len(photos) == 8
    assert all(row.ok and row.label in CLASS_NAMES for row in rows)
    assert all(sum(row.probabilities.values()) == pytest.approx(1.0) for row in rows)


def test_predict_command(legacy_run, photos, capsys):
    assert main(["predict", str(legacy_run), *photos[:2], "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["file"] for row in rows] == photos[:2]
    assert all(row["error"] is None and set(row["probabilities"]) == set(CLASS_NAMES) for row in rows)


def test_report_before_evaluation(legacy_run):
    page = write_report(legacy_run).read_text(encoding="utf-8")
    assert "Not evaluated yet" in page and '<section id="config">' in page


def test_evaluate_then_report(legacy_run):
    result = evaluate_run(legacy_run, gradcam_examples=1)
    stored = json.loads((legacy_run / "metrics.json").read_text(encoding="utf-8"))
    # Training's entries of the old metrics.json stay; evaluation adds its own section.
    assert stored["test"] == {"loss": 0.6925, "accuracy": 0.5} and stored["epochs_done"] == 2
    assert stored["evaluation"]["latest"] == "test"
    assert stored["evaluation"]["test"]["num_examples"] == 8
    assert result.metrics["threshold_data_dir"] == result.metrics["data_dir"]
    page = write_report(legacy_run).read_text(encoding="utf-8")
    assert "Not evaluated yet" not in page and "Confusion matrix" in page
