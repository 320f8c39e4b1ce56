"""The shapes of the service's answers, as pydantic models with examples: what /docs and schemathesis read.

The request bodies (multipart `files` or one raw image) are read by hand
within limits (`uploads`), so they are described here as OpenAPI
`requestBody` objects rather than as FastAPI parameters.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from catsdogs.service.uploads import FILES_FIELD

# Values in an error's `received`: what the client sent, or the limit it crossed.
ReceivedValue = str | int | float | bool | list[str] | None

_EXAMPLE_SHA256 = "3f5a0c9e2b7d4e1f8a6c5b4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f"


class ErrorDetail(BaseModel):
    """What went wrong: a machine-usable code, a message saying how to fix it, and the values received."""

    code: str = Field(description="Short machine-usable name of the error, e.g. body_too_large.")
    message: str = Field(description="What happened, what was expected and how to fix it.")
    received: dict[str, ReceivedValue] | None = Field(
        description="The values that were wrong or the limit crossed; null when there is nothing to show."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": "bad_image",
                    "message": "The image cannot be used: truncated (image file is truncated). ...",
                    "received": {"reason": "truncated"},
                }
            ]
        }
    )


class ErrorResponse(BaseModel):
    """Every error the service answers, whatever its status."""

    error: ErrorDetail

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "body_too_large",
                        "message": "The request body is larger than the 10 MB this server accepts. ...",
                        "received": {"content_length": 20971520, "max_bytes": 10485760},
                    }
                }
            ]
        }
    )


class ModelSummary(BaseModel):
    """The model that answered, as every prediction response names it."""

    name: str = Field(description="The run folder's name, or the export folder's.")
    sha256: str = Field(description="SHA-256 of the served model file.")
    format: str = Field(description='The export format, "onnx".')
    precision: str = Field(description='"float32", or the export\'s quantization, e.g. "int8".')


class ModelResponse(ModelSummary):
    """`GET /v1/model`: the served model, its classes, image size and measured accuracy."""

    architecture: str | None = Field(description="The model's registry name, when the run records it.")
    classes: list[str] = Field(description="Class names in label order.")
    image_size: list[int] = Field(description="[height, width] every photo is resized to.")
    test_accuracy: float | None = Field(description="Accuracy on the run's test split; null when not measured.")
    verified: bool = Field(description="Whether the export passed its check against the Keras model.")
    threshold: float = Field(description="For two classes: the second class wins at or above this probability.")
    test_time_augmentation: bool = Field(description="Whether each photo is also predicted mirrored and averaged.")
    max_pixels: int = Field(description="Largest accepted photo, in pixels (width x height).")
    min_side: int = Field(description="Smallest accepted photo side, in pixels.")
    max_files: int = Field(description="Most photos in one request.")
    max_upload_bytes: int = Field(description="Largest accepted request body, in bytes.")
    explain: bool = Field(description="Whether POST /v1/explain can draw Grad-CAM overlays on this server.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "20261127-090000-efficientnet_lite0",
                    "sha256": _EXAMPLE_SHA256,
                    "format": "onnx",
                    "precision": "float32",
                    "architecture": "efficientnet_lite0",
                    "classes": ["cats", "dogs"],
                    "image_size": [288, 288],
                    "test_accuracy": 0.993,
                    "verified": True,
                    "threshold": 0.5,
                    "test_time_augmentation": False,
                    "max_pixels": 50000000,
                    "min_side": 32,
                    "max_files": 16,
                    "max_upload_bytes": 10485760,
                    "explain": True,
                }
            ]
        }
    )


class FilePrediction(BaseModel):
    """The answer for one photo: its label and probabilities, or why it could not be used."""

    file: str = Field(description="The uploaded file's name (a label only), or 'upload' for a raw body.")
    label: str | None = Field(description="The predicted class; null on error.")
    probability: float | None = Field(description="The probability of `label`; null on error.")
    probabilities: dict[str, float] | None = Field(description="Every class's probability; null on error.")
    answer: str | None = Field(
        default=None,
        description='What to tell a user: `label`, or "unsure" when the model is not sure enough (the export\'s '
        "abstain.json); null on error.",
    )
    abstained: bool = Field(default=False, description='Whether `answer` is "unsure" rather than a class.')
    reason: str | None = Field(default=None, description="Why it answered unsure; null when it answered.")
    calibrated_probability: float | None = Field(
        default=None, description="The calibrated probability of `label`; null when the export has no abstain rule."
    )
    error: ErrorDetail | None = Field(description="Why this photo could not be used; null on success.")
    seconds: float = Field(description="Server time for this photo: checks, decoding, queueing and the model.")


class PredictResponse(BaseModel):
    """`POST /v1/predict`: one entry per photo, in the order sent; a bad photo gets an error entry."""

    model: ModelSummary
    predictions: list[FilePrediction]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": {
                        "name": "20261127-090000-efficientnet_lite0",
                        "sha256": _EXAMPLE_SHA256,
                        "format": "onnx",
                        "precision": "float32",
                    },
                    "predictions": [
                        {
                            "file": "cat.1.jpg",
                            "label": "cats",
                            "probability": 0.998,
                            "probabilities": {"cats": 0.998, "dogs": 0.002},
                            "answer": "cats",
                            "abstained": False,
                            "reason": None,
                            "calibrated_probability": 0.996,
                            "error": None,
                            "seconds": 0.021,
                        },
                        {
                            "file": "broken.jpg",
                            "label": None,
                            "probability": None,
                            "probabilities": None,
                            "error": {
                                "code": "bad_image",
                                "message": "The image cannot be used: truncated (...). ...",
                                "received": {"reason": "truncated"},
                            },
                            "seconds": 0.002,
                        },
                    ],
                }
            ]
        }
    )


class HealthResponse(BaseModel):
    """`GET /healthz`: the process is alive."""

    status: str = Field(description='Always "ok".', examples=["ok"])


class ReadyResponse(BaseModel):
    """`GET /readyz`: the model is loaded and warm, so requests will be answered."""

    status: str = Field(description='"ready".', examples=["ready"])
    model: str = Field(description="The served model's name.")
    sha256: str = Field(description="SHA-256 of the served model file.")


_BINARY = {"type": "string", "format": "binary"}
RAW_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "application/octet-stream")


def image_request_body(*, max_files: int, many: bool) -> dict[str, Any]:
    """The OpenAPI `requestBody` of an endpoint that takes photos: multipart `files`, or one raw image.

    Args:
        max_files: most photos in one request.
        many: whether several `files` parts are accepted (predict) or one (explain).
    """
    files = (
        {"type": "array", "items": _BINARY, "minItems": 1, "maxItems": max_files, "description": "The photos."}
        if many
        else {"type": "array", "items": _BINARY, "minItems": 1, "maxItems": 1, "description": "One photo."}
    )
    multipart = {
        "schema": {"type": "object", "properties": {FILES_FIELD: files}, "required": [FILES_FIELD]},
        "encoding": {FILES_FIELD: {"contentType": ", ".join(RAW_IMAGE_TYPES[:-1])}},
    }
    return {
        "requestBody": {
            "required": True,
            "description": (
                f"Multipart form data with {'1 to ' + str(max_files) + ' parts' if many else 'one part'} named "
                f"`{FILES_FIELD}`, or one photo as the raw body. The type is decided from the bytes: JPEG, PNG, "
                "WebP, GIF or BMP."
            ),
            "content": {"multipart/form-data": multipart, **{kind: {"schema": _BINARY} for kind in RAW_IMAGE_TYPES}},
        }
    }


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries in the one error shape, for the given statuses."""
    descriptions = {
        400: "Malformed request (Content-Length, multipart body).",
        401: "Missing or wrong API key (`Authorization: Bearer <key>`).",
        404: "Nothing at this path.",
        408: "The request body did not arrive in time.",
        413: "Body, file count or pixel count over the limit.",
        415: "Not multipart or an image body, or not a JPEG, PNG, WebP, GIF or BMP file.",
        422: "Photo undecodable, truncated, empty or too small; or no `files` part.",
        500: "Unexpected server error (logged; the server keeps running).",
        501: "Grad-CAM is not available on this server.",
        503: "Not ready yet, or overloaded: try again after Retry-After seconds.",
    }
    return {status: {"model": ErrorResponse, "description": descriptions[status]} for status in statuses}
