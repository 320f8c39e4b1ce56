"""The one place that decodes and normalises an image: bytes in, clean RGB bytes out.

Training and serving must see identical pixels for the same photo. So
`prepare` stores, and the service feeds to the model, the `data` that
`clean_image_bytes` returns, and both decode it with the same decoder
(`tf.io.decode_image`; JPEGs with libjpeg's accurate DCT, which Pillow uses
too). A plain RGB JPEG with no EXIF rotation is passed through byte for byte,
which is fast and lossless; every other accepted image is turned into plain
8-bit RGB and re-encoded as PNG, which is lossless too.

Every file is fully decoded before it is accepted. Pillow's
`ImageFile.LOAD_TRUNCATED_IMAGES` stays False, so a truncated file fails
instead of being padded with grey, and the pixel cap (a decompression-bomb
guard) comes from the caller's `max_pixels`, checked against the header before
any pixel is decoded.
"""

import dataclasses
import io
from pathlib import Path

import numpy
from PIL import ExifTags, Image, ImageOps

from catsdogs.choices import DEFAULT_MAX_PIXELS
from catsdogs.errors import CatsdogsError

SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")
# What TensorFlow's decoder reads in the training pipeline; `prepare` writes only these.
TRAINING_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# What `predict` looks for in folders: those, and files Pillow may read and normalise first
# (a TIFF is found, then refused with its reason, rather than silently skipped).
PHOTO_EXTENSIONS = (*TRAINING_EXTENSIONS, ".webp", ".tif", ".tiff", ".jfif")
# Pillow's JPEG opener also returns MPO files (a camera JPEG followed by more
# frames) under their own format name; they are accepted and normalised.
_FORMAT_NAMES = {"JPEG": "jpeg", "MPO": "mpo", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp"}
# How a broken file of a supported format is named in its reason: "not a valid WebP: ...".
# An MPO is a camera JPEG with more frames, so a broken one is a broken JPEG to the user.
_DISPLAY_NAMES = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "GIF": "GIF", "WEBP": "WebP", "BMP": "BMP"}
# Pillow's words for "the signature matched but no image header followed", which mean nothing to a user.
_GENERIC_OPEN_FAILURE = "not identified by this driver"
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_WHITE = (255, 255, 255, 255)
# Level 1 is several times faster than the default and still lossless; only odd
# inputs take this path, so the larger files cost little.
_PNG_COMPRESS_LEVEL = 1


class ImageError(CatsdogsError):
    """An image that cannot be used, with a short machine-usable `reason`.

    `reason` is one of "empty file", "truncated", "not an image", "not a valid
    FORMAT: DECODER MESSAGE" (a supported format whose data does not decode),
    "corrupt" (a broken file whose format is unknown), "unsupported format: NAME",
    "too many pixels: WxH" or "too small: WxH".
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        message = (
            f"The image cannot be used: {reason}{' (' + detail + ')' if detail else ''}. "
            "Expected a complete JPEG, PNG, GIF, WebP or BMP file within the size limits; "
            f"re-export or replace the file. Received: reason={reason}"
        )
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class CleanImage:
    """A validated image, ready to store or to decode.

    Attributes:
        data: the bytes to store or feed to the decoder.
        extension: ".jpg" for a passed-through JPEG, ".png" for a re-encoded image.
        width: width in pixels, after any EXIF rotation.
        height: height in pixels, after any EXIF rotation.
        source_format: the format Pillow found, e.g. "JPEG" or "GIF".
        changed: False when `data` is the input, byte for byte.
        note: what was normalised, e.g. "exif rotation, cmyk->rgb"; empty when unchanged.
        pixels: with `keep_pixels`, the uint8 array (height, width, 3) that decoding `data` gives, when the
            check already decoded exactly that (an unchanged RGB JPEG); else None.
    """

    data: bytes
    extension: str
    width: int
    height: int
    source_format: str
    changed: bool
    note: str
    pixels: numpy.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)


def clean_image_bytes(data, *, max_pixels, min_side, keep_pixels=False):
    """Fully decode an image and return it as plain RGB, re-encoded only when needed.

    Args:
        data: the file's bytes.
        max_pixels: largest accepted width x height (decompression-bomb guard).
        min_side: smallest accepted width or height, in pixels.
        keep_pixels: also return the decoded pixels when they are those of `data` (`CleanImage.pixels`),
            so that a caller about to decode `data` need not decode it a second time.

    Returns:
        A `CleanImage`.

    Raises:
        ImageError: for an empty, truncated, corrupt, unsupported, too large or
            too small image; `error.reason` says which.
    """
    if not data:
        raise ImageError("empty file")
    try:
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as error:
        raise ImageError("too many pixels", str(error)) from None
    except Image.UnidentifiedImageError:
        raise _unidentified_error(data) from None
    except Exception as error:  # Pillow raises many types for a broken header.
        raise _decode_error(error, data) from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(f"too many pixels: {width}x{height}", f"the limit is {max_pixels} pixels")
        if min(width, height) < min_side:
            raise ImageError(f"too small: {width}x{height}", f"the smallest side must be at least {min_side} pixels")
        try:
            image.load()
        except Exception as error:
            raise _decode_error(error, data, image.format) from None
        source_format = image.format
        orientation = _orientation(image)
        if source_format == "JPEG" and image.mode == "RGB" and orientation == 1:
            pixels = numpy.asarray(image, dtype=numpy.uint8) if keep_pixels else None
            return CleanImage(data, ".jpg", width, height, source_format, changed=False, note="", pixels=pixels)
        try:
            return _normalise(image, source_format, orientation)
        except Exception as error:
            # A mode or frame Pillow cannot convert is a bad file, not a crash of the whole run.
            raise _decode_error(error, data, source_format) from None


def load_rgb(source, *, max_pixels=DEFAULT_MAX_PIXELS, min_side=1):
    """Read an image file or bytes as a numpy uint8 array of shape (height, width, 3).

    A convenience for tools and plots; it goes through `clean_image_bytes`, so
    it shows the same pixels that training uses (up to the JPEG decoder).

    Args:
        source: a path (str or Path) or the file's bytes.
        max_pixels: largest accepted width x height.
        min_side: smallest accepted width or height.

    Returns:
        A uint8 array of shape (height, width, 3).

    Raises:
        ImageError: when the image cannot be used.
        OSError: when the path cannot be read.
    """
    data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).read_bytes()
    clean = clean_image_bytes(data, max_pixels=max_pixels, min_side=min_side)
    with Image.open(io.BytesIO(clean.data)) as image:
        return numpy.asarray(image.convert("RGB"), dtype=numpy.uint8)


def _orientation(image):
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1) or 1)
    except Exception:
        # Broken EXIF is common in the wild; the pixels are still fine, so keep them upright as stored.
        return 1


def _normalise(image, source_format, orientation):
    notes = []
    if _frame_count(image) > 1:
        notes.append(f"{_FORMAT_NAMES[source_format]} first frame")
    if 2 <= orientation <= 8:
        image = ImageOps.exif_transpose(image)
        notes.append("exif rotation")
    image, mode_note = _to_rgb(image)
    if mode_note:
        notes.append(mode_note)
    if source_format == "PNG":
        notes.append("png re-encoded")
    elif source_format != "JPEG":
        notes.append(f"{_FORMAT_NAMES[source_format]}->png")
    buffer = io.BytesIO()
    # A fresh image carries no EXIF or ICC data, so the stored PNG holds pixels only.
    Image.frombytes("RGB", image.size, image.tobytes()).save(buffer, "PNG", compress_level=_PNG_COMPRESS_LEVEL)
    width, height = image.size
    return CleanImage(buffer.getvalue(), ".png", width, height, source_format, changed=True, note=", ".join(notes))


def _frame_count(image):
    try:
        return getattr(image, "n_frames", 1)
    except Exception:
        # A broken later frame does not matter: only the first one is used.
        return 1


def _to_rgb(image):
    """Return (RGB image, note) for any Pillow mode a supported format can produce."""
    mode = image.mode
    if mode == "RGB":
        return image, ""
    if mode in _SIXTEEN_BIT_MODES:
        # Scale 0..65535 onto 0..255 with rounding; converting straight to "L" would clip at 255.
        values = numpy.clip(numpy.asarray(image).astype(numpy.int64), 0, 65535)
        scaled = ((values * 255 + 32767) // 65535).astype(numpy.uint8)
        return Image.fromarray(scaled, "L").convert("RGB"), "16-bit->rgb"
    has_transparency = mode in _ALPHA_MODES or "transparency" in image.info
    if has_transparency:
        # Composite on white: a transparent background must not turn black or vary by tool.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB"), f"{mode.lower()} alpha->rgb on white"
    return image.convert("RGB"), f"{mode.lower()}->rgb"


def _signature_format(data):
    """Return the Pillow format whose file signature `data` starts with, or None.

    Only the plugins' cheap signature checks run here, never a full parse.
    """
    Image.init()
    prefix = data[:16]
    for format_name in Image.ID:
        _, accept = Image.OPEN[format_name]
        try:
            if accept is not None and accept(prefix):
                return format_name
        except Exception:
            continue
    return None


def _unidentified_error(data):
    # Pillow found no format that opens the file. Its signature tells the user more: a format we
    # do not accept (e.g. TIFF), a format we accept whose data is broken, or not an image at all.
    format_name = _signature_format(data)
    if format_name is None:
        return ImageError("not an image")
    if format_name not in _DISPLAY_NAMES:
        return ImageError(f"unsupported format: {format_name}")
    return _invalid_error(format_name, _open_failure(format_name, data))


def _open_failure(format_name, data):
    """Return the message of the format's own opener on `data`: why Pillow did not identify it."""
    factory, _ = Image.OPEN[format_name]
    try:
        factory(io.BytesIO(data), "").close()
    except Exception as error:
        message = str(error)
        return "no image header found" if message == _GENERIC_OPEN_FAILURE else message
    # The opener succeeded alone, so only the combined open failed; there is nothing more specific to say.
    return "no image header found"


def _invalid_error(format_name, message):
    return ImageError(f"not a valid {_DISPLAY_NAMES[format_name]}: {message}")


def _decode_error(error, data, format_name=None):
    message = str(error)
    if isinstance(error, EOFError) or "truncated" in message.lower() or _shorter_than_declared(data):
        return ImageError("truncated", message)
    if isinstance(error, Image.DecompressionBombError):
        return ImageError("too many pixels", message)
    # The header may have been too broken to open, so the signature names the format then.
    format_name = format_name or _signature_format(data)
    if format_name in _DISPLAY_NAMES:
        return _invalid_error(format_name, message or type(error).__name__)
    return ImageError("corrupt", f"{type(error).__name__}: {message}")


def _shorter_than_declared(data):
    # WebP's decoder reports a cut file only as "could not create decoder object";
    # its RIFF header declares the full length, so compare against that.
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return int.from_bytes(data[4:8], "little") + 8 > len(data)
    return False


def image_bytes(image) -> bytes:
    """Return the file bytes of one image as predictors accept it, ready for `clean_image_bytes`.

    Args:
        image: a path (str or Path), the file's bytes, a PIL image, or pixels (encoded losslessly
            by `encode_png`, so an array takes the same path as a file).

    Raises:
        CatsdogsError: for an array of the wrong shape.
        OSError: when a path cannot be read.
    """
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    return encode_png(image)


def encode_png(image: Image.Image | numpy.typing.ArrayLike) -> bytes:
    """Encode an array or PIL image losslessly, so that it takes the same path as a file.

    Args:
        image: a PIL image, or pixels (height, width), (height, width, 1), (height, width, 3) or
            (height, width, 4); values outside uint8 are rounded and clipped to 0..255.

    Returns:
        The PNG file's bytes.

    Raises:
        CatsdogsError: when an array has another shape.
    """
    if not isinstance(image, Image.Image):
        array = numpy.asarray(image)
        if array.dtype != numpy.uint8:
            array = numpy.clip(numpy.round(array.astype(numpy.float64)), 0, 255).astype(numpy.uint8)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise CatsdogsError(
                "An image array must have shape (height, width), (height, width, 3) or (height, width, 4). "
                f"Received: shape={array.shape}"
            )
        image = Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def decode_and_resize(image_bytes, image_size):
    """Decode image bytes and resize them: the one decode used by training and prediction alike.

    Args:
        image_bytes: a scalar string tensor (or bytes) of a JPEG, PNG, GIF or BMP file.
        image_size: (height, width).

    Returns:
        A uint8 tensor (height, width, 3).

    TensorFlow is imported here, not with this module, so `prepare` and its worker
    processes never load it.
    """
    import tensorflow as tf

    # JPEGs use libjpeg's accurate integer DCT, as Pillow does, not TensorFlow's default fast one,
    # so the TensorFlow-free runtime (Pillow) sees the very same pixels: the fast DCT differs by up
    # to 4 levels per pixel (docs/benchmarks.md, "The runtime image path").
    image = tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
    )
    # Antialiasing matters when shrinking 400-pixel photos to 180: without it, fur aliases.
    image = tf.image.resize(image, image_size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
