"""`evaluate_run` and report.html: metrics merged, figures written, and the page rendered by real Chromium."""

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import fake_runs
from catsdogs.cli import main
from catsdogs.errors import CatsdogsError
from catsdogs.evaluation import thresholds
from catsdogs.evaluation.evaluate import evaluate_run
from catsdogs.report import write_report
from catsdogs.runs import EVALUATION_FIGURES, EXPORT_DIR, EXPORT_RECORD_FILE

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SECTIONS = ("summary", "data", "training", "metrics", "diagnostics", "mistakes", "gradcam", "deployment", "config")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Injected into a copy of the report: once everything has loaded, it writes what
# each image decoded to into the page, which --dump-dom then prints.
RENDER_CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var rows = Array.prototype.map.call(document.images, function (image) {
    return {figure: image.dataset.figure, complete: image.complete, width: image.naturalWidth};
  });
  var output = document.createElement('pre');
  output.id = 'render-check';
  output.textContent = JSON.stringify(rows);
  document.body.appendChild(output);
});
</script>"""


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluated")
    data_dir = fake_runs.make_data(root)
    run = fake_runs.make_run(root / "runs", data_dir)
    return evaluate_run(run.path), data_dir


def test_evaluation_merges_into_training_metrics(evaluated):
    result, _ = evaluated
    stored = result.run_dir.read_metrics()
    assert stored["test"] == {"loss": 0.5, "accuracy": 0.8} and stored["epochs_done"] == 3
    assert stored["evaluation"]["latest"] == "test"
    decided = stored["evaluation"]["test"]["at_decision_threshold"]
    assert 0.5 < decided["accuracy"] < 1.0, "the fake data is built to give some mistakes"
    assert stored["evaluation"]["test"]["selected_thresholds"]["chosen_on"] == "validation"
    for name in EVALUATION_FIGURES.values():
        assert (result.run_dir.figures_dir / name).read_bytes()[:8] == PNG_SIGNATURE
    assert len(list(result.run_dir.figures_dir.glob("gradcam_*.png"))) == 4


def test_thresholds_are_chosen_on_validation_only(tmp_path, monkeypatch):
    data_dir = fake_runs.make_data(tmp_path)
    run = fake_runs.make_run(tmp_path / "runs", data_dir)
    seen = []
    original = thresholds.select_thresholds

    def spy(predictions):
        seen.append((predictions.split, {Path(path).parent.parent.name for path in predictions.paths}))
        return original(predictions)

    monkeypatch.setattr(thresholds, "select_thresholds", spy)
    evaluate_run(run.path, gradcam_examples=0)
    assert seen == [("validation", {"validation"})]


def test_other_class_names_are_a_clear_error(tmp_path):
    data_dir = fake_runs.make_data(tmp_path / "own")
    run = fake_runs.make_run(tmp_path / "runs", data_dir)
    other = fake_runs.make_data(tmp_path / "other", class_names=("birds", "fish"))
    with pytest.raises(CatsdogsError, match=r"differ from the classes.*Received: model_classes=\['cats', 'dogs'\]"):
        evaluate_run(run.path, data_dir=other)


def test_another_prepared_folder_is_stored_under_its_own_key(tmp_path, capsys):
    data_dir = fake_runs.make_data(tmp_path / "own")
    run = fake_runs.make_run(tmp_path / "runs", data_dir)
    other = fake_runs.make_data(tmp_path / "other")
    assert main(["evaluate", str(run.path), "--data", str(other), "--split", "validation"]) == 0
    assert "accuracy:" in capsys.readouterr().out
    section = run.read_metrics()["evaluation"]
    assert section["latest"] == f"validation of {other.resolve()}"
    assert section[section["latest"]]["selected_thresholds"]["in_sample"] is True


def test_a_folder_without_validation_borrows_the_runs_own_for_thresholds(tmp_path, capsys):
    data_dir = fake_runs.make_data(tmp_path / "own")
    run = fake_runs.make_run(tmp_path / "runs", data_dir)
    test_only = fake_runs.make_data(tmp_path / "other", splits=("test",))
    assert main(["evaluate", str(run.path), "--data", str(test_only)]) == 0
    printed = capsys.readouterr().out
    assert f"thresholds: {test_only.resolve()} has no validation split" in printed
    metrics = run.read_metrics()["evaluation"][f"test of {test_only.resolve()}"]
    assert metrics["threshold_data_dir"] == str(data_dir.resolve()) and metrics["data_dir"] == str(test_only.resolve())
    assert "run's own data folder" in metrics["threshold_note"]
    # The same thresholds as the run's own evaluation, which chose them on that very validation split.
    own = evaluate_run(run.path, gradcam_examples=0).metrics
    assert metrics["selected_thresholds"] == own["selected_thresholds"] and "threshold_note" not in own
    assert own["threshold_data_dir"] == str(data_dir.resolve())
    evaluate_run(run.path, data_dir=test_only, gradcam_examples=0)
    page = run.report_path.read_text(encoding="utf-8")
    assert "has no validation split, so the decision thresholds were chosen on the validation split" in page


def test_no_validation_anywhere_is_a_clear_error(tmp_path):
    data_dir = fake_runs.make_data(tmp_path / "own", splits=("train", "test"))
    run = fake_runs.make_run(tmp_path / "runs", data_dir)
    test_only = fake_runs.make_data(tmp_path / "other", splits=("test",))
    with pytest.raises(CatsdogsError, match=r"neither the data folder nor the run's own data folder has one"):
        evaluate_run(run.path, data_dir=test_only)
    with pytest.raises(CatsdogsError, match=r"Pass --data a folder .* validation split.*Received: data_dir="):
        evaluate_run(run.path)


def test_more_than_two_classes(tmp_path):
    class_names = ("birds", "cats", "dogs")
    data_dir = fake_runs.make_data(tmp_path, class_names=class_names)
    run = fake_runs.make_run(tmp_path / "runs", data_dir, class_names=class_names)
    metrics = evaluate_run(run.path, gradcam_examples=2).metrics
    assert len(metrics["at_decision_threshold"]["confusion_matrix"]["counts"]) == 3
    assert metrics["averaging"] == "one-vs-rest, macro" and "selected_thresholds" not in metrics
    assert "Metrics" in run.report_path.read_text(encoding="utf-8")


def test_report_is_self_contained(evaluated):
    page = evaluated[0].report_path.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    # Nothing to fetch: no external script, style sheet, font or image.
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page and "<script" not in page
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) >= 10
    for source in sources:
        prefix, _, data = source.partition(",")
        assert prefix == "data:image/png;base64"
        assert base64.b64decode(data)[:8] == PNG_SIGNATURE
    assert "95% interval" in page and "cat.666.jpg" in page and "truncated" in page


def test_report_after_training_only(tmp_path):
    data_dir = fake_runs.make_data(tmp_path)
    run = fake_runs.make_run(tmp_path / "runs", data_dir)
    page = write_report(run.path).read_text(encoding="utf-8")
    assert "Not evaluated yet" in page and '<section id="config">' in page
    assert "80.0%" in page, "training's own test accuracy is shown"


def _section(page, key):
    return re.search(rf'<section id="{key}">(.*?)</section>', page, re.DOTALL).group(1)


def test_deployment_without_an_export_says_how_to_make_one(tmp_path):
    data_dir = fake_runs.make_data(tmp_path, splits=("validation",))
    run = fake_runs.make_run(tmp_path / "runs", data_dir)
    page = write_report(run.path).read_text(encoding="utf-8")
    assert '<a href="#deployment">Deployment</a>' in page
    assert (
        _section(page, "deployment")
        == '<h2>Deployment</h2><p class="muted">No export yet: <code>catsdogs export RUN</code></p>'
    )


def test_deployment_lists_finished_exports_only_and_flags_an_unreadable_record(tmp_path):
    data_dir = fake_runs.make_data(tmp_path, splits=("validation",))
    run = fake_runs.make_run(tmp_path / "runs", data_dir)
    exports = run.path / EXPORT_DIR
    # An export being built (hidden) and a folder without export.json are not exports.
    for name, record in ((".onnx.tmp-1", "{}"), ("onnx-int8", "{not json"), ("notes", None)):
        (exports / name).mkdir(parents=True)
        if record is not None:
            (exports / name / EXPORT_RECORD_FILE).write_text(record, encoding="utf-8")
    section = _section(write_report(run.path).read_text(encoding="utf-8"), "deployment")
    assert section.count("<tr class=") == 1 and '<tr class="unverified"><td>onnx-int8</td>' in section
    assert "<code>export/onnx-int8</code>: its export.json cannot be read" in section
    assert "notes" not in section and "tmp" not in section and "No export yet" not in section


def _chromium(*arguments, user_data_dir):
    command = [
        shutil.which("chromium"),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_data_dir}",
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(evaluated, tmp_path):
    report_path = evaluated[0].report_path
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)
    _chromium(
        "--window-size=1280,5200",
        f"--screenshot={screenshot}",
        report_path.as_uri(),
        user_data_dir=tmp_path / "profile-1",
    )
    assert screenshot.read_bytes()[:8] == PNG_SIGNATURE
    shutil.copy(report_path, ARTIFACTS / "report.html")

    checked = tmp_path / "report-check.html"
    checked.write_text(
        report_path.read_text(encoding="utf-8").replace("</body>", RENDER_CHECK_SCRIPT + "</body>"), encoding="utf-8"
    )
    dom = _chromium("--dump-dom", checked.as_uri(), user_data_dir=tmp_path / "profile-2").stdout
    for section in SECTIONS:
        assert f'<section id="{section}">' in dom
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.DOTALL)
    assert found, "the render check did not run"
    images = json.loads(found.group(1).replace("&quot;", '"'))
    assert {row["figure"] for row in images} >= {"confusion_matrix", "roc", "misclassified", "gradcam_01"}
    broken = [row for row in images if not (row["complete"] and row["width"] > 0)]
    assert not broken, f"images that did not render: {broken}"
