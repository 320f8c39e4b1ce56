"""catsdogs export --format saved_model|tflite and --quantize none|int8|float16: folder names, each artifact loaded
back by its own runtime with the Keras outputs (float) or the Keras accuracy (quantized), the SavedModel's
folder checksum, the builtin-ops rule, the calibration sample, the table, the report and the refusals."""

import hashlib
import json
import re
import shutil
import subprocess

import keras
import numpy
import pytest

from catsdogs.cli import main
from catsdogs.errors import CatsdogsError
from catsdogs.export import check_quantize, export_run
from catsdogs.export import formats as export_formats
from catsdogs.export import tflite as export_tflite
from catsdogs.export import verify as export_verify
from catsdogs.fileio import checksum_path, verify_checksum, write_checksum
from catsdogs.models.saving import load_model
from catsdogs.runs import EXPORT_RECORD_FILE, RunDir
from fake_runs import make_data, make_run, red_minus_green_model


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("formats"), per_class=4)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    return make_run(tmp_path_factory.mktemp("formats-runs"), data_dir)


@pytest.fixture(scope="module")
def export_of(run):
    """Export the module's run once per (format, quantize), on first use: `export_of("tflite", "int8")`."""
    done = {}

    def export(format_name, quantize="none"):
        if (format_name, quantize) not in done:
            done[format_name, quantize] = export_run(run.path, format_name=format_name, quantize=quantize)
        return done[format_name, quantize]

    return export


@pytest.fixture(scope="module")
def validation_pixels(data_dir):
    paths, labels = export_verify.list_split(data_dir / "validation", class_names=["cats", "dogs"])
    pixels, _ = next(export_verify.pixel_batches(paths, labels, image_size=(32, 32), batch_size=32))
    return pixels


def _litert_outputs(path, pixels):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    model_input = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(model_input["index"], list(pixels.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(model_input["index"], pixels)
    interpreter.invoke()
    return interpreter, interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


# ----------------------------------------------------------------------------- folder names


def test_each_format_and_precision_gets_its_own_folder(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    assert run_dir.export_dir("onnx") == tmp_path / "run" / "export" / "onnx"
    assert run_dir.export_dir("saved_model", "none") == tmp_path / "run" / "export" / "saved_model"
    assert run_dir.export_dir("tflite", "int8") == tmp_path / "run" / "export" / "tflite-int8"
    assert run_dir.export_dir("onnx", "float16") == tmp_path / "run" / "export" / "onnx-float16"


# ----------------------------------------------------------------------------- SavedModel


def test_a_saved_model_loads_in_tensorflow_and_gives_the_keras_outputs(export_of, run, validation_pixels):
    import tensorflow as tf

    result = export_of("saved_model")
    assert result.export_dir.path == run.path / "export" / "saved_model"
    assert result.verified and result.export_dir.missing_files() == []
    record = result.record
    assert (record["format"], record["quantize"], record["precision"]) == ("saved_model", "none", "float32")
    assert record["validation"]["label_agreement"] == 1.0 and record["validation"]["max_probability_difference"] <= 1e-4
    assert record["artifact"] == "saved_model" and (result.export_dir.path / "saved_model" / "saved_model.pb").is_file()
    loaded = tf.saved_model.load(str(result.export_dir.artifact_path))
    expected = load_model(run.model_path).predict_on_batch(validation_pixels)
    numpy.testing.assert_allclose(loaded.serve(validation_pixels).numpy(), expected, atol=1e-5, rtol=0)
    signature = loaded.signatures["serving_default"]
    described = json.loads(result.export_dir.preprocessing_path.read_text())
    assert described["input"]["name"] in signature.structured_input_signature[1]


def test_the_saved_models_checksum_covers_every_file_in_it(export_of, tmp_path):
    result = export_of("saved_model")
    folder = result.export_dir.artifact_path
    manifest = checksum_path(folder).read_text(encoding="utf-8")
    files = sorted(path.relative_to(folder.parent).as_posix() for path in folder.rglob("*") if path.is_file())
    assert [line.split("  ")[1] for line in manifest.splitlines()] == files
    assert result.record["artifact_sha256"] == hashlib.sha256(manifest.encode("utf-8")).hexdigest()
    assert verify_checksum(folder) == result.record["artifact_sha256"]
    if shutil.which("sha256sum"):
        # The manifest is in the sha256sum format, so the check also works without catsdogs.
        checked = subprocess.run(
            ["sha256sum", "-c", checksum_path(folder).name], cwd=folder.parent, capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    copy = shutil.copytree(result.export_dir.path, tmp_path / "copy") / "saved_model"
    weights = next((copy / "variables").glob("variables.data-*"))
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    with pytest.raises(CatsdogsError, match=rf"changed=saved_model/variables/{re.escape(weights.name)}$"):
        verify_checksum(copy, what="saved_model model")
    shutil.copy2(folder / "variables" / weights.name, weights)
    (copy / "extra.txt").write_text("slipped in")
    with pytest.raises(CatsdogsError, match=r"added=saved_model/extra\.txt$"):
        verify_checksum(copy)
    (copy / "extra.txt").unlink()
    (copy / "fingerprint.pb").unlink()
    with pytest.raises(CatsdogsError, match=r"missing=saved_model/fingerprint\.pb$"):
        verify_checksum(copy)


def test_a_folder_checksum_refuses_links_and_lists_nested_files(tmp_path):
    folder = tmp_path / "artifact"
    (folder / "inner").mkdir(parents=True)
    (folder / "inner" / "b.bin").write_bytes(b"b")
    (folder / "a.bin").write_bytes(b"a")
    digest = write_checksum(folder)
    assert checksum_path(folder).read_text() == (
        f"{hashlib.sha256(b'a').hexdigest()}  artifact/a.bin\n"
        f"{hashlib.sha256(b'b').hexdigest()}  artifact/inner/b.bin\n"
    )
    assert verify_checksum(folder) == digest
    (folder / "link.bin").symlink_to(folder / "a.bin")
    with pytest.raises(CatsdogsError, match=r"symbolic link.*Received: path=.*link\.bin$"):
        write_checksum(folder)


# ----------------------------------------------------------------------------- TFLite


def test_a_tflite_file_runs_in_litert_and_gives_the_keras_outputs(export_of, run, validation_pixels):
    result = export_of("tflite")
    assert result.export_dir.path == run.path / "export" / "tflite"
    assert result.verified and result.record["precision"] == "float32"
    writer = result.record["writer"]
    assert writer["converter"] == export_tflite.KERAS_CONVERTER and writer["supported_ops"] == ["TFLITE_BUILTINS"]
    interpreter, outputs = _litert_outputs(result.export_dir.artifact_path, validation_pixels)
    expected = load_model(run.model_path).predict_on_batch(validation_pixels)
    numpy.testing.assert_allclose(outputs, expected, atol=1e-5, rtol=0)
    described = json.loads(result.export_dir.preprocessing_path.read_text())
    assert described["input"]["name"] == interpreter.get_input_details()[0]["name"]


@pytest.mark.parametrize(("quantize", "stored"), [("float16", numpy.float16), ("int8", numpy.int8)])
def test_a_quantized_tflite_file_keeps_the_keras_accuracy(export_of, run, validation_pixels, quantize, stored):
    result = export_of("tflite", quantize)
    record = result.record
    assert result.export_dir.path == run.path / "export" / f"tflite-{quantize}"
    assert (record["quantize"], record["precision"]) == (quantize, quantize)
    assert result.verified, record["failures"]
    check = record["accuracy"]
    assert check["split"] == "test" and check["images"] == 8 and check["note"] is None
    assert check["keras"] - check["artifact"] <= export_verify.QUANTIZED_MAX_ACCURACY_DROP
    assert record["bounds"] == {"max_accuracy_drop": 0.003, "accuracy_split": "test"}
    # Label agreement and the probability difference are recorded, though not bounded.
    assert record["validation"]["images"] == 8 and record["validation"]["max_probability_difference"] is not None
    # The float32 TFLite file it started from is measured beside it, and not kept in the folder.
    assert record["float32"]["accuracy"] is not None and record["float32"]["speed"]["latency_calls"] == 20
    assert record["float32"]["file_size_bytes"] > 0
    assert sorted(path.name for path in result.export_dir.path.iterdir()) == [
        "export.json",
        "labels.json",
        "model.tflite",
        "model.tflite.sha256",
        "preprocessing.json",
    ]
    interpreter, outputs = _litert_outputs(result.export_dir.artifact_path, validation_pixels)
    # The input and output stay float32, so the float model's preprocessing feeds it; inside, it is quantized.
    assert interpreter.get_input_details()[0]["dtype"] == numpy.float32
    assert interpreter.get_output_details()[0]["dtype"] == numpy.float32
    assert any(detail["dtype"] == stored for detail in interpreter.get_tensor_details())
    expected = load_model(run.model_path).predict_on_batch(validation_pixels)
    numpy.testing.assert_allclose(outputs, expected, atol=0.05, rtol=0)
    if quantize == "int8":
        calibration = record["quantization"]["calibration"]
        # The whole train split is smaller than the default sample: every training photo, four per class.
        assert calibration == {"split": "train", "images": 8, "per_class": {"cats": 4, "dogs": 4}, "seed": 0}
    else:
        assert "calibration" not in record["quantization"]


# ----------------------------------------------------------------------------- ONNX int8 and float16


@pytest.mark.parametrize("quantize", ["int8", "float16"])
def test_a_quantized_onnx_file_keeps_the_keras_accuracy(export_of, run, quantize):
    pytest.importorskip("catsdogs.export.quantize")
    import onnx

    from catsdogs.export.onnx import read_metadata
    from catsdogs.runtime import OnnxPredictor

    result = export_of("onnx", quantize)
    record = result.record
    assert result.export_dir.path == run.path / "export" / f"onnx-{quantize}"
    assert result.verified, record["failures"]
    assert (record["format"], record["precision"]) == ("onnx", quantize)
    assert record["accuracy"]["keras"] - record["accuracy"]["artifact"] <= export_verify.QUANTIZED_MAX_ACCURACY_DROP
    graph = onnx.load(str(result.export_dir.artifact_path)).graph
    if quantize == "int8":
        assert record["quantization"]["format"] == "QDQ" and record["quantization"]["per_channel"] is True
        assert record["quantization"]["calibration"]["split"] == "train"
        assert any(node.op_type == "QuantizeLinear" for node in graph.node)
    else:
        assert any(tensor.data_type == onnx.TensorProto.FLOAT16 for tensor in graph.initializer)
    assert read_metadata(result.export_dir.artifact_path)["catsdogs.class_names"] == '["cats", "dogs"]'
    assert OnnxPredictor.from_export_dir(result.export_dir.path).precision == quantize


# ----------------------------------------------------------------------------- the table, the exit status, the report


def test_the_table_shows_the_precision_and_the_keras_accuracy_beside_the_artifacts(run, capsys, tmp_path):
    assert main(["export", str(run.path), "--format", "tflite", "--quantize", "float16", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    lines = printed.rstrip().splitlines()
    assert lines[0] == f"export: {tmp_path / 'model.tflite'}"
    assert lines[2].split() == ["precision", "float16", "float32"]
    assert any(line.split()[:3] == ["test", "accuracy", "(Keras)"] for line in lines)
    assert ">= Keras - 0.3 points" in printed and "recorded, not bounded" in printed
    assert lines[-1].split() == ["verified", "yes"]


def test_a_quantized_export_that_loses_too_much_is_written_unverified_and_exits_1(run, monkeypatch, capsys, tmp_path):
    # With a negative allowance even an unchanged accuracy counts as a loss.
    monkeypatch.setattr(export_verify, "QUANTIZED_MAX_ACCURACY_DROP", -0.5)
    assert main(["export", str(run.path), "--format", "tflite", "--quantize", "float16", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "NOT verified" in captured.err and "points below the Keras model's" in captured.err
    record = json.loads((tmp_path / EXPORT_RECORD_FILE).read_text())
    assert record["verified"] is False and "points below" in record["failures"][0]
    assert (tmp_path / "model.tflite").is_file()


def test_the_report_shows_each_precision_with_its_float32_numbers(export_of, run):
    export_of("tflite")
    export_of("tflite", "int8")
    page = run.report_path.read_text(encoding="utf-8")
    section = re.search(r'<section id="deployment">(.*?)</section>', page, re.DOTALL).group(1)
    rows = {
        match.group(1): match.group(0)
        for match in re.finditer(r"<tr[^>]*><td>[^<]*</td><td>[^<]*</td><td>([^<]*)</td>.*?</tr>", section)
    }
    quantized = rows["export/tflite-int8/model.tflite"]
    record = export_of("tflite", "int8").record
    assert "<td>int8</td>" in quantized and "(float32: " in quantized
    assert f"<td>{record['accuracy']['keras'] * 100:.1f}% (test)</td>" in quantized
    assert "<td>float32</td>" in rows["export/tflite/model.tflite"]
    assert "(float32: " not in rows["export/tflite/model.tflite"]
    assert "may lose at most 0.3 points of accuracy" in section


def test_without_a_test_split_the_accuracy_bound_is_checked_on_validation(tmp_path):
    data = make_data(tmp_path, per_class=3, splits=("train", "validation"))
    result = export_run(make_run(tmp_path / "runs", data).path, format_name="tflite", quantize="float16")
    assert result.record["test"] is None
    assert result.record["accuracy"]["split"] == "validation" and "no test split" in result.record["accuracy"]["note"]
    assert result.record["bounds"]["accuracy_split"] == "validation"


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("quantize", "format_name", "message"),
    [
        ("int4", "onnx", r"Unknown quantization\. Did you mean int8\?.*Received: quantize=int4$"),
        ("flaot16", "tflite", r"Did you mean float16\?"),
        ("half", "onnx", r"Expected one of none, int8, float16\. Received: quantize=half$"),
        (
            "int8",
            "saved_model",
            r"saved_model export cannot be quantized.*Received: format=saved_model, quantize=int8$",
        ),
        ("float16", "saved_model", r"--format tflite --quantize float16"),
    ],
)
def test_wrong_quantizations_are_refused_with_a_clear_message(quantize, format_name, message):
    with pytest.raises(CatsdogsError, match=message):
        check_quantize(quantize, format_name)
    assert check_quantize("none", "saved_model") == "none"


def test_a_quantized_saved_model_exits_2_before_loading_anything(tmp_path, capsys):
    # The run folder does not even exist: the format and precision are checked first.
    assert main(["export", str(tmp_path / "no-run"), "--format", "saved_model", "--quantize", "int8"]) == 2
    assert "cannot be quantized" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "no-run"), "--quantize", "int4"]) == 2
    assert "Did you mean int8?" in capsys.readouterr().err


def test_int8_needs_a_train_split_to_calibrate(tmp_path):
    data = make_data(tmp_path, per_class=2, splits=("validation", "test"))
    run_dir = make_run(tmp_path / "runs", data)
    with pytest.raises(CatsdogsError, match=r"no train split.*--quantize float16 or none.*Received: data_dir="):
        export_run(run_dir.path, format_name="tflite", quantize="int8")
    assert list((run_dir.path / "export").iterdir()) == []


class CumulativeProduct(keras.layers.Layer):
    """A layer whose op (tf.math.cumprod) only TensorFlow's select ops can run in TFLite."""

    def call(self, inputs):
        import tensorflow as tf

        return tf.math.cumprod(inputs / 255.0, axis=1)


def test_a_model_that_needs_select_ops_is_refused_naming_them(tmp_path):
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.GlobalAveragePooling2D()(CumulativeProduct()(inputs))
    )
    model = keras.Model(inputs, outputs)
    with pytest.raises(CatsdogsError, match=r"lacks \(Cumprod\).*builtin ops only.*Received: ops=Cumprod$"):
        export_tflite.export_tflite(model, tmp_path / "model.tflite", image_size=(8, 8))
    assert not (tmp_path / "model.tflite").exists()


def test_the_tflite_converter_takes_over_where_keras_cannot_export_litert(tmp_path, monkeypatch, validation_pixels):
    keras_export = keras.Model.export

    def export_without_litert(self, filepath, format="tf_saved_model", **keywords):
        if format == "litert":
            raise ValueError("Unrecognized format=litert")
        return keras_export(self, filepath, format=format, **keywords)

    monkeypatch.setattr(keras.Model, "export", export_without_litert)
    model = red_minus_green_model()
    settings = export_tflite.export_tflite(model, tmp_path / "model.tflite", image_size=(32, 32))
    assert settings["converter"] == export_tflite.FALLBACK_CONVERTER
    assert "Unrecognized format=litert" in settings["keras_export_error"]
    _, outputs = _litert_outputs(tmp_path / "model.tflite", validation_pixels)
    numpy.testing.assert_allclose(outputs, model.predict_on_batch(validation_pixels), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- the calibration sample


def test_the_calibration_sample_is_balanced_deterministic_and_never_larger_than_a_class():
    paths = [f"train/cats/{index}.png" for index in range(6)] + [f"train/dogs/{index}.png" for index in range(3)]
    labels = [0] * 6 + [1] * 3
    chosen_paths, chosen_labels = export_formats.calibration_sample(paths, labels, class_count=2, count=5)
    assert chosen_labels == [0, 0, 0, 1, 1] and set(chosen_paths) <= set(paths)
    # The draw does not depend on the order the files were listed in.
    assert export_formats.calibration_sample(paths[::-1], labels[::-1], class_count=2, count=5) == (
        chosen_paths,
        chosen_labels,
    )
    everything, everything_labels = export_formats.calibration_sample(paths, labels, class_count=2, count=256)
    assert sorted(everything) == sorted(paths) and everything_labels == [0] * 6 + [1] * 3


def test_calibration_reads_only_training_photos(data_dir):
    batches, record = export_formats.calibration_data(
        data_dir, class_names=["cats", "dogs"], image_size=(32, 32), count=6, batch_size=4
    )
    assert record == {"split": "train", "images": 6, "per_class": {"cats": 3, "dogs": 3}, "seed": 0}
    first, second = list(batches()), list(batches())
    assert [len(batch) for batch in first] == [4, 2]
    numpy.testing.assert_array_equal(numpy.concatenate(first), numpy.concatenate(second))
    paths, labels = export_verify.list_split(data_dir / "train", class_names=["cats", "dogs"])
    train_pixels = numpy.concatenate(
        [pixels for pixels, _ in export_verify.pixel_batches(paths, labels, image_size=(32, 32), batch_size=32)]
    )
    for image in numpy.concatenate(first):
        assert any(numpy.array_equal(image, candidate) for candidate in train_pixels)
