"""runtime.OnnxPredictor and `catsdogs predict EXPORT_DIR`: the same answers as the Keras Predictor on PNG photos,
the same error rows, outputs and exit status, refusal of tampered or partial exports, and no TensorFlow at all."""

import csv
import io
import json
import shutil
import subprocess
import sys
import textwrap

import numpy
import pytest
from PIL import Image

import catsdogs.inference
import catsdogs.runtime
from catsdogs.cli import main
from catsdogs.cli.common import TRAINING_STACK
from catsdogs.errors import CatsdogsError
from catsdogs.export import export_run
from catsdogs.fileio import checksum_path
from catsdogs.inference import Predictor
from catsdogs.runs import EXPORT_RECORD_FILE, LABELS_FILE, PREPROCESSING_FILE
from catsdogs.runtime import OnnxPredictor, is_export_dir
from fake_runs import colour_square, make_data, make_run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A fake run (the fixed red-minus-green model) and its ONNX export folder: (run, export folder)."""
    root = tmp_path_factory.mktemp("runtime-predictor")
    data_dir = make_data(root, per_class=3)
    run = make_run(root / "runs", data_dir)
    return run, export_run(run.path).export_dir.path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """PNG photos at the model's size and at other sizes (shrunk and enlarged on the way in), and a bad file."""
    folder = tmp_path_factory.mktemp("runtime-photos")
    sizes = [(32, 32), (64, 48), (90, 33), (40, 120)]
    paths = []
    for index, (height, width) in enumerate(sizes):
        strength = 60 * index
        square = colour_square(200 - strength, strength, seed=index, size=max(height, width))
        path = folder / f"photo{index}.png"
        Image.fromarray(square[:height, :width]).save(path)
        paths.append(str(path))
    bad = folder / "broken.png"
    bad.write_bytes(b"this is not a photo")
    return {"good": paths, "bad": str(bad)}


@pytest.fixture
def export_copy(exported, tmp_path):
    """A fresh copy of the export folder, for tests that damage it."""
    _, export_dir = exported
    return shutil.copytree(export_dir, tmp_path / "onnx")


# ----------------------------------------------------------------------------- the same answers as Keras


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_onnx_predictor_gives_the_keras_predictors_answers_on_png_photos(exported, photos, threshold):
    run, export_dir = exported
    onnx_rows = OnnxPredictor.from_export_dir(export_dir, threshold=threshold, batch_size=3).predict(photos["good"])
    keras_rows = Predictor.from_run_dir(run.path, threshold=threshold, batch_size=3).predict(photos["good"])
    assert [row.source for row in onnx_rows] == photos["good"]
    assert [row.label for row in onnx_rows] == [row.label for row in keras_rows]
    assert all(row.ok for row in onnx_rows)
    for onnx_row, keras_row in zip(onnx_rows, keras_rows):
        assert onnx_row.probability == pytest.approx(keras_row.probability, abs=1e-5)
        assert list(onnx_row.probabilities) == ["cats", "dogs"]
        for name in ("cats", "dogs"):
            assert onnx_row.probabilities[name] == pytest.approx(keras_row.probabilities[name], abs=1e-5)
    # The photos are chosen so that both labels appear; otherwise agreement would prove little.
    assert {row.label for row in onnx_rows} == {"cats", "dogs"}


def test_predict_pixels_and_test_time_augmentation_match_keras(exported, photos):
    run, export_dir = exported
    onnx_predictor = OnnxPredictor.from_export_dir(export_dir)
    pixels = numpy.stack([onnx_predictor.load_image(path) for path in photos["good"]])
    probabilities = onnx_predictor.predict_pixels(pixels)
    assert probabilities.shape == (len(photos["good"]), 2)
    numpy.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    keras_predictor = Predictor.from_run_dir(run.path, test_time_augmentation=False)
    numpy.testing.assert_allclose(probabilities, keras_predictor.predict_pixels(pixels), atol=1e-5)
    augmented = OnnxPredictor.from_export_dir(export_dir, test_time_augmentation=True)
    fed = []
    run_model = augmented.run_model
    augmented.run_model = lambda batch: fed.append(batch) or run_model(batch)
    keras_predictor.test_time_augmentation = True
    numpy.testing.assert_allclose(augmented.predict_pixels(pixels), keras_predictor.predict_pixels(pixels), atol=1e-5)
    # The red-minus-green model answers the same for a photo and its mirror image, so check what it was fed.
    assert len(fed) == 2
    numpy.testing.assert_array_equal(fed[1], fed[0][:, :, ::-1, :])


def test_both_predictors_share_the_result_type_and_the_error_rows(exported, photos, tmp_path):
    run, export_dir = exported
    assert catsdogs.inference.Prediction is catsdogs.runtime.Prediction
    assert catsdogs.inference.decide is catsdogs.runtime.decide
    inputs = [photos["bad"], str(tmp_path / "missing.png"), numpy.zeros((4, 4, 2), numpy.uint8), photos["good"][0]]
    sources = ["bad", "missing", "array", "good"]
    onnx_rows = OnnxPredictor.from_export_dir(export_dir).predict(inputs, sources=sources)
    keras_rows = Predictor.from_run_dir(run.path).predict(inputs, sources=sources)
    assert [row.error for row in onnx_rows] == [row.error for row in keras_rows]
    assert [row.ok for row in onnx_rows] == [False, False, False, True]
    assert onnx_rows[1].error.startswith("cannot read file")


# ----------------------------------------------------------------------------- the command line


def _predict(folder, photos, *arguments, capsys):
    status = main(["predict", str(folder), *photos, *arguments])
    return status, capsys.readouterr()


def test_predict_on_an_export_folder_writes_what_a_run_folder_does(exported, photos, capsys):
    run, export_dir = exported
    files = [*photos["good"][:2], photos["bad"]]
    for output_format in ("table", "csv", "json"):
        status, export_output = _predict(export_dir, files, "--format", output_format, capsys=capsys)
        run_status, run_output = _predict(run.path, files, "--format", output_format, capsys=capsys)
        assert (status, run_status) == (1, 1)
        assert "3 inputs, 2 predicted, 1 failed" in export_output.err
        if output_format == "csv":
            export_rows = list(csv.reader(io.StringIO(export_output.out)))
            run_rows = list(csv.reader(io.StringIO(run_output.out)))
            assert (
                export_rows[0]
                == run_rows[0]
                == [
                    "file",
                    "label",
                    "probability",
                    "probability_cats",
                    "probability_dogs",
                    "answer",
                    "abstained",
                    "calibrated_probability",
                    "reason",
                    "error",
                ]
            )
            assert [row[:2] + row[-1:] for row in export_rows] == [row[:2] + row[-1:] for row in run_rows]
            assert export_rows[3][1] == "" and "not an image" in export_rows[3][-1]
        elif output_format == "json":
            export_rows, run_rows = json.loads(export_output.out), json.loads(run_output.out)
            assert [list(row) for row in export_rows] == [list(row) for row in run_rows]
            assert [(row["file"], row["label"], row["error"]) for row in export_rows] == [
                (row["file"], row["label"], row["error"]) for row in run_rows
            ]
        else:
            assert [line.split()[:2] for line in export_output.out.splitlines()] == [
                line.split()[:2] for line in run_output.out.splitlines()
            ]


def test_predict_on_an_export_folder_exits_0_when_every_photo_succeeds(exported, photos, capsys):
    _, export_dir = exported
    status, output = _predict(export_dir, photos["good"], "--threshold", "0.3", "--batch-size", "2", capsys=capsys)
    assert status == 0
    assert "4 inputs, 4 predicted, 0 failed" in output.err


def test_predict_refuses_an_export_folder_without_images(exported, capsys):
    _, export_dir = exported
    status, output = _predict(export_dir, [], capsys=capsys)
    assert status == 2
    assert "after the export folder" in output.err


def test_predict_warns_about_an_unverified_export(export_copy, photos, capsys):
    record = json.loads((export_copy / EXPORT_RECORD_FILE).read_text(encoding="utf-8"))
    (export_copy / EXPORT_RECORD_FILE).write_text(json.dumps({**record, "verified": False}), encoding="utf-8")
    status, output = _predict(export_copy, photos["good"][:1], capsys=capsys)
    assert status == 0
    assert "did not pass its check against the Keras model" in output.err


# ----------------------------------------------------------------------------- refusals


def test_is_export_dir(exported, photos, export_copy):
    run, export_dir = exported
    assert is_export_dir(export_dir)
    assert not is_export_dir(run.path) and not is_export_dir(photos["good"][0])
    assert not is_export_dir(export_dir / "missing")
    (export_copy / EXPORT_RECORD_FILE).unlink()
    with pytest.raises(CatsdogsError, match=f"has no {EXPORT_RECORD_FILE}"):
        is_export_dir(export_copy)


def test_a_tampered_model_is_refused(export_copy, photos, capsys):
    model_path = export_copy / "model.onnx"
    model_path.write_bytes(model_path.read_bytes() + b"\0")
    with pytest.raises(CatsdogsError, match="does not match its SHA-256") as refused:
        OnnxPredictor.from_export_dir(export_copy)
    assert str(model_path) in str(refused.value)
    status, output = _predict(export_copy, photos["good"][:1], capsys=capsys)
    assert status == 2 and "model.onnx" in output.err and output.out == ""


@pytest.mark.parametrize("name", [LABELS_FILE, "model.onnx", "model.onnx.sha256"])
def test_a_partial_export_folder_is_refused_naming_the_missing_file(export_copy, photos, capsys, name):
    (export_copy / name).unlink()
    with pytest.raises(CatsdogsError, match=f"incomplete: it has no {name}, ") as refused:
        OnnxPredictor.from_export_dir(export_copy)
    assert str(refused.value).endswith(f"missing={name}")
    status, output = _predict(export_copy, photos["good"][:1], capsys=capsys)
    assert status == 2 and f"missing={name}" in output.err


def test_a_missing_folder_and_inconsistent_files_are_refused(export_copy, tmp_path):
    with pytest.raises(CatsdogsError, match="export folder does not exist"):
        OnnxPredictor.from_export_dir(tmp_path / "nowhere")
    (export_copy / LABELS_FILE).write_text('["dogs", "cats"]', encoding="utf-8")
    with pytest.raises(CatsdogsError, match="name different classes"):
        OnnxPredictor.from_export_dir(export_copy)
    (export_copy / LABELS_FILE).write_text("not json", encoding="utf-8")
    with pytest.raises(CatsdogsError, match=f"{LABELS_FILE} cannot be read as JSON"):
        OnnxPredictor.from_export_dir(export_copy)
    preprocessing = json.loads((export_copy / PREPROCESSING_FILE).read_text(encoding="utf-8"))
    (export_copy / LABELS_FILE).write_text('["cats", "dogs"]', encoding="utf-8")
    (export_copy / PREPROCESSING_FILE).write_text(json.dumps({**preprocessing, "image_size": [32]}), encoding="utf-8")
    with pytest.raises(CatsdogsError, match=r"Received: image_size=\[32\]"):
        OnnxPredictor.from_export_dir(export_copy)
    assert checksum_path(export_copy / "model.onnx").is_file()


# ----------------------------------------------------------------------------- no TensorFlow


def test_an_export_predicts_with_the_training_stack_blocked(exported, photos, tmp_path):
    _, export_dir = exported
    output = tmp_path / "predictions.json"
    script = textwrap.dedent(
        f"""
        import json
        import sys

        # None in sys.modules makes `import tensorflow` (and every other package of the `train` extra) raise
        # ModuleNotFoundError, as on the base install.
        for name in {list(TRAINING_STACK.modules)!r}:
            sys.modules[name] = None
        from catsdogs.cli import main
        from catsdogs.runtime import OnnxPredictor

        arguments = [{str(export_dir)!r}, {photos["good"][0]!r}, "--format", "json", "--output", {str(output)!r}]
        status = main(["predict", *arguments])
        rows = OnnxPredictor.from_export_dir({str(export_dir)!r}).predict([{photos["good"][1]!r}])
        print(json.dumps({{"status": status, "label": rows[0].label, "error": rows[0].error}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == 0 and summary["error"] is None and summary["label"] in ("cats", "dogs")
    predicted = json.loads(output.read_text(encoding="utf-8"))
    assert [(row["file"], row["error"]) for row in predicted] == [(photos["good"][0], None)]
    assert predicted[0]["label"] in ("cats", "dogs")


# ----------------------------------------------------------------------------- the run's test-time augmentation


def _model_calls(monkeypatch):
    """Count OnnxPredictor's model calls: test-time augmentation makes two per batch instead of one."""
    calls = []
    run_model = OnnxPredictor.run_model
    monkeypatch.setattr(OnnxPredictor, "run_model", lambda self, pixels: calls.append(1) or run_model(self, pixels))
    return calls


def test_the_runs_test_time_augmentation_travels_with_its_export(exported, photos, tmp_path, monkeypatch, capsys):
    _, plain_export_dir = exported
    assert json.loads((plain_export_dir / PREPROCESSING_FILE).read_text())["test_time_augmentation"] is False
    assert OnnxPredictor.from_export_dir(plain_export_dir).test_time_augmentation is False
    run = make_run(tmp_path / "runs", make_data(tmp_path, per_class=2, splits=("validation",)))
    config = run.read_config()
    config["model"]["test_time_augmentation"] = True
    run.write_config(config)
    export_dir = export_run(run.path).export_dir.path
    assert json.loads((export_dir / EXPORT_RECORD_FILE).read_text())["test_time_augmentation"] is True
    assert json.loads((export_dir / PREPROCESSING_FILE).read_text())["test_time_augmentation"] is True
    assert OnnxPredictor.from_export_dir(export_dir).test_time_augmentation is True
    assert OnnxPredictor.from_export_dir(export_dir, test_time_augmentation=False).test_time_augmentation is False
    # The command line takes the export's setting unless --tta or --no-tta says otherwise.
    calls = _model_calls(monkeypatch)
    for arguments, expected_calls in (([], 2), (["--no-tta"], 1), (["--tta"], 2)):
        calls.clear()
        status, _ = _predict(export_dir, photos["good"][:1], *arguments, capsys=capsys)
        assert (status, len(calls)) == (0, expected_calls), arguments
    calls.clear()
    assert _predict(plain_export_dir, photos["good"][:1], capsys=capsys)[0] == 0 and len(calls) == 1


def test_a_test_time_augmentation_that_is_not_true_or_false_is_refused(export_copy):
    path = export_copy / PREPROCESSING_FILE
    described = json.loads(path.read_text())
    described["test_time_augmentation"] = "yes"
    path.write_text(json.dumps(described))
    with pytest.raises(CatsdogsError, match=r"test_time_augmentation as true or false.*Received: .*='yes'$"):
        OnnxPredictor.from_export_dir(export_copy)
    # An export made before the setting was recorded takes the default config's (false).
    del described["test_time_augmentation"]
    path.write_text(json.dumps(described))
    assert OnnxPredictor.from_export_dir(export_copy).test_time_augmentation is False
