"""One error shape for every failure the service answers: `{"error": {"code", "message", "received"}}`.

`ServiceError` carries an HTTP status, a short machine-usable `code`, a
message that says what happened, what was expected and how to fix it (as
every catsdogs error does) and `received`, the values that were wrong. The
handlers installed by `install_error_handlers` turn it, FastAPI's validation
errors, Starlette's 404 and 405, and any unexpected exception into that shape,
so a client reads one format whatever went wrong.
"""

from __future__ import annotations

import logging
import typing

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

if typing.TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger("catsdogs.service")

# Seconds a client is asked to wait before trying again after a 503.
RETRY_AFTER_SECONDS = 1
# Which rejection (the `catsdogs_rejections_total` reason) each refused-input code counts as.
REJECTION_REASONS = {
    "body_too_large": "too_large",
    "too_many_files": "too_large",
    "too_many_pixels": "too_large",
    "bad_image": "bad_image",
    "unsupported_image_type": "unsupported_type",
    "unsupported_media_type": "unsupported_type",
    "overloaded": "overloaded",
    "unauthorized": "unauthorized",
    "body_timeout": "timeout",
    "bad_request": "bad_request",
    "no_files": "bad_request",
    "validation_error": "bad_request",
}


class ServiceError(Exception):
    """A failure the service answers in the one error shape.

    Args:
        status: the HTTP status code, e.g. 413.
        code: a short machine-usable name, e.g. "body_too_large".
        message: what happened, what was expected and how to fix it.
        received: the values that were wrong, e.g. {"content_length": 20971520}.
        headers: extra response headers, e.g. Retry-After for a 503.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        received: Mapping[str, typing.Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.received = dict(received) if received else None
        self.headers = dict(headers) if headers else {}
        # Set once the rejection metric has counted this error, so an error shown twice is counted once.
        self.counted = False

    def detail(self) -> dict:
        """The inner `{code, message, received}` object."""
        return {"code": self.code, "message": self.message, "received": self.received}

    def response(self) -> JSONResponse:
        """The JSON response in the one error shape, with this error's status and headers."""
        return error_response(self.status, self.code, self.message, received=self.received, headers=self.headers)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    received: Mapping[str, typing.Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Return `{"error": {"code", "message", "received"}}` with `status`.

    Args:
        status: the HTTP status code.
        code: the short machine-usable name.
        message: what happened, what was expected and how to fix it.
        received: the values that were wrong.
        headers: extra response headers.
    """
    body = {"error": {"code": code, "message": message, "received": dict(received) if received else None}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def overloaded(message: str, **received: typing.Any) -> ServiceError:
    """A 503 `overloaded` error with Retry-After: the server sheds load rather than queue without limit."""
    return ServiceError(
        503,
        "overloaded",
        f"{message} Try again in {RETRY_AFTER_SECONDS} s, or add server instances behind a load balancer.",
        received=received,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def install_error_handlers(app: FastAPI, *, count_rejection: typing.Callable[[str], None]) -> None:
    """Answer every error in the one shape: ServiceError, validation errors, 404/405 and other HTTP errors.

    Unexpected exceptions are caught by the service middleware (`middleware.ServiceMiddleware`), which
    answers 500 `internal_error` and keeps the server running.

    Args:
        app: the FastAPI application.
        count_rejection: called with a `REJECTION_REASONS` value for every refused request.
    """

    async def service_error(request: Request, error: ServiceError) -> JSONResponse:
        if not error.counted and error.code in REJECTION_REASONS:
            count_rejection(REJECTION_REASONS[error.code])
            error.counted = True
        return error.response()

    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        count_rejection(REJECTION_REASONS["validation_error"])
        problems = [
            f"{'.'.join(str(part) for part in problem.get('loc', ()))}: {problem.get('msg', '')}"
            for problem in error.errors()
        ]
        return error_response(
            422,
            "validation_error",
            "The request does not match the API's schema; see /docs for what each endpoint takes. "
            f"Problems: {'; '.join(problems)[:500]}",
            received={"problems": len(problems)},
        )

    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        headers = dict(error.headers or {})
        if error.status_code == 404:
            return error_response(
                404,
                "not_found",
                "There is nothing at this path. The API is under /v1 (see /docs); the page is at /.",
                received={"method": request.method, "path": request.url.path[:200]},
                headers=headers,
            )
        if error.status_code == 405:
            return error_response(
                405,
                "method_not_allowed",
                "This path does not take this method; see /docs for the methods each path takes.",
                received={"method": request.method, "path": request.url.path[:200]},
                headers=headers,
            )
        return error_response(
            error.status_code,
            "http_error",
            f"The request failed: {error.detail}.",
            received={"method": request.method, "path": request.url.path[:200]},
            headers=headers,
        )

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
