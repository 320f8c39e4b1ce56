import csv
import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from catsdogs.cli import main
from catsdogs.errors import CatsdogsError
from catsdogs.images import decode_and_resize
from catsdogs.inference import Predictor, expand_inputs, format_predictions, predict_files
from catsdogs.runs import RunDir
from fake_runs import make_data, make_run, synthetic_image, untrained_seed_cnn


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    """A run folder with an untrained seed CNN: predictions need a model, not a good one."""
    root = tmp_path_factory.mktemp("runs")
    return make_run(
        root, make_data(root, per_class=1), name="tiny", model_name="seed_cnn", model=untrained_seed_cnn()
    ).path


@pytest.fixture(scope="module")
def predictor(run_path):
    return Predictor.from_run_dir(run_path)


@pytest.fixture
def mixed_folder(tmp_path):
    """Three good photos (one in a sub-folder) and three bad ones, plus files a folder search skips."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    Image.fromarray(synthetic_image(rng, 0)).save(folder / "a.png")
    Image.fromarray(synthetic_image(rng, 1)).save(folder / "b.jpg", quality=95)
    Image.fromarray(synthetic_image(rng, 1, size=48)).save(folder / "more" / "c.png")
    (folder / "not_an_image.jpg").write_text("hello")
    (folder / "empty.png").write_bytes(b"")
    (folder / "cut.png").write_bytes((folder / "a.png").read_bytes()[:60])
    (folder / "notes.txt").write_text("not a photo")
    Image.fromarray(synthetic_image(rng, 0)).save(folder / ".hidden.png")
    return folder


def test_folder_mixing_good_and_bad_files(predictor, mixed_folder):
    predictions = predict_files(predictor, [mixed_folder])
    by_name = {prediction.source.split("/")[-1]: prediction for prediction in predictions}
    assert sorted(by_name) == ["a.png", "b.jpg", "c.png", "cut.png", "empty.png", "not_an_image.jpg"]
    for name in ("a.png", "b.jpg", "c.png"):
        prediction = by_name[name]
        assert prediction.ok and prediction.label in ("cats", "dogs")
        assert prediction.probability == prediction.probabilities[prediction.label] >= 0.5
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
    assert by_name["empty.png"].error == "empty file"
    assert by_name["not_an_image.jpg"].error == "not an image"
    assert by_name["cut.png"].error == "truncated"


def test_globs_and_missing_paths_keep_their_order(mixed_folder):
    entries = expand_inputs(
        [str(mixed_folder / "missing.jpg"), str(mixed_folder / "*.png"), str(mixed_folder / "*.gif")]
    )
    assert entries[0].error == "no such file or folder"
    # A glob names files explicitly, so broken ones are tried; like the shell, `*` skips hidden files.
    assert [path.split("/")[-1] for path in entries[1:4]] == ["a.png", "cut.png", "empty.png"]
    assert entries[4].error == "no file matches this pattern" and len(entries) == 5


def test_paths_bytes_and_arrays_take_the_same_image_path(predictor, mixed_folder):
    path = mixed_folder / "a.png"
    array = np.asarray(Image.open(path))
    by_path, by_bytes, by_array = predictor.predict([str(path), path.read_bytes(), array])
    assert by_path.probabilities == by_bytes.probabilities == by_array.probabilities
    assert by_bytes.source == "<bytes 1>" and by_array.source == "<array 2>"


def test_load_image_gives_the_training_pixels(predictor, mixed_folder):
    # A plain RGB JPEG passes `clean_image_bytes` unchanged, so training reads the very same bytes.
    path = mixed_folder / "b.jpg"
    expected = decode_and_resize(tf.io.read_file(str(path)), (32, 32)).numpy()
    np.testing.assert_array_equal(predictor.load_image(path), expected)


def test_threshold_decides_between_the_two_classes(run_path, mixed_folder):
    paths = [str(mixed_folder / "a.png"), str(mixed_folder / "b.jpg")]
    dog_probabilities = [p.probabilities["dogs"] for p in Predictor.from_run_dir(run_path).predict(paths)]
    middle = float(np.mean(dog_probabilities))
    labels = [p.label for p in Predictor.from_run_dir(run_path, threshold=middle).predict(paths)]
    assert labels == ["dogs" if value >= middle else "cats" for value in dog_probabilities]
    assert len(set(labels)) == 2
    with pytest.raises(CatsdogsError, match="strictly between 0 and 1"):
        Predictor.from_run_dir(run_path, threshold=1.5)


def test_cli_csv_output_and_exit_status(run_path, mixed_folder, tmp_path, capsys):
    output = tmp_path / "predictions.csv"
    assert main(["predict", str(run_path), str(mixed_folder), "--format", "csv", "--output", str(output)]) == 1
    rows = list(csv.DictReader(io.StringIO(output.read_text())))
    assert len(rows) == 6
    assert set(rows[0]) == {
        *("file", "label", "probability", "probability_cats", "probability_dogs", "error"),
        *("answer", "abstained", "calibrated_probability", "reason"),
    }
    assert sum(bool(row["error"]) for row in rows) == 3
    assert "6 inputs, 3 predicted, 3 failed" in capsys.readouterr().err


def test_cli_json_output_exit_zero_when_all_succeed(run_path, mixed_folder, capsys):
    assert (
        main(["predict", str(run_path), str(mixed_folder / "a.png"), str(mixed_folder / "more"), "--format", "json"])
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [row["file"].split("/")[-1] for row in rows] == ["a.png", "c.png"]
    assert all(row["error"] is None and set(row["probabilities"]) == {"cats", "dogs"} for row in rows)


def test_cli_table_and_usage_errors(run_path, mixed_folder, tmp_path, capsys):
    assert main(["predict", str(run_path), str(mixed_folder / "a.png"), str(tmp_path / "nope.jpg")]) == 1
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["file", "label", "probability"]
    assert "ERROR" in table[2] and "no such file or folder" in table[2]
    assert main(["predict", str(run_path), str(mixed_folder), "--threshold", "0"]) == 2
    damaged = tmp_path / "damaged_run"
    damaged.mkdir()
    (damaged / "model.keras").write_bytes(b"")
    assert main(["predict", str(damaged), str(mixed_folder)]) == 2  # A run folder without config.json.


def test_tampered_run_is_refused(run_path, tmp_path):
    import shutil

    copy = shutil.copytree(run_path, tmp_path / "copy")
    model_file = RunDir(copy).model_path
    model_file.write_bytes(model_file.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CatsdogsError, match="SHA-256"):
        Predictor.from_run_dir(copy)


def test_format_rejects_unknown_formats():
    with pytest.raises(CatsdogsError, match="table, csv or json"):
        format_predictions([], output_format="xml")


def test_a_single_image_needs_no_list(predictor, mixed_folder):
    image = Image.open(mixed_folder / "a.png")
    (from_pil,) = predictor.predict(image)
    (from_path,) = predictor.predict(mixed_folder / "a.png")
    assert from_pil.probabilities == from_path.probabilities
