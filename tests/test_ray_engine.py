"""`catsdogs predict --engine ray` and `train.feature_engine=ray`: Ray Data gives single-process answers.

On 200 real photos and three broken files, a local Ray cluster (`num_cpus=2`, one per module) gives the
labels and probabilities of single-process `predict` on the same tiny export (within 1e-6) and one error
row per broken file, from an export folder, a run folder with its export, and a run folder converted on
the fly. Ray feature extraction writes the cache files single-process extraction would (same names, same
values within float noise), the head trained on them reaches the same accuracy, and a single-process run
reads them back from the cache.

One local cluster serves the whole module (started by `runtime.ray_workers.connect`, as `catsdogs` starts
one; about 7 s on a loaded 2-core machine, export included). The default suite runs the checks that need no
cluster, the 200-photo comparison and the command line on a run folder with its export; the on-the-fly
conversion and the feature cache (which train models) are marked slow.
"""

import csv
import json
import os
import sys
from pathlib import Path

import numpy
import pytest

from catsdogs.cli import main
from catsdogs.errors import CatsdogsError
from catsdogs.inference.files import predict_files
from catsdogs.runtime import OnnxPredictor
from fake_runs import make_data, make_data_dir, make_run, tiny_config
from tiny_backbones import build_tiny_transfer, registered

ORIGINAL_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dogs-vs-cats-original-sample" / "train"
PHOTOS_PER_CLASS = 100
TOLERANCE = 1e-6


# ----------------------------------------------------------------------------- no cluster needed


def test_a_missing_ray_names_the_scale_extra(monkeypatch):
    from catsdogs.runtime.ray_workers import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(CatsdogsError, match=r"pip install 'catsdogs\[scale\]'.*missing module=ray"):
        import_ray("`catsdogs predict --engine ray`")


@pytest.mark.parametrize("output", [None, "results.json", "results"])
def test_the_output_must_be_a_parquet_or_csv_file(output):
    from catsdogs.inference.ray_engine import output_format

    with pytest.raises(CatsdogsError, match=r"--output FILE\.parquet or --output FILE\.csv"):
        output_format(output)
    assert output_format("out/Results.PARQUET") == "parquet" and output_format("r.csv") == "csv"


def test_the_engine_options_are_checked_before_any_cluster_starts(tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not read")
    assert main(["predict", str(tmp_path / "no-run"), str(photo), "--engine", "ray"]) == 2
    assert "--output FILE.parquet" in capsys.readouterr().err
    assert main(["predict", str(photo), str(photo), "--address", "127.0.0.1:6379"]) == 2
    assert "--address applies to --engine ray only" in capsys.readouterr().err


def test_the_command_line_names_the_extra_when_ray_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    output = tmp_path / "results.parquet"
    arguments = ["predict", str(tmp_path / "run"), str(tmp_path), "--engine", "ray", "--output", str(output)]
    assert main(arguments) == 2
    assert "pip install 'catsdogs[scale]'" in capsys.readouterr().err
    assert not output.exists()


# ----------------------------------------------------------------------------- a local cluster


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster with 2 CPUs for the module; catsdogs joins it instead of starting its own."""
    ray = pytest.importorskip("ray")
    from catsdogs.runtime.ray_workers import connect

    # Offline: a cluster of the tests reports no usage statistics (connect sets the same default).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    assert connect(None, num_cpus=2, what="the tests")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A fake run (the fixed red-minus-green model, 32x32) with its ONNX export, and a copy without export."""
    from catsdogs.export import export_run

    root = tmp_path_factory.mktemp("ray-engine")
    data_dir = make_data(root, per_class=3)
    run = make_run(root / "runs", data_dir)
    export_dir = export_run(run.path).export_dir.path
    bare_run = make_run(root / "runs", data_dir, name="run-without-export")
    return {"run": run.path, "export": export_dir, "bare_run": bare_run.path}


@pytest.fixture(scope="module")
def photo_patterns(tmp_path_factory):
    """200 real photos (100 cats, 100 dogs, original sizes) named one by one, and a folder of 3 broken files."""
    if not ORIGINAL_PHOTOS.is_dir():
        pytest.skip(f"the real photos are not here: {ORIGINAL_PHOTOS}")
    photos = [str(ORIGINAL_PHOTOS / f"{kind}.{number}.jpg") for kind in ("cat", "dog") for number in range(100)]
    broken = tmp_path_factory.mktemp("broken")
    (broken / "truncated.jpg").write_bytes(ORIGINAL_PHOTOS.joinpath("cat.0.jpg").read_bytes()[:2000])
    (broken / "text.jpg").write_text("this is a text file, not a photo\n", encoding="utf-8")
    (broken / "empty.jpg").write_bytes(b"")
    return {"photos": photos, "broken": str(broken), "broken_files": sorted(str(p) for p in broken.iterdir())}


def _single_process_rows(export_dir, patterns):
    """{absolute path: Prediction} from single-process `predict`'s own path on the export."""
    predictions = predict_files(OnnxPredictor.from_export_dir(export_dir), patterns)
    return {os.path.abspath(prediction.source): prediction for prediction in predictions}


def _parquet_rows(path):
    import pyarrow.parquet

    return {row["file"]: row for row in pyarrow.parquet.read_table(path).to_pylist()}


def _assert_same_answers(ray_rows, expected, broken_files):
    assert set(ray_rows) == set(expected)
    errors = {file for file, row in ray_rows.items() if row["error"] is not None}
    assert errors == set(broken_files)
    worst = 0.0
    for file, prediction in expected.items():
        row = ray_rows[file]
        assert row["error"] == prediction.error
        if prediction.ok:
            assert row["label"] == prediction.label
            for name, probability in prediction.probabilities.items():
                worst = max(worst, abs(row[f"probability_{name}"] - probability))
            worst = max(worst, abs(row["probability"] - prediction.probability))
        else:
            assert row["label"] is None and row["probability"] is None
    assert worst <= TOLERANCE, worst
    # Both labels appear, or agreement would prove little.
    assert {row["label"] for row in ray_rows.values() if row["label"]} == {"cats", "dogs"}


def test_ray_gives_single_process_answers_and_an_error_row_per_broken_file(
    ray_cluster, tiny_export, photo_patterns, tmp_path
):
    from catsdogs.inference.ray_engine import open_ray_model, predict_with_ray

    patterns = [*photo_patterns["photos"], photo_patterns["broken"]]
    expected = _single_process_rows(tiny_export["export"], patterns)
    assert len(expected) == 2 * PHOTOS_PER_CLASS + 3
    summary = predict_with_ray(open_ray_model(tiny_export["export"]), patterns, output=tmp_path / "results.parquet")
    assert (summary.inputs, summary.predicted, summary.failed, summary.actors) == (203, 200, 3, 2)
    _assert_same_answers(_parquet_rows(tmp_path / "results.parquet"), expected, photo_patterns["broken_files"])


def test_an_actor_turns_a_file_that_vanished_into_an_error_row(tiny_export, photo_patterns, tmp_path):
    # The actors read local files themselves, so a file gone after listing is a row, not a failed Ray task.
    from catsdogs.inference.ray_engine import open_ray_model
    from catsdogs.runtime.ray_workers import PhotoPredictor

    actor = PhotoPredictor(open_ray_model(tiny_export["export"]).spec)
    photo, gone = photo_patterns["photos"][0], str(tmp_path / "gone.jpg")
    rows = actor({"path": numpy.asarray([gone, photo])}).to_pylist()
    assert [row["file"] for row in rows] == [gone, photo]
    assert rows[0]["error"].startswith("cannot read file") and rows[0]["label"] is None
    assert rows[1]["error"] is None and rows[1]["label"] in ("cats", "dogs")


@pytest.mark.parametrize("model", ["run", pytest.param("bare_run", marks=pytest.mark.slow)])
def test_the_command_line_predicts_a_run_folder_to_csv(ray_cluster, tiny_export, photo_patterns, tmp_path, model):
    # "run" uses the run's verified export; "bare_run" has none, so its model is converted and checked.
    photos = photo_patterns["photos"][::20]
    patterns = [*photos, photo_patterns["broken"], str(tmp_path / "missing.jpg")]
    output = tmp_path / "results.csv"
    assert main(["predict", str(tiny_export[model]), *patterns, "--engine", "ray", "--output", str(output)]) == 1
    with open(output, encoding="utf-8", newline="") as handle:
        rows = {row["file"]: row for row in csv.DictReader(handle)}
    expected = _single_process_rows(tiny_export["export"], patterns)
    assert set(rows) == set(expected) and len(rows) == len(photos) + 4
    for file, prediction in expected.items():
        assert rows[file]["error"] == (prediction.error or "")
        if prediction.ok:
            assert rows[file]["label"] == prediction.label
            assert float(rows[file]["probability_dogs"]) == pytest.approx(prediction.probabilities["dogs"], abs=1e-6)


def test_ray_features_equal_single_process_features_in_order(ray_cluster, tmp_path):
    from catsdogs.training.features import FeatureExtractor, extract
    from catsdogs.training.ray_features import extract_with_ray
    from tiny_backbones import tiny_backbone

    photos = make_data_dir(tmp_path / "data", counts={"train": 6, "validation": 1, "test": 1})
    paths = sorted(str(path) for path in (photos / "train").rglob("*.png"))
    model = tiny_backbone()
    extractor = FeatureExtractor(model, image_size=(32, 32), output_names=["maps"], engine="ray")
    (features,) = extract_with_ray(extractor, paths, batch_size=4, flip=True)
    local = FeatureExtractor(model, image_size=(32, 32), output_names=["maps"], engine="onnxruntime")
    (expected,) = extract(local, paths, batch_size=4, flip=True)
    assert features.shape == expected.shape == (12, 16, 16, 16)
    numpy.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


RANDOM_STATE_SCRIPT = """
import random, sys
import numpy
sys.path.insert(0, sys.argv[2])
from catsdogs.training.features import FeatureExtractor
from catsdogs.training.ray_features import extract_with_ray
from tiny_backbones import tiny_backbone

model = tiny_backbone()
random.seed(3)
numpy.random.seed(3)
expected = (random.random(), numpy.random.random())
random.seed(3)
numpy.random.seed(3)
extractor = FeatureExtractor(model, image_size=(32, 32), output_names=["maps"], engine="ray")
extract_with_ray(extractor, [sys.argv[1]], batch_size=4)
print("same draws" if (random.random(), numpy.random.random()) == expected else "other draws")
"""


@pytest.mark.slow
def test_ray_features_leave_the_random_state_alone(tmp_path):
    # Starting a cluster draws from Python's global random state, where Keras takes a head's unseeded initial
    # weights: the head must train as after any other engine. Its own process, so Ray starts there.
    import subprocess

    photos = make_data_dir(tmp_path / "data", counts={"train": 1, "validation": 1, "test": 1})
    photo = str(next((photos / "train").rglob("*.png")))
    environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": ""}
    result = subprocess.run(
        [sys.executable, "-c", RANDOM_STATE_SCRIPT, photo, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert result.stdout.strip().splitlines()[-1:] == ["same draws"], result.stdout[-500:] + result.stderr[-3000:]


@pytest.mark.slow
def test_ray_features_fill_the_cache_train_reads_and_give_the_same_head(ray_cluster, tmp_path, caplog):
    import logging
    import shutil

    from catsdogs.training import train

    with registered("tiny_transfer", build_tiny_transfer, pretrained=True, last_conv_layer="backbone/top_activation"):
        ray_data = make_data_dir(tmp_path / "ray-data", counts={"train": 16, "validation": 8, "test": 8})
        local_data = shutil.copytree(ray_data, tmp_path / "local-data")
        settings = ["model.name=tiny_transfer", "augment.enabled=false", "train.fine_tune_blocks=2"]
        runs = {}
        for name, data_dir, engine in (("ray", ray_data, "ray"), ("local", local_data, "onnxruntime")):
            config = tiny_config(*settings, f"train.feature_engine={engine}", "train.seed=7", epochs=4)
            with caplog.at_level(logging.INFO, logger="catsdogs.training.features"):
                caplog.clear()
                runs[name] = train(config, data_dir, runs_dir=tmp_path / f"runs-{name}", verbose=0)
            # The Ray run really computed its features on the cluster (and the local one did not).
            assert ("extracted with ray" in caplog.text) == (engine == "ray"), caplog.text
        ray_cache, local_cache = (data_dir / ".cache" / "features" for data_dir in (ray_data, local_data))
        names = sorted(path.name for path in ray_cache.glob("*.npz"))
        # Pooled features and cut activations of train, flipped train and validation: the same keys.
        assert len(names) == 6 and names == sorted(path.name for path in local_cache.glob("*.npz"))
        for name in names:
            with numpy.load(ray_cache / name) as ray_file, numpy.load(local_cache / name) as local_file:
                numpy.testing.assert_allclose(
                    ray_file["values"].astype(numpy.float32),
                    local_file["values"].astype(numpy.float32),
                    rtol=2e-3,
                    atol=2e-3,
                )
        tests = {name: run.read_metrics()["test"] for name, run in runs.items()}
        assert tests["ray"]["accuracy"] == tests["local"]["accuracy"], tests
        # The same head, not just the same accuracy: Ray leaves training's seeded random state alone.
        assert tests["ray"]["loss"] == pytest.approx(tests["local"]["loss"], rel=1e-4), tests
        # A single-process run finds the Ray-made features in the cache and computes none.
        before = {path: path.stat().st_mtime_ns for path in ray_cache.glob("*.npz")}
        config = tiny_config(*settings, "train.feature_engine=onnxruntime", "train.seed=7", epochs=4)
        again = train(config, ray_data, runs_dir=tmp_path / "runs-again", verbose=0)
        assert {path: path.stat().st_mtime_ns for path in ray_cache.glob("*.npz")} == before
        assert json.loads(again.run_info_path.read_text())["transfer"]["cached_features"]
