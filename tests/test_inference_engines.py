"""inference.engines: a run folder's model in ONNX Runtime where it agrees with Keras, else in Keras.

Tiny fake runs: "auto" converts and gives Keras's answers (with test-time
augmentation too), falls back to Keras when the check disagrees, reuses a
verified export of the same model without converting, ignores an export of
another model, keeps few photos in Keras, and "keras" never imports ONNX
Runtime. `predict` decodes on threads and keeps order and error rows;
`evaluate` records the engine. A slow test compares both engines on the demo
run's real test split.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy
import pytest

from catsdogs.cli import build_parser, main
from catsdogs.config import load_config
from catsdogs.data.dataset import list_images
from catsdogs.errors import CatsdogsError
from catsdogs.evaluation.evaluate import evaluate_run
from catsdogs.export import export_run
from catsdogs.inference import Predictor, engines
from catsdogs.models.saving import save_model
from catsdogs.runs import EXPORT_RECORD_FILE, RunDir
from catsdogs.runtime.agreement import AGREEMENT_TOLERANCE, agrees, relative_difference
from catsdogs.runtime.predictions import ImagePredictor
from fake_runs import make_data, make_run, untrained_seed_cnn

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("engines"), per_class=6)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    """A run around the untrained seed CNN: not flip-invariant, so test-time augmentation changes its answers."""
    return make_run(tmp_path_factory.mktemp("engine-runs"), data_dir, model_name="seed_cnn", model=untrained_seed_cnn())


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory, run):
    """A copy of `run` with its verified ONNX export in RUN/export/onnx/."""
    copy = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(run.path, copy)
    assert export_run(copy).verified
    return RunDir(copy)


@pytest.fixture(scope="module")
def photos(data_dir):
    paths, _, _ = list_images(data_dir / "test")
    return paths


@pytest.fixture
def conversions(monkeypatch):
    """Count the conversions to ONNX (a spy around the real one)."""
    calls = []
    convert = engines._convert

    def counting(model, image_size):
        calls.append(model.name)
        return convert(model, image_size)

    monkeypatch.setattr(engines, "_convert", counting)
    return calls


@pytest.fixture
def no_conversion(monkeypatch):
    def refuse(model, image_size):
        raise AssertionError("the model was converted to ONNX, but nothing should have been converted")

    monkeypatch.setattr(engines, "_convert", refuse)


def probabilities(rows):
    return numpy.array([[row.probabilities[name] for name in ("cats", "dogs")] for row in rows])


def assert_same_answers(rows, expected_rows, tolerance=1e-5):
    assert [row.label for row in rows] == [row.label for row in expected_rows]
    numpy.testing.assert_allclose(probabilities(rows), probabilities(expected_rows), rtol=0, atol=tolerance)


# ----------------------------------------------------------------------------- choosing the engine


def test_auto_converts_and_gives_the_keras_answers_with_and_without_flips(run, photos, conversions, monkeypatch):
    monkeypatch.setattr(engines, "CONVERSION_MIN_IMAGES", 0)
    keras_predictor = Predictor.from_run_dir(run.path, engine="keras", batch_size=5)
    onnx_predictor = Predictor.from_run_dir(run.path, engine="auto", batch_size=5)
    assert onnx_predictor.engine is None  # Chosen at the first prediction, when the number of photos is known.
    plain = onnx_predictor.predict(photos)
    assert conversions == ["seed_cnn"]
    assert onnx_predictor.engine == "onnxruntime"
    choice = onnx_predictor.runner.choice
    assert (choice.source, choice.requested) == ("converted", "auto")
    assert choice.difference is not None and choice.difference <= 1e-5
    assert "agrees with Keras" in choice.reason
    assert_same_answers(plain, keras_predictor.predict(photos))
    assert keras_predictor.engine == "keras"
    # Test-time augmentation averages each photo with its mirror image in both engines alike.
    keras_predictor.test_time_augmentation = onnx_predictor.test_time_augmentation = True
    flipped = onnx_predictor.predict(photos)
    assert_same_answers(flipped, keras_predictor.predict(photos))
    assert numpy.abs(probabilities(flipped) - probabilities(plain)).max() > 1e-4
    assert conversions == ["seed_cnn"] and onnx_predictor.engine == "onnxruntime"


def test_auto_falls_back_to_keras_when_the_first_batch_disagrees(run, photos, monkeypatch, caplog):
    monkeypatch.setattr(engines, "CONVERSION_MIN_IMAGES", 0)
    monkeypatch.setattr(engines, "relative_difference", lambda expected, actual: 0.25)
    predictor = Predictor.from_run_dir(run.path, engine="auto", batch_size=4)
    with caplog.at_level(logging.INFO, logger="catsdogs.inference.engines"):
        rows = predictor.predict(photos)
    assert predictor.engine == "keras" and predictor.runner.session is None
    assert (
        predictor.runner.choice.difference == 0.25 and "differed from Keras by 0.25" in predictor.runner.choice.reason
    )
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert [record.getMessage() for record in warnings] == [
        f"Inference engine: Keras ({predictor.runner.choice.reason})."
    ]
    # Every batch, the first included, is Keras's answer exactly.
    assert_same_answers(rows, Predictor.from_run_dir(run.path, engine="keras", batch_size=4).predict(photos), 0.0)


def test_the_onnxruntime_engine_fails_clearly_rather_than_fall_back(run, photos, monkeypatch):
    monkeypatch.setattr(engines, "relative_difference", lambda expected, actual: 0.25)
    predictor = Predictor.from_run_dir(run.path, engine="onnxruntime")
    with pytest.raises(CatsdogsError, match="differs from Keras by 0.25.*Received: engine=onnxruntime"):
        predictor.predict(photos[:2])
    monkeypatch.setattr(engines, "_convert", lambda model, image_size: (None, 0.0, "ImportError: no tf2onnx"))
    with pytest.raises(CatsdogsError, match="converting the model to ONNX failed.*pip install tf2onnx"):
        Predictor.from_run_dir(run.path, engine="onnxruntime").predict(photos[:2])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(CatsdogsError, match="ONNX Runtime is not installed.*Received: engine=onnxruntime"):
        Predictor.from_run_dir(run.path, engine="onnxruntime").predict(photos[:2])
    # Without ONNX Runtime, auto runs Keras and says why.
    predictor = Predictor.from_run_dir(run.path, engine="auto")
    predictor.predict(photos[:2])
    assert predictor.engine == "keras" and "ONNX Runtime is not installed" in predictor.runner.choice.reason


def test_few_photos_stay_in_keras_under_auto_when_there_is_no_export(run, photos, no_conversion):
    predictor = Predictor.from_run_dir(run.path, engine="auto")
    assert len(photos) < engines.CONVERSION_MIN_IMAGES
    predictor.predict(photos)
    assert predictor.engine == "keras"
    assert "too few to repay converting" in predictor.runner.choice.reason
    assert "catsdogs export RUN" in predictor.runner.choice.reason


def test_a_verified_export_of_this_model_is_reused_without_conversion(exported_run, photos, no_conversion):
    predictor = Predictor.from_run_dir(exported_run.path, engine="auto", batch_size=5)
    rows = predictor.predict(photos[:3])  # Even a few photos: the export costs nothing to open.
    choice = predictor.runner.choice
    assert (predictor.engine, choice.source) == ("onnxruntime", "export")
    assert "verified ONNX export" in choice.reason and choice.difference is None
    assert_same_answers(rows, Predictor.from_run_dir(exported_run.path, engine="keras").predict(photos[:3]))


@pytest.mark.parametrize("damage", ["another model", "unverified", "tampered"])
def test_an_export_that_does_not_fit_the_run_is_not_used(
    exported_run, photos, tmp_path, conversions, monkeypatch, damage
):
    monkeypatch.setattr(engines, "CONVERSION_MIN_IMAGES", 0)
    run = RunDir(shutil.copytree(exported_run.path, tmp_path / "run"))
    record_path = run.export_dir("onnx") / EXPORT_RECORD_FILE
    if damage == "another model":
        # Retrained in place: the export still describes the old model.keras.
        save_model(untrained_seed_cnn(seed=7), run.model_path)
        expected = "was made from another model.keras"
    elif damage == "unverified":
        record_path.write_text(json.dumps({**json.loads(record_path.read_text()), "verified": False}))
        expected = "did not pass its check against Keras"
    else:
        (run.export_dir("onnx") / "model.onnx").write_bytes(b"not the exported model")
        expected = "cannot be used"
    predictor = Predictor.from_run_dir(run.path, engine="auto")
    rows = predictor.predict(photos)
    assert conversions == ["seed_cnn"]
    assert (predictor.engine, predictor.runner.choice.source) == ("onnxruntime", "converted")
    assert expected in predictor.runner.choice.reason
    assert_same_answers(rows, Predictor.from_run_dir(run.path, engine="keras").predict(photos))


# ----------------------------------------------------------------------------- the decoding pipeline


def test_threaded_predict_keeps_the_order_and_the_error_rows(run, photos, tmp_path, monkeypatch):
    monkeypatch.setattr("catsdogs.inference.predictor.parallel_calls", lambda: 2)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a photo")
    images = [*photos[:5], str(broken), *photos[5:], str(tmp_path / "missing.png")]
    predictor = Predictor.from_run_dir(run.path, engine="keras", batch_size=3)
    threads = set()
    load_image = Predictor.load_image

    def recording(self, image):
        import threading

        threads.add(threading.current_thread().name)
        return load_image(self, image)

    monkeypatch.setattr(Predictor, "load_image", recording)
    rows = predictor.predict(images)
    assert any(name.startswith("catsdogs-decode") for name in threads)
    sequential = ImagePredictor.predict(predictor, images)
    assert [row.to_dict() for row in rows] == [row.to_dict() for row in sequential]
    assert [row.source for row in rows] == images
    assert rows[5].error and rows[-1].error.startswith("cannot read file") and all(row.ok for row in rows[:5])


# ----------------------------------------------------------------------------- evaluate and the command line


def test_evaluate_records_the_engine_and_the_command_prints_it(exported_run, tmp_path, capsys, no_conversion):
    run = RunDir(shutil.copytree(exported_run.path, tmp_path / "run"))
    metrics = evaluate_run(run.path, gradcam_examples=0).metrics
    assert metrics["engine"] == "onnxruntime"
    assert metrics["engine_choice"]["source"] == "export" and metrics["engine_choice"]["requested"] == "auto"
    assert main(["evaluate", str(run.path), "--engine", "keras"]) == 0
    printed = capsys.readouterr().out
    assert "engine:     keras (the keras engine was asked for)" in printed
    stored = run.read_metrics()["evaluation"]
    assert stored[stored["latest"]]["engine"] == "keras"
    assert stored[stored["latest"]]["engine_choice"]["requested"] == "keras"


def test_the_report_after_training_evaluates_with_the_configured_engine(run, tmp_path, monkeypatch, no_conversion):
    from catsdogs import workflow

    trained = RunDir(shutil.copytree(run.path, tmp_path / "run"))
    monkeypatch.setattr(workflow, "train", lambda config, data_dir: trained)
    config = load_config(overrides=["predict.engine=keras", "predict.abstain_target_error=0.02"])
    assert workflow.train_and_report(config, "DATA") is trained
    stored = trained.read_metrics()["evaluation"]
    # The configured target of the "unsure" rule reaches the evaluation too.
    assert stored[stored["latest"]]["abstain"]["target_error"] == 0.02
    assert stored[stored["latest"]]["engine_choice"] == {
        "engine": "keras",
        "requested": "keras",
        "source": "keras",
        "reason": "the keras engine was asked for",
        "difference": None,
    }


def test_predict_prints_the_engine_and_refuses_what_an_export_cannot_do(exported_run, photos, capsys, no_conversion):
    assert main(["predict", str(exported_run.path), photos[0], "--format", "json"]) == 0
    assert "catsdogs predict: engine: onnxruntime (the run's verified ONNX export" in capsys.readouterr().err
    export_dir = str(exported_run.export_dir("onnx"))
    assert main(["predict", export_dir, photos[0], "--engine", "keras"]) == 2
    assert "holds no Keras model, so --engine keras cannot apply" in capsys.readouterr().err
    assert main(["predict", export_dir, photos[0], "--engine", "onnxruntime"]) == 0


def test_the_engine_argument_and_config_key():
    for command in ("predict", "evaluate"):
        assert build_parser().parse_args([command, "RUN"]).engine == "auto"
        assert build_parser().parse_args([command, "RUN", "--engine", "keras"]).engine == "keras"
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "RUN", "--engine", "tensorrt"])
    assert load_config().predict.engine == "auto"
    assert load_config(overrides=["predict.engine=keras"]).predict.engine == "keras"
    with pytest.raises(CatsdogsError, match="predict.engine"):
        load_config(overrides=["predict.engine=onnx"])
    with pytest.raises(CatsdogsError, match="Received: engine='onnx'"):
        engines.check_engine("onnx")


def test_the_agreement_rule():
    keras_output = numpy.array([[0.2], [0.9]])
    assert relative_difference(keras_output, keras_output + 5e-4) == pytest.approx(5e-4 / 1.9)
    # Large outputs (logits, activations) are compared relatively, small ones absolutely.
    assert relative_difference([numpy.array([100.0])], [numpy.array([100.05])]) == pytest.approx(0.05 / 101)
    assert agrees(relative_difference(keras_output, keras_output + 1e-4))
    assert not agrees(relative_difference(keras_output, keras_output + 3e-3)) and AGREEMENT_TOLERANCE == 1e-3
    assert not agrees(relative_difference(keras_output, numpy.array([[numpy.nan], [0.9]])))
    with pytest.raises(ValueError, match="different shapes"):
        relative_difference(keras_output, keras_output[:1])


def test_the_keras_engine_never_imports_onnx_runtime(run, photos, tmp_path):
    output = tmp_path / "predictions.json"
    script = textwrap.dedent(
        f"""
        import sys

        attempted = []

        class Refuse:
            # Any import of ONNX Runtime or the converter fails, and is recorded.
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in ("onnxruntime", "tf2onnx", "onnx"):
                    attempted.append(name)
                    raise ImportError(f"blocked: {{name}}")
                return None

        sys.meta_path.insert(0, Refuse())
        from catsdogs.cli import main

        status = main(["predict", {str(run.path)!r}, {photos[0]!r}, "--engine", "keras", "--format", "json",
                       "--output", {str(output)!r}])
        print(status, attempted)
        """
    )
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY / "src")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=environment
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "[]"], result.stdout + result.stderr
    assert "engine: keras (the keras engine was asked for)" in result.stderr
    assert json.loads(output.read_text())[0]["error"] is None


# ----------------------------------------------------------------------------- the demo run, on real photos


def _demo_run():
    runs = sorted(path for path in (REPOSITORY / "runs").glob("*") if (path / "model.keras").is_file())
    return runs[-1] if runs else None


@pytest.mark.slow
def test_onnx_runtime_agrees_with_keras_on_the_demo_test_split():
    test_split = REPOSITORY / "data" / "prepared" / "test"
    run_path = _demo_run()
    if not test_split.is_dir():
        pytest.skip(f"no prepared test split at {test_split}: run `make demo` first")
    if run_path is None:
        pytest.skip(f"no trained run under {REPOSITORY / 'runs'}: run `make demo` first")
    sys.path.insert(0, str(REPOSITORY / "benchmarks"))
    from runtime_agreement import compare_engines

    result = compare_engines(run_path, test_split)
    assert result["photos"] >= 1000 and result["errors"] == 0
    assert result["onnx_engine"] == "onnxruntime"
    assert result["label_agreement"] == 1.0
    assert result["max_probability_difference"] <= 1e-3
