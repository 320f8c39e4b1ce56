"""Tests for the Keras EfficientNet-Lite0 architecture (`catsdogs.models.efficientnet_lite`)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import pytest

from catsdogs.errors import CatsdogsError
from catsdogs.models import build_model
from catsdogs.models.efficientnet_lite import BLOCK_NAMES, build_efficientnet_lite0
from catsdogs.models.transfer import feature_extractor, unfreeze_top_blocks


@pytest.fixture(scope="module")
def lite0_model():
    return build_efficientnet_lite0(input_shape=(224, 224, 3))


def test_layer_names_mark_block_boundaries(lite0_model):
    names = {layer.name for layer in lite0_model.layers}
    assert len(BLOCK_NAMES) == 16
    for block in BLOCK_NAMES:
        assert f"{block}_project_bn" in names
    for name in (
        "rescaling",
        "stem_conv",
        "stem_bn",
        "top_conv",
        "top_bn",
        "top_activation",
        "avg_pool",
        "predictions",
    ):
        assert name in names
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in lite0_model.layers)
    # The transfer helpers that serve every family find the pooled 1280-d features of Lite0's registry model.
    classifier = build_model("efficientnet_lite0", input_shape=(64, 64, 3), num_classes=2, weights=None)
    assert feature_extractor(classifier).output.shape == (None, 1280)


def test_unfreeze_top_blocks_leaves_lower_blocks_and_batch_norm_frozen():
    # Lite0 has no fine-tuning helpers of its own: the transfer ones must find its 16 blocks and its head.
    model = build_model("efficientnet_lite0", input_shape=(64, 64, 3), num_classes=2, weights=None)
    trainable = set(unfreeze_top_blocks(model, 2))
    backbone = model.get_layer("backbone")
    assert {"block6d_expand_conv", "block7a_project_conv", "top_conv"} <= trainable
    assert model.get_layer("predictions").trainable
    assert "block6c_expand_conv" not in trainable
    assert "block7a_project_bn" not in trainable
    assert not backbone.get_layer("stem_conv").trainable
    assert backbone.get_layer("block7a_dwconv").trainable
    with pytest.raises(CatsdogsError, match="fine_tune_blocks=17"):
        unfreeze_top_blocks(model, 17)
