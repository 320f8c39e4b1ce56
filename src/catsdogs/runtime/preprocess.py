"""The training image path without TensorFlow: clean, decode with Pillow, resize like `tf.image.resize`.

Training reads every photo through `images.decode_and_resize`: the bytes that
`images.clean_image_bytes` returns, decoded by `tf.io.decode_image`, then
`tf.image.resize(..., method="bilinear", antialias=True)`, rounded, clipped and
cast to uint8. This module gives the same pixels with numpy and Pillow alone,
so an exported model can be fed without importing TensorFlow.

The resize reproduces TensorFlow's `ScaleAndTranslate` op with its triangle
kernel (tensorflow/core/kernels/image/scale_and_translate_op.cc), which is what
`tf.image.resize` runs for bilinear with antialiasing:

- Output pixel x samples the input at `(x + 0.5) / scale` (half-pixel centres),
  where `scale = output_size / input_size` in float32.
- The triangle kernel `max(0, 1 - |d|)` has radius 1. When shrinking, it is
  widened by `1 / scale`, so it averages every input pixel it covers (a low-pass
  filter); when enlarging it keeps radius 1, which is plain bilinear
  interpolation.
- The taps run from `ceil(sample - radius - 0.5)` to `floor(sample + radius - 0.5)`,
  clamped to the image; the weights of each output pixel are divided by their
  sum, so the edges are renormalised rather than padded.
- Rows are resized first, then columns, each as a weighted sum accumulated
  in float32 in tap order.

Every step runs in float32 in TensorFlow's order, so the float result is
TensorFlow's bit for bit (checked with TensorFlow 2.21 on shrinking, enlarging
and mixed non-square sizes), and so are the uint8 pixels.

The decoders agree too: the training path decodes JPEGs with libjpeg's
accurate integer DCT (`images.decode_and_resize`), which is what Pillow uses,
so a JPEG photo comes out identical on both sides (checked on 200 real photos
by benchmarks/runtime_preprocess.py). Before that choice TensorFlow used its
default fast DCT and plain JPEGs came out up to 4 levels apart.
"""

from __future__ import annotations

import functools
import io
import typing
from collections.abc import Sequence
from pathlib import Path

import numpy
from PIL import Image

from catsdogs.choices import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE
from catsdogs.errors import CatsdogsError
from catsdogs.images import clean_image_bytes, image_bytes

if typing.TYPE_CHECKING:
    import numpy.typing

    # One image as `load_pixels` accepts it: a path, the file's bytes, a PIL image or pixels.
    ImageInput = str | Path | bytes | bytearray | memoryview | Image.Image | numpy.ndarray

_FLOAT = numpy.float32
# TensorFlow's triangle kernel reaches one pixel each side before it is widened for shrinking.
_KERNEL_RADIUS = _FLOAT(1.0)
_HALF = _FLOAT(0.5)


def load_pixels(
    image: ImageInput,
    *,
    image_size: Sequence[int],
    max_pixels: int | None = None,
    min_side: int | None = None,
) -> numpy.ndarray:
    """Normalise, decode and resize one image exactly as training does, without TensorFlow.

    Args:
        image: a path, the file's bytes, a PIL image, or pixels (height, width[, channels])
            in 0..255.
        image_size: (height, width) of the result.
        max_pixels: largest accepted width x height; default the config's `data.max_pixels`.
        min_side: smallest accepted width or height; default the config's `data.min_side`.

    Returns:
        A uint8 array (height, width, 3).

    Raises:
        CatsdogsError: (an `images.ImageError` for bad image data) when the image cannot be used,
            or when `image_size` or an array's shape is not what it should be.
        OSError: when a path cannot be read.
    """
    height, width = _check_image_size(image_size)
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    min_side = DEFAULT_MIN_SIDE if min_side is None else min_side
    clean = clean_image_bytes(image_bytes(image), max_pixels=max_pixels, min_side=min_side, keep_pixels=True)
    # An unchanged RGB JPEG was decoded by the check already, by the same decoder: one decode, not two.
    pixels = clean.pixels if clean.pixels is not None else decode_rgb(clean.data)
    return resize_to_uint8(pixels, (height, width))


def decode_rgb(data: bytes) -> numpy.ndarray:
    """Decode the bytes that `images.clean_image_bytes` returns into a uint8 array (height, width, 3).

    Those bytes are always an RGB JPEG or an RGB PNG, so this is a plain decode with nothing to normalise.

    Args:
        data: `CleanImage.data`.

    Returns:
        A uint8 array (height, width, 3).
    """
    with Image.open(io.BytesIO(data)) as decoded:
        return numpy.asarray(decoded.convert("RGB"), dtype=numpy.uint8)


def resize_to_uint8(pixels: numpy.typing.ArrayLike, image_size: Sequence[int]) -> numpy.ndarray:
    """Resize like `images.decode_and_resize`: antialiased bilinear, then round, clip and cast to uint8.

    Args:
        pixels: an array (height, width, channels) in 0..255.
        image_size: (height, width) of the result.

    Returns:
        A uint8 array (height, width, channels).
    """
    resized = resize_bilinear_antialiased(pixels, image_size)
    # numpy.round rounds halves to even, as tf.round does.
    return numpy.clip(numpy.round(resized), 0.0, 255.0).astype(numpy.uint8)


def resize_bilinear_antialiased(pixels: numpy.typing.ArrayLike, image_size: Sequence[int]) -> numpy.ndarray:
    """Return `tf.image.resize(pixels, image_size, method="bilinear", antialias=True)` as float32.

    Args:
        pixels: an array (height, width) or (height, width, channels).
        image_size: (height, width) of the result.

    Returns:
        A float32 array (height, width[, channels]), not rounded.

    Raises:
        CatsdogsError: when `image_size` is not two positive integers or `pixels` is empty or of the
            wrong rank.
    """
    output_height, output_width = _check_image_size(image_size)
    pixels = numpy.asarray(pixels)
    if pixels.ndim not in (2, 3) or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise CatsdogsError(
            "Pixels to resize must be a non-empty array of shape (height, width) or (height, width, channels). "
            f"Received: shape={pixels.shape}"
        )
    pixels = pixels.astype(_FLOAT, copy=False)
    # TensorFlow resizes the rows first and the columns second; the order changes the float rounding.
    rows = _resize_first_axis(pixels, *resize_weights(pixels.shape[0], output_height))
    # Gathering whole rows is several times faster than gathering columns, so the columns are
    # resized as the rows of the transposed image; the arithmetic is the same.
    columns_first = numpy.ascontiguousarray(numpy.swapaxes(rows, 0, 1))
    resized = _resize_first_axis(columns_first, *resize_weights(pixels.shape[1], output_width))
    return numpy.ascontiguousarray(numpy.swapaxes(resized, 0, 1))


@functools.lru_cache(maxsize=64)
def resize_weights(input_size: int, output_size: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The taps of TensorFlow's antialiased triangle kernel along one axis, as `ScaleAndTranslate` computes them.

    Output pixel `x` is `sum(weights[x, k] * input[starts[x] + k] for k in range(span))`, summed in
    that order. Taps beyond the image's edge have weight 0 and a start clamped into the image.

    Args:
        input_size: pixels along the axis before resizing.
        output_size: pixels along the axis after resizing.

    Returns:
        `(starts, weights)`: read-only int arrays (output_size,) of first input pixels and float32
        arrays (output_size, span) of normalised weights.
    """
    # Each line mirrors a float32 (or, where TensorFlow uses it, double) operation of
    # ComputeSpansCore, so that the weights are bit for bit TensorFlow's.
    scale = _FLOAT(output_size) / _FLOAT(input_size)
    inverse_scale = _FLOAT(1.0 / numpy.float64(scale))
    kernel_scale = max(inverse_scale, _FLOAT(1.0))
    radius = _KERNEL_RADIUS * kernel_scale
    span = min(2 * int(numpy.ceil(radius)) + 1, input_size)
    sample = (numpy.arange(output_size, dtype=_FLOAT) + _HALF) * inverse_scale
    first = numpy.clip(numpy.ceil(sample - radius - _HALF).astype(numpy.int64), 0, input_size - 1)
    last = numpy.clip(numpy.floor(sample + radius - _HALF).astype(numpy.int64), 0, input_size - 1) + 1
    one_over_kernel_scale = _FLOAT(1.0) / kernel_scale
    sources = first[:, None] + numpy.arange(span)[None, :]
    inside = sources < last[:, None]
    distance = numpy.abs((sources.astype(_FLOAT) + _HALF - sample[:, None]) * one_over_kernel_scale)
    raw = numpy.where(inside & (distance < _FLOAT(1.0)), _FLOAT(1.0) - distance, _FLOAT(0.0)).astype(_FLOAT)
    # Sum tap by tap, as TensorFlow does, rather than numpy's pairwise sum, so the normaliser is the same float.
    total = numpy.zeros(output_size, dtype=_FLOAT)
    for tap in range(span):
        total += raw[:, tap]
    # A span whose weights all vanish stays all zero, as in TensorFlow; it cannot happen for a plain resize.
    usable = numpy.abs(total) >= _FLOAT(1000.0) * numpy.finfo(_FLOAT).tiny
    one_over_total = numpy.divide(_FLOAT(1.0), total, out=numpy.zeros_like(total), where=usable)
    weights = (raw * one_over_total[:, None]).astype(_FLOAT)
    first.flags.writeable = False
    weights.flags.writeable = False
    return first, weights


def _resize_first_axis(pixels, starts, weights):
    """Resize float32 `pixels` along axis 0 with the taps of `resize_weights`, summed in float32 in tap order."""
    input_size = pixels.shape[0]
    output_shape = (starts.shape[0], *pixels.shape[1:])
    tap_shape = (-1,) + (1,) * (pixels.ndim - 1)
    result = numpy.zeros(output_shape, dtype=_FLOAT)
    term = numpy.empty(output_shape, dtype=_FLOAT)
    for tap in range(weights.shape[1]):
        # A tap past the edge has weight 0; clamping its index keeps the gather inside the image.
        numpy.take(pixels, numpy.minimum(starts + tap, input_size - 1), axis=0, out=term)
        numpy.multiply(term, weights[:, tap].reshape(tap_shape), out=term)
        numpy.add(result, term, out=result)
    return result


def _check_image_size(image_size):
    try:
        height, width = (int(side) for side in image_size)
        valid = height > 0 and width > 0 and all(int(side) == side for side in image_size)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise CatsdogsError(
            "The image size must be two positive whole numbers (height, width), e.g. (180, 180); "
            f"take it from the export's preprocessing or the run's config. Received: image_size={image_size!r}"
        )
    return height, width
