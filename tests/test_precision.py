"""Mixed-precision training: bfloat16 maths, float32 outputs, and a model that loads and explains like any other."""

import keras
import numpy as np
import pytest

from catsdogs.errors import CatsdogsError
from catsdogs.inference import Predictor
from catsdogs.interpret import grad_cam
from catsdogs.models.saving import load_model
from catsdogs.training import train
from fake_runs import make_data_dir, tiny_config


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    data_dir = make_data_dir(tmp_path_factory.mktemp("data"))
    runs_dir = tmp_path_factory.mktemp("runs")
    config = tiny_config("model.name=xception_mini", "train.precision=mixed_bfloat16")
    return train(config, data_dir, runs_dir=runs_dir, run_name="bf16", verbose=0), data_dir


def test_mixed_precision_model_computes_in_bfloat16_with_float32_outputs(bf16_run):
    run_dir, _ = bf16_run
    model = load_model(run_dir.model_path)
    assert model.get_layer("block1_sepconv1").compute_dtype == "bfloat16"
    assert model.get_layer("block1_sepconv1").variable_dtype == "float32"
    assert model.get_layer("predictions").compute_dtype == "float32"
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    probabilities = keras.ops.convert_to_numpy(model(pixels))
    assert probabilities.dtype == np.float32 and np.all((probabilities >= 0) & (probabilities <= 1))
    assert np.isfinite(run_dir.read_metrics()["test"]["loss"])


def test_mixed_precision_leaves_the_global_policy_alone(bf16_run):
    assert keras.config.dtype_policy().name == "float32"


def test_mixed_precision_model_predicts_and_explains(bf16_run):
    run_dir, data_dir = bf16_run
    photos = sorted((data_dir / "test").rglob("*.png"))[:3]
    predictions = Predictor.from_run_dir(run_dir.path).predict(photos)
    assert all(prediction.ok for prediction in predictions)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    heatmaps, probabilities, _ = grad_cam(load_model(run_dir.model_path), pixels)
    heatmaps = np.asarray(heatmaps)
    assert heatmaps.shape == (2, 32, 32) and np.all(np.isfinite(heatmaps))
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1


def test_mixed_precision_is_refused_for_transfer_models(tmp_path):
    config = tiny_config("model.name=mobilenet_v2", "model.weights=none", "train.precision=mixed_bfloat16")
    with pytest.raises(CatsdogsError, match="train.precision=float32"):
        train(config, tmp_path / "unused", runs_dir=tmp_path / "runs", verbose=0)
