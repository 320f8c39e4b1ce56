"""The abstain rule end to end on a tiny run: `evaluate` writes abstain.json into the run and its exports, a later
export copies it, and `Predictor`, the TensorFlow-free runtime and `catsdogs predict` answer "unsure" with it,
the plain label with --no-abstain, and say that abstaining is off for a run without it."""

import csv
import io
import json
import shutil

import numpy
import pytest

from catsdogs.cli import main
from catsdogs.evaluation.evaluate import evaluate_run
from catsdogs.export import export_run
from catsdogs.inference import Predictor
from catsdogs.runs import EVALUATION_KEY, RunDir
from catsdogs.runtime import open_export_predictor
from catsdogs.runtime.answers import UNSURE, AbstainRule
from fake_runs import make_data, make_run


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    """A tiny run exported before it was evaluated, then evaluated: (run, export folder, data folder)."""
    root = tmp_path_factory.mktemp("abstain")
    data_dir = make_data(root, per_class=10)
    run = make_run(root / "runs", data_dir)
    export_dir = export_run(run.path).export_dir.path
    evaluate_run(run.path, abstain_target_error=0.3, gradcam_examples=0)
    return run, export_dir, data_dir


@pytest.fixture(scope="module")
def ruled_run(evaluated_run, tmp_path_factory):
    """A copy of the run and its export with a rule that abstains on about half of the test photos."""
    run, _, data_dir = evaluated_run
    copy = RunDir(shutil.copytree(run.path, tmp_path_factory.mktemp("ruled") / "run"))
    paths = sorted(str(path) for path in (data_dir / "test").rglob("*.png"))
    plain = Predictor.from_run_dir(copy.path, abstain=False).predict(paths)
    threshold = float(numpy.median([prediction.probability for prediction in plain]))
    record = json.loads(copy.abstain_path.read_text(encoding="utf-8"))
    rule = AbstainRule(("cats", "dogs"), 1.0, threshold, 0.05, 0.05, source_model_sha256=record["source_model_sha256"])
    for path in (copy.abstain_path, copy.path / "export" / "onnx" / "abstain.json"):
        path.write_text(json.dumps(rule.to_dict()), encoding="utf-8")
    return copy, paths, plain


def test_evaluate_writes_the_rule_into_the_run_and_its_exports(evaluated_run):
    run, export_dir, _ = evaluated_run
    record = json.loads(run.abstain_path.read_text(encoding="utf-8"))
    assert record["temperature"] > 0 and record["target_error"] == 0.3 and record["validation"]["images"] == 20
    assert record["source_model_sha256"] == run.model_checksum_path.read_text().split()[0]
    assert json.loads((export_dir / "abstain.json").read_text(encoding="utf-8")) == record
    measured = run.read_metrics()[EVALUATION_KEY]["test"]["abstain"]
    assert measured["images"] == 20 and 0 < measured["coverage"] <= 1 and measured["exports_updated"] == ["onnx"]
    assert measured["answered"] + len(measured["abstained"]) == 20
    for name in ("reliability_calibrated", "coverage_accuracy", "abstained"):
        assert run.evaluation_figure_path(name).read_bytes()[:4] == b"\x89PNG"
    assert 'id="abstain"' in run.report_path.read_text(encoding="utf-8")


def test_an_export_made_after_evaluation_carries_the_rule(evaluated_run, tmp_path):
    run, _, _ = evaluated_run
    late = export_run(run.path, out_dir=tmp_path / "late").export_dir.path
    assert (late / "abstain.json").read_bytes() == run.abstain_path.read_bytes()


def test_predictor_and_runtime_answer_unsure_alike_and_keep_the_label(ruled_run):
    run, paths, plain = ruled_run
    keras_rows = Predictor.from_run_dir(run.path).predict(paths)
    runtime = open_export_predictor(run.path / "export" / "onnx")
    runtime_rows = runtime.predict(paths)
    assert runtime.abstain_rule is not None and runtime.abstain_note is None
    unsure = [row.source for row in keras_rows if row.answer == UNSURE]
    assert 0 < len(unsure) < len(paths)
    assert [row.answer for row in runtime_rows] == [row.answer for row in keras_rows]
    for row, before in zip(keras_rows, plain):
        assert row.label == before.label and row.probability == before.probability
        assert row.abstained == (row.answer == UNSURE) and (row.reason is not None) == row.abstained
        assert row.calibrated_probability == pytest.approx(row.probability)  # The rule's temperature is 1.
    assert all(row.answer == row.label and not row.abstained for row in plain)
    assert {"answer", "abstained", "reason", "calibrated_probability"} <= set(keras_rows[0].to_dict())


@pytest.mark.parametrize("folder", ["run", "export"])
def test_predict_abstains_by_default_and_no_abstain_gives_the_plain_label(ruled_run, folder, capsys):
    run, paths, plain = ruled_run
    target = run.path if folder == "run" else run.path / "export" / "onnx"
    assert main(["predict", str(target), *paths, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sum(row["answer"] == UNSURE for row in rows) == sum(row.probability < run_threshold(run) for row in plain)
    assert all(row["label"] in ("cats", "dogs") and row["calibrated_probability"] is not None for row in rows)
    assert main(["predict", str(target), *paths, "--format", "csv", "--no-abstain"]) == 0
    output = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(output.out)))
    assert all(row["answer"] == row["label"] and row["abstained"] == "false" for row in rows)
    assert "abstaining is off: the plain label was asked for" in output.err
    assert main(["predict", str(target), *paths]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["file", "answer", "label", "probability", "calibrated"]
    assert any(line.split()[1] == UNSURE for line in table[1:])


def run_threshold(run):
    return json.loads(run.abstain_path.read_text(encoding="utf-8"))["threshold"]


def test_a_run_without_abstain_json_says_abstaining_is_off(tmp_path, capsys):
    data_dir = make_data(tmp_path, per_class=1, splits=("test",))
    run = make_run(tmp_path / "runs", data_dir)
    photo = str(next((data_dir / "test").rglob("*.png")))
    assert main(["predict", str(run.path), photo]) == 0
    output = capsys.readouterr()
    assert output.out.splitlines()[0].split() == ["file", "label", "probability"]
    assert "abstaining is off: this run has no abstain.json" in output.err
    assert main(["predict", str(run.path), photo, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["answer"] == row["label"] and row["abstained"] is False and row["calibrated_probability"] is None


def test_the_service_answers_unsure_where_the_export_says_so(ruled_run):
    from serve_fixtures import service_client

    run, paths, plain = ruled_run
    threshold = run_threshold(run)
    uploads = [
        ("files", (f"photo{index}.png", open(path, "rb").read(), "image/png")) for index, path in enumerate(paths)
    ]
    rows = []
    with service_client(run.path / "export" / "onnx", max_files=8) as (client, _):
        for start in range(0, len(uploads), 8):  # The service's queue takes 16 photos at once.
            rows += client.post("/v1/predict", files=uploads[start : start + 8]).json()["predictions"]
    assert [row["label"] for row in rows] == [row.label for row in plain]
    for row, before in zip(rows, plain):
        assert row["abstained"] == (before.probability < threshold) == (row["answer"] == UNSURE)
        assert row["calibrated_probability"] == pytest.approx(before.probability, abs=1e-6)
        assert (row["reason"] is not None) == row["abstained"]
    assert any(row["abstained"] for row in rows) and not all(row["abstained"] for row in rows)
