"""catsdogs export: an ONNX artifact of a tiny fake run, its files and checksums, the check against Keras,
refusals (tampered model, missing files, missing data, wrong format), atomic writing and the exit codes."""

import json
import re
import shutil

import numpy
import pytest

from catsdogs.cli import main
from catsdogs.config import config_from_dict
from catsdogs.errors import CatsdogsError
from catsdogs.export import check_export_format, export_run
from catsdogs.export import verify as export_verify
from catsdogs.export.onnx import read_metadata, run_session
from catsdogs.fileio import sha256_file, verify_checksum
from catsdogs.models.saving import load_model
from catsdogs.runs import EXPORT_DIR, EXPORT_RECORD_FILE, ExportDir, RunDir
from catsdogs.runtime.onnx_predictor import open_session
from fake_runs import make_data_dir, make_run


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("export") / "data")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_dir):
    """A fake run exported once through the command line: (run, exit status, printed table)."""
    run = make_run(tmp_path_factory.mktemp("export-runs"), data_dir)
    return run, main(["export", str(run.path)])


@pytest.fixture
def run_copy(exported, tmp_path):
    """A fresh copy of the fake run, without its export, for tests that damage or re-export it."""
    run, _ = exported
    shutil.copytree(run.path, tmp_path / "run", ignore=shutil.ignore_patterns(EXPORT_DIR))
    return RunDir(tmp_path / "run")


def test_export_arguments():
    from catsdogs.cli import build_parser

    parsed = vars(build_parser().parse_args(["export", "RUN"]))
    assert {key: parsed[key] for key in ("run_dir", "format_name", "out", "data", "batch_size")} == {
        "run_dir": "RUN",
        "format_name": "onnx",
        "out": None,
        "data": None,
        "batch_size": 32,
    }
    parsed = vars(build_parser().parse_args(["export", "RUN", "--format", "tflite", "--out", "O", "--data", "D"]))
    assert (parsed["format_name"], parsed["out"], parsed["data"]) == ("tflite", "O", "D")


def test_export_writes_a_complete_verified_folder(exported):
    run, status = exported
    assert status == 0
    export_dir = ExportDir(run.export_dir("onnx"), format_name="onnx")
    assert export_dir.path == run.path / "export" / "onnx"
    assert export_dir.missing_files() == []
    # Nothing but the finished folder is left: no temporary or replaced folders beside it.
    assert [path.name for path in (run.path / EXPORT_DIR).iterdir()] == ["onnx"]
    assert verify_checksum(export_dir.artifact_path) == sha256_file(export_dir.artifact_path)
    assert json.loads(export_dir.labels_path.read_text()) == ["cats", "dogs"]
    record = json.loads(export_dir.record_path.read_text())
    assert record["verified"] is True and record["failures"] == []
    assert record["validation"]["images"] == 12 and record["validation"]["label_agreement"] == 1.0
    assert record["validation"]["max_probability_difference"] <= 1e-4
    assert record["test"]["images"] == 12 and 0.0 <= record["test"]["accuracy"] <= 1.0
    assert record["file_size_bytes"] == export_dir.artifact_path.stat().st_size
    assert record["artifact_sha256"] == sha256_file(export_dir.artifact_path)
    assert record["speed"]["latency_calls"] >= 20 and record["speed"]["throughput_batch32_photos_per_second"] > 0
    source_sha256 = sha256_file(run.model_path)
    assert record["source_model"]["sha256"] == source_sha256
    assert set(record["versions"]) >= {"catsdogs", "keras", "onnxruntime"}
    assert read_metadata(export_dir.artifact_path) == {
        "catsdogs.class_names": '["cats", "dogs"]',
        "catsdogs.image_size": "[32, 32]",
        "catsdogs.version": record["versions"]["catsdogs"],
        "catsdogs.source_model_sha256": source_sha256,
    }


def test_the_verification_table_is_printed(exported, capsys, tmp_path):
    run, _ = exported
    assert main(["export", str(run.path), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert str(tmp_path / "out" / "model.onnx") in printed
    for row in (
        "label agreement",
        "max |difference in probability|",
        "test accuracy",
        "batch-1 latency",
        "batch-32 throughput",
    ):
        assert row in printed
    assert printed.rstrip().splitlines()[-1].split() == ["verified", "yes"]


def test_preprocessing_json_says_how_to_feed_the_model(exported):
    run, _ = exported
    described = json.loads(ExportDir(run.export_dir("onnx"), format_name="onnx").preprocessing_path.read_text())
    assert described["image_size"] == [32, 32]
    assert {key: described["input"][key] for key in ("dtype", "layout", "channel_order", "value_range")} == {
        "dtype": "float32",
        "layout": "NHWC",
        "channel_order": "RGB",
        "value_range": [0, 255],
    }
    assert described["resize"]["method"] == "bilinear" and described["resize"]["antialias"] is True
    assert described["output"]["shape"] == [None, 1] and "sigmoid" in described["output"]["meaning"]
    assert described["labels"] == ["cats", "dogs"]
    # The same limits as the run's own predict, from its config.
    data_config = config_from_dict(run.read_config()).data
    assert (described["max_pixels"], described["min_side"]) == (data_config.max_pixels, data_config.min_side)


def test_onnx_runtime_gives_the_keras_outputs(exported, data_dir):
    run, _ = exported
    paths, labels = export_verify.list_split(data_dir / "validation", class_names=["cats", "dogs"])
    pixels, _ = next(export_verify.pixel_batches(paths, labels, image_size=(32, 32), batch_size=32))
    session = open_session(ExportDir(run.export_dir("onnx"), format_name="onnx").artifact_path)
    expected = load_model(run.model_path).predict_on_batch(pixels)
    numpy.testing.assert_allclose(run_session(session, pixels), expected, atol=1e-5, rtol=0)
    assert (
        session.get_inputs()[0].name
        == json.loads(ExportDir(run.export_dir("onnx"), format_name="onnx").preprocessing_path.read_text())["input"][
            "name"
        ]
    )


def test_a_softmax_model_with_three_classes_exports_verified(tmp_path):
    classes = ("birds", "cats", "dogs")
    data = make_data_dir(tmp_path / "data", counts={"validation": 2}, class_names=classes)
    run = make_run(tmp_path / "runs", data, class_names=classes)
    result = export_run(run.path)
    assert result.verified and result.record["test"] is None
    described = json.loads(result.export_dir.preprocessing_path.read_text())
    assert described["output"]["shape"] == [None, 3] and "softmax" in described["output"]["meaning"]


def test_a_tampered_model_is_refused_and_nothing_is_written(run_copy, capsys):
    data = bytearray(run_copy.model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    run_copy.model_path.write_bytes(bytes(data))
    assert main(["export", str(run_copy.path)]) == 2
    assert "does not match its SHA-256" in capsys.readouterr().err
    assert not (run_copy.path / EXPORT_DIR).exists()


@pytest.mark.parametrize("name", ["labels.json", "model.keras", "model.keras.sha256"])
def test_a_partial_run_folder_names_the_missing_file(run_copy, name):
    (run_copy.path / name).unlink()
    with pytest.raises(CatsdogsError, match=rf"it has no {name}\b.*Received: path=.*missing={name}$"):
        export_run(run_copy.path)


def test_a_missing_data_folder_says_to_pass_data(run_copy, data_dir, capsys):
    run_copy.update_run_info(data_dir=str(run_copy.path / "gone"))
    assert main(["export", str(run_copy.path)]) == 2
    error = capsys.readouterr().err
    assert "data folder does not exist" in error and "--data DIR" in error and "Received: data_dir=" in error
    assert main(["export", str(run_copy.path), "--data", str(data_dir)]) == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("onxx", r"Unknown export format\. Did you mean onnx\?.*Received: format=onxx$"),
        ("saved-model", r"Did you mean saved_model\?.*Received: format=saved-model$"),
        ("pickle", r"Unknown export format\. Expected one of onnx, saved_model, tflite\. Received: format=pickle$"),
    ],
)
def test_wrong_formats_are_refused_with_a_clear_message(value, message):
    with pytest.raises(CatsdogsError, match=message):
        check_export_format(value)


def test_a_wrong_format_exits_2_before_loading_anything(tmp_path, capsys):
    # The run folder does not even exist: the format is checked first.
    assert main(["export", str(tmp_path / "no-run"), "--format", "onxx"]) == 2
    assert "Did you mean onnx?" in capsys.readouterr().err
    assert check_export_format("onnx") == "onnx"


def test_an_export_that_misses_its_bound_is_written_unverified_and_exits_1(run_copy, monkeypatch, capsys):
    monkeypatch.setattr(export_verify, "FLOAT_MAX_PROBABILITY_DIFFERENCE", -1.0)
    assert main(["export", str(run_copy.path)]) == 1
    captured = capsys.readouterr()
    assert "NOT verified" in captured.err and "max |difference in probability|" in captured.err
    assert captured.out.rstrip().splitlines()[-1].split()[:2] == ["verified", "NO:"]
    record = json.loads((run_copy.export_dir("onnx") / EXPORT_RECORD_FILE).read_text())
    assert record["verified"] is False and record["validation"]["label_agreement"] == 1.0


def test_an_interrupted_export_leaves_the_earlier_one_untouched(run_copy, monkeypatch):
    export_run(run_copy.path)
    destination = run_copy.export_dir("onnx")
    before = {path.name: path.read_bytes() for path in destination.iterdir()}

    def interrupted(*arguments, **keywords):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_verify, "compare", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_run(run_copy.path)
    assert {path.name: path.read_bytes() for path in destination.iterdir()} == before
    assert [path.name for path in destination.parent.iterdir()] == ["onnx"]


def test_an_interrupted_first_export_leaves_no_folder(run_copy, monkeypatch):
    def interrupted(*arguments, **keywords):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_verify, "compare", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_run(run_copy.path)
    assert list((run_copy.path / EXPORT_DIR).iterdir()) == []


def test_out_never_replaces_a_folder_that_is_not_an_export(run_copy, tmp_path):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "cat.jpg").write_bytes(b"not mine to delete")
    with pytest.raises(CatsdogsError, match=r"not an export.*Received: out="):
        export_run(run_copy.path, out_dir=precious)
    assert (precious / "cat.jpg").read_bytes() == b"not mine to delete"


# ----------------------------------------------------------------------------- the report's Deployment section


def _deployment_section(run):
    page = run.report_path.read_text(encoding="utf-8")
    assert '<a href="#deployment">Deployment</a>' in page
    return re.search(r'<section id="deployment">(.*?)</section>', page, re.DOTALL).group(1)


def test_export_rewrites_the_report_with_the_exports_numbers(exported):
    run, _ = exported
    section = _deployment_section(run)
    record = json.loads((run.export_dir("onnx") / EXPORT_RECORD_FILE).read_text())
    validation, speed = record["validation"], record["speed"]
    assert record["file_size_bytes"] < 1024 * 1024, "a tiny model: the report gives its size in KiB"
    for shown in (
        "<td>onnx</td>",
        "<td>export/onnx/model.onnx</td>",
        '<span class="verdict-yes">yes</span>',
        "<td>100.00% of 12</td>",
        f"<td>{validation['max_probability_difference']:.2e}</td>",
        f"<td>{record['test']['accuracy'] * 100:.1f}% of 12</td>",
        f"<td>{record['file_size_bytes'] / 1024:.1f} KiB</td>",
        f"<td>{speed['latency_batch1_ms']:.2f} ms</td>",
        f"<td>{speed['throughput_batch32_photos_per_second']:.1f} photos/s</td>",
        f"<td>{record['created'].replace('T', ' ')}</td>",
    ):
        assert shown in section, shown
    assert "No export yet" not in section and "unverified" not in section and "Not verified" not in section


def test_an_unverified_export_stands_out_in_the_report(run_copy, monkeypatch):
    monkeypatch.setattr(export_verify, "FLOAT_MAX_PROBABILITY_DIFFERENCE", -1.0)
    assert not export_run(run_copy.path).verified
    section = _deployment_section(run_copy)
    assert '<tr class="unverified">' in section and ">NO</span>" in section
    assert "<b>Not verified:</b>" in section and "max |difference in probability|" in section
    assert "<code>export/onnx/model.onnx</code>" in section and "verdict-yes" not in section
