"""Uploads, read within limits and checked from their bytes before anything is decoded.

A request's body is refused from its Content-Length before it is read when the
length is over the cap, and counted while it streams otherwise, so a missing
or lying length changes nothing. A photo's type is decided from its first
bytes (JPEG, PNG, WebP, GIF or BMP only), never from its name or its declared
type, and its pixel count from its header (Pillow's lazy `Image.open` reads
nothing more), so a decompression bomb is refused before a pixel is decoded.
Why a photo that passes these checks still cannot be used (empty, truncated,
undecodable, too small) is said by the project's image path
(`images.clean_image_bytes`), as `prepare` and `predict` say it.

Uploaded file names are labels for the answer, never paths: nothing here
writes a file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import unicodedata
import warnings

from PIL import Image
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from catsdogs.service.errors import ServiceError

# The formats the service accepts, by their file signatures.
ALLOWED_TYPES = ("JPEG", "PNG", "WebP", "GIF", "BMP")
_PILLOW_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WebP": "WEBP", "GIF": "GIF", "BMP": "BMP"}
# Signatures of files people upload by mistake, so a refusal can say what the file looked like.
_OTHER_SIGNATURES = (
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "zip"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x1f\x8b", "gzip"),
    (b"\x00\x00\x01\x00", "ICO"),
)
RAW_BODY_TYPES = ("image/", "application/octet-stream")
MULTIPART_TYPE = "multipart/form-data"
FILES_FIELD = "files"
_MAX_NAME_LENGTH = 200


@dataclasses.dataclass(frozen=True)
class Upload:
    """One uploaded photo: a label for the answer and the file's bytes.

    Attributes:
        name: the client's file name, cleaned for display ("upload" for a raw body); never a path.
        data: the file's bytes.
    """

    name: str
    data: bytes


def request_kind(request: Request) -> str:
    """Return "multipart" or "raw" from the request's Content-Type, before the body is read.

    Raises:
        ServiceError: 415 unsupported_media_type for any other content type, or none.
    """
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == MULTIPART_TYPE:
        return "multipart"
    if media_type.startswith(RAW_BODY_TYPES[0]) or media_type == RAW_BODY_TYPES[1]:
        return "raw"
    raise ServiceError(
        415,
        "unsupported_media_type",
        "Send photos as multipart/form-data with one or more `files` parts, or one photo as the raw body with "
        "Content-Type image/jpeg (or image/png, image/webp, image/gif, image/bmp, application/octet-stream), "
        "e.g. curl -F files=@photo.jpg URL.",
        received={"content_type": content_type[:100] or None},
    )


async def read_body(request: Request, *, max_bytes: int, timeout_s: float) -> bytes:
    """Read the whole request body, refusing it as soon as it is over `max_bytes` or late.

    Args:
        request: the incoming request.
        max_bytes: the body cap.
        timeout_s: seconds the client has to send the whole body.

    Returns:
        The body's bytes.

    Raises:
        ServiceError: 413 body_too_large (from Content-Length before reading, or while streaming), 400
            bad_request for a Content-Length that is not a number or a client that disconnected, 408
            body_timeout when the body is not complete in time.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ServiceError(
                400,
                "bad_request",
                "The Content-Length header must be a whole number of bytes. Let the HTTP client set it.",
                received={"content_length": declared[:40]},
                headers={"Connection": "close"},
            )
        if int(declared) > max_bytes:
            raise _too_large(max_bytes, content_length=int(declared))
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes, bytes_received=size)
                chunks.append(chunk)
    except TimeoutError:
        raise ServiceError(
            408,
            "body_timeout",
            f"The request body did not arrive within {timeout_s:g} s, so the upload was cut off. Send the "
            "whole body at once, with a correct Content-Length.",
            received={"bytes_received": size, "timeout_s": timeout_s},
            headers={"Connection": "close"},
        ) from None
    except ClientDisconnect:
        raise ServiceError(
            400, "bad_request", "The client disconnected before the body was complete.", received={"bytes": size}
        ) from None
    return b"".join(chunks)


async def parse_multipart(body: bytes, headers: Headers, *, max_files: int) -> list[Upload]:
    """Return the `files` parts of a multipart body, in order.

    Args:
        body: the whole request body (already within the cap).
        headers: the request headers (for the boundary).
        max_files: most photos accepted.

    Raises:
        ServiceError: 413 too_many_files beyond `max_files` parts, 400 bad_request for a malformed body,
            422 no_files when no `files` part holds a file.
    """

    async def stream():
        yield body

    parser = MultiPartParser(headers, stream(), max_files=max_files, max_fields=max_files)
    # The body is already in memory and within the cap: keep the parts there too, never in temporary files.
    parser.spool_max_size = len(body) + 1
    try:
        form = await parser.parse()
    except MultiPartException as error:
        if error.message.startswith("Too many"):
            raise ServiceError(
                413,
                "too_many_files",
                f"A request may carry at most {max_files} photos. Send the others in further requests.",
                received={"max_files": max_files},
            ) from None
        raise ServiceError(
            400,
            "bad_request",
            f"The multipart body cannot be read ({error.message}). Let the HTTP client build it, e.g. "
            "curl -F files=@photo.jpg URL.",
            received={"content_type": headers.get("content-type", "")[:100]},
        ) from None
    try:
        files = [item for item in form.getlist(FILES_FIELD) if isinstance(item, UploadFile)]
        uploads = [Upload(clean_name(item.filename, index), await item.read()) for index, item in enumerate(files)]
    finally:
        await form.close()
    if not uploads:
        raise ServiceError(
            422,
            "no_files",
            f"The multipart body has no `{FILES_FIELD}` part holding a file. Send each photo as a part named "
            f"`{FILES_FIELD}` with a file name, e.g. curl -F files=@photo.jpg URL.",
            received={"parts": sorted({str(key)[:40] for key in form.keys()})[:10]},
        )
    return uploads


def clean_name(name: str | None, index: int) -> str:
    """Return a client's file name as a short printable label; it is shown, never used as a path."""
    text = "".join(character for character in str(name or "") if unicodedata.category(character)[0] != "C")
    text = text.strip()[:_MAX_NAME_LENGTH]
    return text or f"file {index + 1}"


def check_image(data: bytes, *, max_pixels: int) -> str:
    """Check a photo's type from its bytes and its pixel count from its header, decoding nothing.

    Args:
        data: the file's bytes.
        max_pixels: largest accepted width x height.

    Returns:
        The format, one of `ALLOWED_TYPES`, or "" for an empty file (which the image path then names).

    Raises:
        ServiceError: 415 unsupported_image_type for a file that is not one of the allowed formats, 413
            too_many_pixels for a header over `max_pixels`.
    """
    if not data:
        return ""
    kind = sniff_type(data)
    if kind is None:
        raise ServiceError(
            415,
            "unsupported_image_type",
            f"The file is not a {', '.join(ALLOWED_TYPES[:-1])} or {ALLOWED_TYPES[-1]} image (decided from its "
            "bytes, not its name or declared type). Convert it to JPEG or PNG and send it again.",
            received={"detected": describe_signature(data)},
        )
    size = _header_size(data, kind, max_pixels)
    if size is not None and size[0] * size[1] > max_pixels:
        raise _too_many_pixels(f"{size[0]}x{size[1]} pixels", max_pixels, width=size[0], height=size[1])
    return kind


def sniff_type(data: bytes) -> str | None:
    """Return the allowed format whose signature `data` starts with, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    return None


def describe_signature(data: bytes) -> str:
    """Name what a refused file looks like (PDF, zip, SVG, text...), for the error's `received`."""
    for signature, name in _OTHER_SIGNATURES:
        if data.startswith(signature):
            return name
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    if head.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    if data[4:8] == b"ftyp":
        return "HEIF/MP4"
    try:
        data[:512].decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unknown"


def _header_size(data, kind, max_pixels):
    """Return (width, height) from the image header, or None when the header cannot be read.

    A header too broken to read is left to the image path, which names the reason (422).
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own pixel limit; the limit here is the service's.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[kind]]) as image:
                return image.size
    except Image.DecompressionBombError:
        # Pillow refuses a header beyond twice its own limit before it gives the size: far over any sane cap.
        raise _too_many_pixels(
            f"over {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels", max_pixels, width=None, height=None
        ) from None
    except Exception:
        return None


def _too_many_pixels(size_text, max_pixels, **received):
    return ServiceError(
        413,
        "too_many_pixels",
        f"The image is {size_text}, more than the {max_pixels} this server decodes (a guard against "
        "decompression bombs). Resize it and send it again.",
        received={**received, "max_pixels": max_pixels},
    )


def _too_large(max_bytes, **received):
    return ServiceError(
        413,
        "body_too_large",
        f"The request body is larger than the {max_bytes // (1024 * 1024)} MB this server accepts. Send smaller "
        "photos or fewer per request.",
        received={**received, "max_bytes": max_bytes},
        headers={"Connection": "close"},
    )
