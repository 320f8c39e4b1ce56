"""Feature extraction and its cache: reuse, invalidation, engines, and the extraction model."""

import os

import numpy as np
import pytest

from catsdogs.data.dataset import list_images
from catsdogs.models.transfer import feature_extractor
from catsdogs.training.features import FeatureCache, FeatureExtractor, cached_features, extract
from catsdogs.training.transfer_features import cut_tensor, extraction_model, load_split_features
from fake_runs import make_data_dir
from tiny_backbones import tiny_transfer_model

SIZE = (32, 32)


class CountingExtractor(FeatureExtractor):
    """A Keras-engine extractor that counts the batches it runs."""

    def __init__(self, model, output_names):
        super().__init__(model, image_size=SIZE, output_names=output_names, engine="keras")
        self.batches = 0

    def __call__(self, pixels):
        self.batches += 1
        return super().__call__(pixels)


@pytest.fixture
def data_dir(tmp_path):
    return make_data_dir(tmp_path / "data", counts={"train": 4, "validation": 2}, size=32)


def _features(extractor, cache, data_dir, split="train", flip=False):
    paths, labels, _ = list_images(data_dir / split)
    return cached_features(extractor, cache, paths=paths, labels=labels, root=data_dir, flip=flip, batch_size=4)


def test_second_request_reads_the_cache_without_running_the_model(data_dir, tmp_path):
    model, names = extraction_model(tiny_transfer_model())
    cache = FeatureCache(tmp_path / "cache")
    first, hit = _features(CountingExtractor(model, names), cache, data_dir)
    assert not hit and first["pooled"].shape == (8, 16)
    extractor = CountingExtractor(model, names)
    second, hit = _features(extractor, cache, data_dir)
    assert hit and extractor.batches == 0
    np.testing.assert_array_equal(second["pooled"], first["pooled"])


def test_changed_photo_backbone_size_or_flip_gives_a_new_key(data_dir, tmp_path):
    model, names = extraction_model(tiny_transfer_model())
    cache = FeatureCache(tmp_path / "cache")
    _features(CountingExtractor(model, names), cache, data_dir)
    # A replaced photo (new content and modification time) must not be served old features.
    photo = sorted((data_dir / "train" / "cats").iterdir())[0]
    photo.write_bytes((data_dir / "train" / "dogs" / "0.png").read_bytes())
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
    assert not _features(CountingExtractor(model, names), cache, data_dir)[1]
    # A retrained backbone (other weights) is another key.
    other, other_names = extraction_model(tiny_transfer_model(seed=1))
    assert not _features(CountingExtractor(other, other_names), cache, data_dir)[1]
    # Flipped photos are cached under their own key, and differ from the originals.
    flipped, hit = _features(CountingExtractor(model, names), cache, data_dir, flip=True)
    assert not hit
    assert not np.allclose(flipped["pooled"], _features(CountingExtractor(model, names), cache, data_dir)[0]["pooled"])
    # Another image size is another key.
    bigger, bigger_names = extraction_model(tiny_transfer_model(input_shape=(40, 40, 3)))
    extractor = FeatureExtractor(bigger, image_size=(40, 40), output_names=bigger_names, engine="keras")
    assert not _features(extractor, cache, data_dir)[1]
    assert len(list(cache.folder.glob("*.npz"))) == 5


def test_damaged_cache_file_is_extracted_again(data_dir, tmp_path):
    model, names = extraction_model(tiny_transfer_model())
    cache = FeatureCache(tmp_path / "cache")
    _features(CountingExtractor(model, names), cache, data_dir)
    (cached_file,) = cache.folder.glob("*.npz")
    cached_file.write_bytes(b"not an npz file")
    result, hit = _features(CountingExtractor(model, names), cache, data_dir)
    assert not hit and result["pooled"].shape == (8, 16)


def test_extraction_model_matches_the_full_model_and_adds_cut_activations(data_dir):
    model = tiny_transfer_model()
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    expected = feature_extractor(model).predict_on_batch(pixels)
    cut, block = cut_tensor(model, 2)
    assert block == "block2"
    feature_model, names = extraction_model(model, cut, block)
    assert names == ["cut_block2", "pooled"]
    activations, pooled = feature_model.predict_on_batch(pixels)
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-6)
    assert activations.shape == (3, 16, 16, 8)


def test_flipped_features_are_appended_to_the_train_split_only(data_dir, tmp_path):
    splits = load_split_features(
        tiny_transfer_model(),
        data_dir,
        splits=("train", "validation"),
        image_size=SIZE,
        flip_train=True,
        cache=FeatureCache(tmp_path / "cache"),
        engine="keras",
        batch_size=4,
    )
    assert splits["train"].pooled.shape == (16, 16) and splits["validation"].pooled.shape == (4, 16)
    np.testing.assert_array_equal(splits["train"].labels, [0, 0, 0, 0, 1, 1, 1, 1] * 2)


def test_onnx_runtime_agrees_with_keras(data_dir):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    model, names = extraction_model(tiny_transfer_model())
    paths, _, _ = list_images(data_dir / "train")
    onnx = FeatureExtractor(model, image_size=SIZE, output_names=names, engine="onnxruntime")
    keras_engine = FeatureExtractor(model, image_size=SIZE, output_names=names, engine="keras")
    (onnx_pooled,) = extract(onnx, paths, batch_size=4)
    (keras_pooled,) = extract(keras_engine, paths, batch_size=4)
    assert onnx.engine == "onnxruntime"
    np.testing.assert_allclose(onnx_pooled, keras_pooled, rtol=1e-4, atol=1e-5)
