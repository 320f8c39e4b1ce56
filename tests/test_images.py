"""images.clean_image_bytes: the one image path. Bad files fail with a reason; odd ones become plain RGB."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from catsdogs.errors import CatsdogsError
from catsdogs.images import CleanImage, ImageError, clean_image_bytes, load_rgb

LIMITS = {"max_pixels": 1_000_000, "min_side": 16}


def encode(image, format, **options):
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def decode(data):
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


# ----------------------------------------------------------------------------- plain JPEG


@pytest.mark.parametrize("progressive", [False, True])
def test_plain_jpeg_passes_through_byte_for_byte(make_image_bytes, progressive):
    data = make_image_bytes(seed=3, size=(60, 40), progressive=progressive)
    clean = clean_image_bytes(data, **LIMITS)
    assert isinstance(clean, CleanImage)
    assert clean.data is data and not clean.changed and clean.note == ""
    assert (clean.extension, clean.width, clean.height, clean.source_format) == (".jpg", 60, 40, "JPEG")


@pytest.mark.parametrize("progressive", [False, True])
def test_kept_pixels_are_exactly_what_decoding_the_data_gives(make_image_bytes, progressive):
    data = make_image_bytes(seed=5, size=(60, 40), progressive=progressive)
    assert clean_image_bytes(data, **LIMITS).pixels is None  # only when asked
    clean = clean_image_bytes(data, **LIMITS, keep_pixels=True)
    assert clean.pixels.dtype == np.uint8 and clean.pixels.shape == (40, 60, 3)
    np.testing.assert_array_equal(clean.pixels, decode(clean.data))


def test_no_pixels_are_kept_for_a_normalised_image():
    data = encode(Image.fromarray(np.full((40, 60), 128, np.uint8)), "PNG")  # grayscale: re-encoded as RGB
    clean = clean_image_bytes(data, **LIMITS, keep_pixels=True)
    assert clean.changed and clean.pixels is None


def test_real_photo_passes_through_byte_for_byte(real_photos):
    data = (real_photos / "cat.0.jpg").read_bytes()
    clean = clean_image_bytes(data, max_pixels=50_000_000, min_side=32)
    assert clean.data == data and not clean.changed


# ----------------------------------------------------------------------------- normalisation


def test_exif_rotation_is_applied():
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:10, :10] = (255, 0, 0)  # a red block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(Image.fromarray(stored), "PNG", exif=exif.tobytes())
    clean = clean_image_bytes(data, **LIMITS)
    assert (clean.width, clean.height) == (40, 60)
    assert "exif rotation" in clean.note
    np.testing.assert_array_equal(decode(clean.data), np.rot90(stored, k=-1))


def test_exif_rotated_jpeg_is_rotated_not_passed_through(make_image_bytes):
    exif = Image.Exif()
    exif[0x0112] = 8
    data = make_image_bytes(seed=1, size=(64, 32), exif=exif.tobytes(), quality=95)
    clean = clean_image_bytes(data, **LIMITS)
    assert clean.changed and clean.extension == ".png" and (clean.width, clean.height) == (32, 64)
    with Image.open(io.BytesIO(data)) as original:
        expected = np.rot90(np.asarray(original.convert("RGB")), k=1)
    np.testing.assert_array_equal(decode(clean.data), expected)


def _odd_images():
    base = Image.fromarray(np.linspace(0, 255, 48 * 48 * 3).reshape(48, 48, 3).astype(np.uint8))
    two_frames = [Image.new("RGB", (48, 48), (255, 0, 0)), Image.new("RGB", (48, 48), (0, 0, 255))]
    return {
        "cmyk jpeg": (encode(base.convert("CMYK"), "JPEG"), "cmyk->rgb"),
        "grayscale L": (encode(base.convert("L"), "PNG"), "l->rgb"),
        "grayscale LA": (encode(base.convert("LA"), "PNG"), "la alpha"),
        "palette P": (encode(base.convert("P"), "PNG"), "p->rgb"),
        "palette with transparency": (encode(base.convert("P"), "PNG", transparency=0), "p alpha"),
        "RGBA": (encode(base.convert("RGBA"), "PNG"), "rgba alpha"),
        "16-bit": (encode(Image.fromarray(np.full((48, 48), 40000, np.uint16)), "PNG"), "16-bit"),
        "GIF": (encode(two_frames[0], "GIF", save_all=True, append_images=two_frames[1:]), "gif first frame"),
        "WebP": (encode(base, "WEBP", lossless=True), "webp->png"),
        "BMP": (encode(base, "BMP"), "bmp->png"),
        "plain PNG": (encode(base, "PNG"), "png re-encoded"),
    }


@pytest.mark.parametrize("kind", list(_odd_images()))
def test_odd_image_becomes_plain_rgb_png(kind):
    data, expected_note = _odd_images()[kind]
    clean = clean_image_bytes(data, **LIMITS)
    assert clean.changed and clean.extension == ".png" and expected_note in clean.note
    pixels = decode(clean.data)
    assert pixels.shape == (48, 48, 3) and pixels.dtype == np.uint8
    with Image.open(io.BytesIO(clean.data)) as stored:
        assert stored.format == "PNG" and not stored.info.get("exif") and not stored.info.get("icc_profile")


def test_sixteen_bit_is_scaled_not_clipped():
    values = np.array([[0, 257, 32768, 65535]], np.uint16).repeat(16, axis=0).repeat(4, axis=1)
    clean = clean_image_bytes(encode(Image.fromarray(values), "PNG"), **LIMITS)
    row = decode(clean.data)[0, ::4, 0]
    np.testing.assert_array_equal(row, [0, 1, 128, 255])


def test_transparency_is_composited_on_white():
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :8, 3] = 0  # left half fully transparent
    rgba[:, 8:, 3] = 128  # right half half-transparent red
    pixels = decode(clean_image_bytes(encode(Image.fromarray(rgba, "RGBA"), "PNG"), **LIMITS).data)
    np.testing.assert_array_equal(pixels[0, 0], [255, 255, 255])
    np.testing.assert_allclose(pixels[0, 15], [255, 127, 127], atol=1)


def test_gif_keeps_the_first_frame():
    frames = [Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    pixels = decode(clean_image_bytes(data, **LIMITS).data)
    np.testing.assert_array_equal(pixels[5, 5], [255, 0, 0])


def test_lossless_inputs_keep_their_pixels():
    original = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for format, options in [("PNG", {}), ("BMP", {}), ("WEBP", {"lossless": True})]:
        clean = clean_image_bytes(encode(Image.fromarray(original), format, **options), **LIMITS)
        np.testing.assert_array_equal(decode(clean.data), original, err_msg=format)


# ----------------------------------------------------------------------------- bad files


def _bad_files(jpeg):
    return {
        "empty file": b"",
        "truncated": jpeg[: len(jpeg) // 2],
        "not an image": b"This is a text file that someone named photo.jpg\n" * 4,
        "unsupported format: TIFF": encode(Image.new("RGB", (32, 32)), "TIFF"),
        "too many pixels: 2000x600": encode(Image.new("RGB", (2000, 600)), "PNG"),
        "too small: 10x40": encode(Image.new("RGB", (10, 40)), "PNG"),
    }


@pytest.mark.parametrize("reason", list(_bad_files(b"")))
def test_bad_file_fails_with_its_reason(make_image_bytes, reason):
    data = _bad_files(make_image_bytes(seed=5, size=(64, 64)))[reason]
    with pytest.raises(ImageError) as caught:
        clean_image_bytes(data, **LIMITS)
    assert caught.value.reason == reason
    assert isinstance(caught.value, CatsdogsError)
    assert str(caught.value).endswith(f"Received: reason={reason}")


# A supported format's signature followed by zeros: the format is known, its data is broken.
_BROKEN_BODY = bytes(400)
BROKEN_FILES = {
    "JPEG": b"\xff\xd8\xff" + _BROKEN_BODY,
    "PNG": b"\x89PNG\r\n\x1a\n" + _BROKEN_BODY,
    "GIF": b"GIF89a" + _BROKEN_BODY,
    "WebP": b"RIFF" + (len(_BROKEN_BODY) + 8).to_bytes(4, "little") + b"WEBPVP8 " + _BROKEN_BODY,
    "BMP": b"BM" + _BROKEN_BODY,
}


@pytest.mark.parametrize("format_name", list(BROKEN_FILES))
def test_a_broken_file_of_a_supported_format_is_not_called_unsupported(format_name):
    with pytest.raises(ImageError) as caught:
        clean_image_bytes(BROKEN_FILES[format_name], **LIMITS)
    reason = caught.value.reason
    assert reason.startswith(f"not a valid {format_name}: ") and len(reason) > len(f"not a valid {format_name}: ")
    assert "unsupported" not in reason and "not identified by this driver" not in reason
    assert str(caught.value).endswith(f"Received: reason={reason}")


def test_a_broken_jpeg_says_what_the_decoder_found():
    with pytest.raises(ImageError) as caught:
        clean_image_bytes(BROKEN_FILES["JPEG"], **LIMITS)
    assert caught.value.reason == "not a valid JPEG: no image header found"


def test_truncated_webp_is_reported_as_truncated():
    pixels = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    data = encode(Image.fromarray(pixels), "WEBP")
    with pytest.raises(ImageError) as caught:
        clean_image_bytes(data[: len(data) // 2], **LIMITS)
    assert caught.value.reason == "truncated"


def test_truncated_images_are_never_loaded_silently(make_image_bytes):
    data = make_image_bytes(seed=2, size=(64, 64))
    with pytest.raises(ImageError):
        clean_image_bytes(data[:-20], **LIMITS)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# ----------------------------------------------------------------------------- load_rgb


def test_load_rgb_reads_paths_and_bytes(tmp_path, make_image_bytes):
    path = tmp_path / "데이터" / "사진 1.png"
    path.parent.mkdir()
    path.write_bytes(make_image_bytes(seed=4, size=(30, 20), format="PNG", mode="L"))
    from_path = load_rgb(path)
    assert from_path.shape == (20, 30, 3) and from_path.dtype == np.uint8
    np.testing.assert_array_equal(load_rgb(path.read_bytes()), from_path)
    np.testing.assert_array_equal(from_path[..., 0], from_path[..., 2])


def test_load_rgb_raises_for_a_bad_file(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        load_rgb(path)
