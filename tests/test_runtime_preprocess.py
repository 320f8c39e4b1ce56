"""runtime.preprocess: the training image path in numpy and Pillow gives the training pixels, without TensorFlow."""

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs.errors import CatsdogsError
from catsdogs.images import ImageError, clean_image_bytes, decode_and_resize
from catsdogs.runtime import load_pixels, resize_bilinear_antialiased, resize_to_uint8
from catsdogs.runtime.preprocess import resize_weights

LIMITS = {"max_pixels": 50_000_000, "min_side": 1}
# CI checks out ../shared beside the repository, as on a developer's machine.
REAL_PHOTOS_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dogs-vs-cats-original-sample" / "train"


def _random_pixels(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _smooth_photo(seed, size):
    """A photo-like RGB image (width, height) = size: smooth, so JPEG keeps it close."""
    width, height = size
    base = _random_pixels((max(height // 8, 2), max(width // 8, 2), 3), seed)
    return Image.fromarray(base).resize((width, height), Image.BICUBIC)


def _encode(image, format, **options):
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def _difference(first, second):
    return np.abs(first.astype(np.int64) - second.astype(np.int64))


def _training_pixels(data, image_size):
    """The pixels training feeds the model for a file's bytes."""
    clean = clean_image_bytes(data, **LIMITS)
    return decode_and_resize(clean.data, image_size).numpy()


# ----------------------------------------------------------------------------- the resize alone


@pytest.mark.parametrize(
    ("input_shape", "output_size"),
    [
        ((375, 500, 3), (180, 180)),  # A typical photo shrunk, non-square to square.
        ((499, 374, 3), (180, 180)),
        ((333, 241, 3), (224, 288)),  # Shrink one axis, enlarge the other.
        ((50, 40, 3), (180, 180)),  # Enlarge both axes.
        ((17, 300, 3), (45, 61)),  # Very non-square, odd factors.
        ((180, 180, 3), (180, 180)),  # Same size: TensorFlow still resamples, as an identity.
        ((7, 9, 3), (90, 4)),
        ((1, 5, 3), (3, 2)),  # A one-pixel axis.
        ((64, 48), (31, 33)),  # Two-dimensional input.
    ],
)
def test_resize_equals_tensorflow_antialiased_bilinear(input_shape, output_size):
    import tensorflow as tf

    pixels = _random_pixels(input_shape, seed=sum(input_shape))
    reference_input = pixels if pixels.ndim == 3 else pixels[..., None]
    expected = tf.image.resize(reference_input, output_size, method="bilinear", antialias=True).numpy()
    expected = expected if pixels.ndim == 3 else expected[..., 0]
    resized = resize_bilinear_antialiased(pixels, output_size)
    assert resized.dtype == np.float32
    assert resized.shape == expected.shape
    np.testing.assert_allclose(resized, expected, rtol=0, atol=0.5 / 255)
    expected_uint8 = np.clip(np.round(expected), 0, 255).astype(np.uint8)
    assert _difference(resize_to_uint8(pixels, output_size), expected_uint8).max() <= 1


def test_resize_weights_widen_the_triangle_and_renormalise_at_the_edge():
    # Shrinking 4 pixels to 2 widens the kernel to radius 2. Output 0 samples the input at 1.0 and
    # reaches input pixels 0, 1 and 2 (centres 0.5, 1.5, 2.5) with raw weights 0.75, 0.75, 0.25;
    # input pixel -1 lies outside, so the weights are divided by 1.75 instead of 2.
    starts, weights = resize_weights(4, 2)
    assert starts.tolist() == [0, 1]
    np.testing.assert_allclose(weights[0, :3], [3 / 7, 3 / 7, 1 / 7], rtol=1e-6)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)


def test_resize_weights_enlarging_is_plain_bilinear():
    # Enlarging 2 pixels to 4: output 1 samples at 0.75, a quarter of the way from centre 0.5 to 1.5.
    starts, weights = resize_weights(2, 4)
    assert weights.shape[1] == 2
    row = dict(zip((starts[1] + np.arange(2)).tolist(), weights[1].tolist()))
    assert row == pytest.approx({0: 0.75, 1: 0.25})


# ----------------------------------------------------------------------------- end to end, synthetic


def _normalised_files():
    """Photos that `clean_image_bytes` re-encodes as PNG: the decoders agree exactly on those."""
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display.
    _smooth_photo(1, (120, 90)).save(rotated, "JPEG", exif=exif.tobytes(), quality=92)
    transparent = _smooth_photo(3, (97, 211)).convert("RGBA")
    transparent.putalpha(128)
    return {
        "plain.png": _encode(_smooth_photo(0, (300, 220)), "PNG"),
        "small.png": _encode(_smooth_photo(5, (60, 45)), "PNG"),
        "rotated.jpg": rotated.getvalue(),
        "cmyk.jpg": _encode(_smooth_photo(2, (250, 400)).convert("CMYK"), "JPEG", quality=92),
        "alpha.png": _encode(transparent, "PNG"),
        "gray.webp": _encode(_smooth_photo(4, (180, 181)).convert("L"), "WEBP", lossless=True),
        "palette.gif": _encode(_smooth_photo(6, (64, 80)).convert("P"), "GIF"),
    }


@pytest.mark.parametrize("image_size", [(180, 180), (64, 96)])
def test_load_pixels_equals_training_path_for_photos_stored_as_png(image_size):
    for name, data in _normalised_files().items():
        assert clean_image_bytes(data, **LIMITS).extension == ".png", name
        pixels = load_pixels(data, image_size=image_size, **LIMITS)
        assert pixels.dtype == np.uint8 and pixels.shape == (*image_size, 3), name
        np.testing.assert_array_equal(pixels, _training_pixels(data, image_size), err_msg=name)


@pytest.mark.parametrize(("size", "subsampling"), [((300, 220), 2), ((150, 149), 2), ((400, 120), 0)])
def test_load_pixels_on_plain_jpeg_equals_the_training_path(size, subsampling):
    # Both sides decode JPEGs with libjpeg's accurate DCT. With TensorFlow's default fast DCT the
    # training path came out up to 5 levels away on these photos, so equality here tests the choice.
    data = _encode(_smooth_photo(7, size), "JPEG", quality=90, subsampling=subsampling)
    assert clean_image_bytes(data, **LIMITS).changed is False
    pixels = load_pixels(data, image_size=(180, 180), **LIMITS)
    np.testing.assert_array_equal(pixels, _training_pixels(data, (180, 180)))


# ----------------------------------------------------------------------------- end to end, real photos


@pytest.fixture(scope="module")
def real_photos():
    if not REAL_PHOTOS_DIR.is_dir():
        pytest.skip(f"the real photos are not checked out beside the repository at {REAL_PHOTOS_DIR}")
    # The first ten by name are 150 to 500 pixels a side: shrunk, enlarged and both at once below.
    return sorted(REAL_PHOTOS_DIR.glob("*.jpg"))[:10]


@pytest.mark.parametrize("image_size", [(180, 180), (288, 288)])
def test_load_pixels_on_real_photos_equals_the_training_path(real_photos, image_size):
    for path in real_photos:
        pixels = load_pixels(path, image_size=image_size, **LIMITS)
        np.testing.assert_array_equal(pixels, _training_pixels(path.read_bytes(), image_size), err_msg=path.name)


# ----------------------------------------------------------------------------- inputs and errors


def test_load_pixels_accepts_a_path_bytes_a_pil_image_and_an_array(tmp_path):
    photo = _smooth_photo(8, (90, 70))
    data = _encode(photo, "PNG")
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    expected = load_pixels(data, image_size=(32, 48), **LIMITS)
    for image in (path, str(path), bytearray(data), memoryview(data), photo, np.asarray(photo)):
        np.testing.assert_array_equal(load_pixels(image, image_size=(32, 48), **LIMITS), expected)
    gray = np.asarray(photo.convert("L"))
    np.testing.assert_array_equal(
        load_pixels(gray, image_size=(32, 48), **LIMITS), load_pixels(gray[..., None], image_size=(32, 48), **LIMITS)
    )


def test_load_pixels_uses_the_configured_limits_by_default():
    tiny = _encode(_smooth_photo(9, (20, 20)), "PNG")
    with pytest.raises(ImageError, match="too small: 20x20"):
        load_pixels(tiny, image_size=(16, 16))


def test_load_pixels_refuses_bad_data_and_bad_arguments():
    with pytest.raises(ImageError, match="not an image"):
        load_pixels(b"this is not a photo", image_size=(16, 16), **LIMITS)
    with pytest.raises(CatsdogsError, match=r"Received: shape=\(4, 4, 2\)"):
        load_pixels(np.zeros((4, 4, 2), np.uint8), image_size=(16, 16), **LIMITS)
    for image_size in [(0, 16), (16,), "16x16", (16.5, 16)]:
        with pytest.raises(CatsdogsError, match="Received: image_size="):
            load_pixels(np.zeros((4, 4, 3), np.uint8), image_size=image_size, **LIMITS)
    with pytest.raises(CatsdogsError, match=r"Received: shape=\(0, 4, 3\)"):
        resize_bilinear_antialiased(np.zeros((0, 4, 3)), (2, 2))


# ----------------------------------------------------------------------------- no TensorFlow


def test_runtime_loads_a_photo_with_tensorflow_and_keras_blocked(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_encode(_smooth_photo(10, (120, 90)), "JPEG", quality=90))
    script = textwrap.dedent(
        f"""
        import sys

        # None in sys.modules makes any `import tensorflow` or `import keras` raise ImportError.
        sys.modules["tensorflow"] = None
        sys.modules["keras"] = None
        import catsdogs.runtime

        pixels = catsdogs.runtime.load_pixels({str(path)!r}, image_size=(40, 30))
        print(pixels.shape, pixels.dtype)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(40, 30, 3) uint8"
