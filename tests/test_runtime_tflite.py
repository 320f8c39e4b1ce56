"""runtime.TflitePredictor and `catsdogs predict EXPORT_DIR` on TFLite exports: the Keras Predictor's answers in the
LiteRT interpreter (float32) or its labels (int8), the predictor picked by the export's format, refusal of tampered,
partial or foreign folders, a clear message without ai-edge-litert, and no TensorFlow at all."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy
import pytest
from PIL import Image

from catsdogs.cli import main
from catsdogs.errors import CatsdogsError
from catsdogs.export import export_run
from catsdogs.inference import Predictor
from catsdogs.runs import EXPORT_RECORD_FILE
from catsdogs.runtime import (
    OnnxPredictor,
    TflitePredictor,
    export_format,
    is_export_dir,
    open_export_predictor,
)
from catsdogs.runtime.tflite_predictor import open_interpreter
from fake_runs import colour_square, make_data, make_run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A fake run (the fixed red-minus-green model) and its TFLite exports: (run, {quantize: export folder})."""
    root = tmp_path_factory.mktemp("runtime-tflite")
    run = make_run(root / "runs", make_data(root, per_class=3))
    folders = {
        quantize: export_run(run.path, format_name="tflite", quantize=quantize).export_dir.path
        for quantize in ("none", "int8")
    }
    return run, folders


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """PNG photos at the model's size and at other sizes, clearly red or clearly green, and a bad file."""
    folder = tmp_path_factory.mktemp("runtime-tflite-photos")
    paths = []
    for index, (height, width, red, green) in enumerate([(32, 32, 220, 0), (64, 48, 0, 220), (90, 33, 200, 10)]):
        path = folder / f"photo{index}.png"
        Image.fromarray(colour_square(red, green, seed=index, size=max(height, width))[:height, :width]).save(path)
        paths.append(str(path))
    bad = folder / "broken.png"
    bad.write_bytes(b"this is not a photo")
    return {"good": paths, "bad": str(bad)}


@pytest.fixture
def export_copy(exported, tmp_path):
    """A fresh copy of the float32 TFLite export folder, for tests that damage it."""
    _, folders = exported
    return shutil.copytree(folders["none"], tmp_path / "tflite")


def test_a_tflite_predictor_gives_the_keras_predictors_answers(exported, photos):
    run, folders = exported
    inputs = [*photos["good"], photos["bad"]]
    tflite_rows = TflitePredictor.from_export_dir(folders["none"], batch_size=2).predict(inputs)
    keras_rows = Predictor.from_run_dir(run.path, batch_size=2).predict(inputs)
    assert [row.label for row in tflite_rows] == [row.label for row in keras_rows]
    assert [row.error for row in tflite_rows] == [row.error for row in keras_rows]
    assert [row.ok for row in tflite_rows] == [True, True, True, False]
    for tflite_row, keras_row in zip(tflite_rows[:3], keras_rows[:3]):
        for name in ("cats", "dogs"):
            assert tflite_row.probabilities[name] == pytest.approx(keras_row.probabilities[name], abs=1e-5)
    # The photos are chosen so that both labels appear; otherwise agreement would prove little.
    assert {row.label for row in tflite_rows[:3]} == {"cats", "dogs"}


def test_an_int8_predictor_gives_the_keras_labels(exported, photos):
    run, folders = exported
    predictor = TflitePredictor.from_export_dir(folders["int8"])
    assert predictor.precision == "int8" and predictor.verified
    int8_rows = predictor.predict(photos["good"])
    keras_rows = Predictor.from_run_dir(run.path).predict(photos["good"])
    assert [row.label for row in int8_rows] == [row.label for row in keras_rows]
    for int8_row, keras_row in zip(int8_rows, keras_rows):
        assert int8_row.probability == pytest.approx(keras_row.probability, abs=0.05)


def test_test_time_augmentation_runs_the_mirror_image_too(exported, photos):
    _, folders = exported
    predictor = TflitePredictor.from_export_dir(folders["none"], test_time_augmentation=True)
    pixels = numpy.stack([predictor.load_image(path) for path in photos["good"]])
    fed = []
    run_model = predictor.run_model
    predictor.run_model = lambda batch: fed.append(batch) or run_model(batch)
    probabilities = predictor.predict_pixels(pixels)
    assert probabilities.shape == (3, 2) and len(fed) == 2
    numpy.testing.assert_array_equal(fed[1], fed[0][:, :, ::-1, :])


# ----------------------------------------------------------------------------- the command line and the format


def test_predict_on_a_tflite_export_folder(exported, photos, capsys, tmp_path):
    _, folders = exported
    for quantize, folder in folders.items():
        output = tmp_path / f"{quantize}.json"
        arguments = [str(folder), *photos["good"], photos["bad"], "--format", "json", "--output", str(output)]
        assert main(["predict", *arguments]) == 1, quantize
        assert "4 inputs, 3 predicted, 1 failed" in capsys.readouterr().err
        rows = json.loads(output.read_text(encoding="utf-8"))
        expected = TflitePredictor.from_export_dir(folder).predict([*photos["good"], photos["bad"]])
        assert [(row["file"], row["label"]) for row in rows] == [(row.source, row.label) for row in expected]
        assert rows[3]["error"] and rows[3]["label"] is None


def test_the_exports_format_picks_its_predictor(exported, tmp_path):
    run, folders = exported
    assert export_format(folders["int8"]) == "tflite"
    assert isinstance(open_export_predictor(folders["int8"]), TflitePredictor)
    onnx_folder = export_run(run.path, out_dir=tmp_path / "onnx").export_dir.path
    assert isinstance(open_export_predictor(onnx_folder), OnnxPredictor)
    with pytest.raises(CatsdogsError, match=r"not in the onnx format.*Received: .*format=tflite$"):
        OnnxPredictor.from_export_dir(folders["none"])
    with pytest.raises(CatsdogsError, match=r"not in the tflite format.*Received: .*format=onnx$"):
        TflitePredictor.from_export_dir(onnx_folder)


def test_a_saved_model_export_is_refused_by_the_runtime_saying_why(export_copy, photos, capsys):
    record = json.loads((export_copy / EXPORT_RECORD_FILE).read_text())
    (export_copy / EXPORT_RECORD_FILE).write_text(json.dumps({**record, "format": "saved_model"}))
    with pytest.raises(CatsdogsError, match=r"runs in TensorFlow.*--format tflite.*format=saved_model$"):
        open_export_predictor(export_copy)
    assert main(["predict", str(export_copy), photos["good"][0]]) == 2
    assert "catsdogs predicts exports without TensorFlow" in capsys.readouterr().err
    (export_copy / EXPORT_RECORD_FILE).write_text(json.dumps({**record, "format": "pickle"}))
    with pytest.raises(CatsdogsError, match=r"names no format catsdogs knows.*format='pickle'$"):
        export_format(export_copy)


def test_a_saved_model_export_folder_is_an_export_folder(exported, tmp_path):
    run, _ = exported
    folder = export_run(run.path, format_name="saved_model", out_dir=tmp_path / "saved_model").export_dir.path
    assert is_export_dir(folder)
    # A folder of photos with a subfolder that happens to be called saved_model is not an export.
    photos = tmp_path / "photos"
    (photos / "saved_model").mkdir(parents=True)
    assert not is_export_dir(photos)


# ----------------------------------------------------------------------------- refusals


def test_a_tampered_tflite_model_is_refused(export_copy, photos, capsys):
    model_path = export_copy / "model.tflite"
    model_path.write_bytes(model_path.read_bytes() + b"\0")
    with pytest.raises(CatsdogsError, match="does not match its SHA-256") as refused:
        TflitePredictor.from_export_dir(export_copy)
    assert str(model_path) in str(refused.value)
    assert main(["predict", str(export_copy), photos["good"][0]]) == 2
    captured = capsys.readouterr()
    assert "model.tflite" in captured.err and "does not match its SHA-256" in captured.err and captured.out == ""


@pytest.mark.parametrize("name", ["model.tflite", "model.tflite.sha256"])
def test_a_partial_tflite_folder_is_refused_naming_the_missing_file(export_copy, name):
    (export_copy / name).unlink()
    with pytest.raises(CatsdogsError, match=f"incomplete: it has no {name}, ") as refused:
        TflitePredictor.from_export_dir(export_copy)
    assert str(refused.value).endswith(f"missing={name}")


def test_a_file_litert_cannot_load_is_refused(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"not a flatbuffer")
    with pytest.raises(CatsdogsError, match=r"cannot load this \.tflite file.*Received: path="):
        open_interpreter(path)


def test_without_ai_edge_litert_the_error_says_what_to_install(export_copy, monkeypatch):
    # None in sys.modules makes the import raise ImportError, as where the package is not installed.
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(CatsdogsError, match=r"`pip install ai-edge-litert`\. Received: path=.*model\.tflite$"):
        TflitePredictor.from_export_dir(export_copy)


# ----------------------------------------------------------------------------- no TensorFlow


def test_a_tflite_export_predicts_with_tensorflow_and_keras_blocked(exported, photos, tmp_path):
    _, folders = exported
    output = tmp_path / "predictions.json"
    script = textwrap.dedent(
        f"""
        import json
        import sys

        # None in sys.modules makes any `import tensorflow` or `import keras` raise ImportError.
        for name in ("tensorflow", "keras", "tf2onnx", "onnx"):
            sys.modules[name] = None
        from catsdogs.cli import main

        arguments = [{str(folders["int8"])!r}, {photos["good"][0]!r}, "--format", "json", "--output", {str(output)!r}]
        status = main(["predict", *arguments])
        loaded = [name for name in sys.modules if name.startswith(("tensorflow.", "keras."))]
        print(json.dumps({{"status": status, "loaded": loaded}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": 0, "loaded": []}
    predicted = json.loads(output.read_text(encoding="utf-8"))
    assert [(row["file"], row["error"]) for row in predicted] == [(photos["good"][0], None)]
    assert predicted[0]["label"] == "dogs"
