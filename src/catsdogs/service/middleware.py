"""The service's one ASGI middleware: metrics, the in-flight limit, security headers and the last-resort 500.

It wraps every HTTP request. It counts requests by route template, method and
status and times them; it refuses API requests beyond `max_in_flight` at once
with 503 before their body is read; it gives every response
`X-Content-Type-Options: nosniff` and every HTML response a strict
Content-Security-Policy (unless the route set its own); and an exception that
nothing else handled becomes a 500 in the one error shape, logged, while the
server keeps running.
"""

from __future__ import annotations

import logging
import time
import typing

from catsdogs.service.errors import REJECTION_REASONS, error_response, overloaded
from catsdogs.service.metrics import ServiceMetrics

if typing.TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("catsdogs.service")

API_PREFIX = "/v1/"
# The page's policy: nothing from other origins, no inline script; previews are blob: or data: images.
PAGE_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'self'; "
    "frame-ancestors 'none'; form-action 'self'"
)


class ServiceMiddleware:
    """Count, time, bound and protect every HTTP request.

    Args:
        app: the application inside.
        metrics: where requests, latency and in-flight counts go.
        max_in_flight: most API requests (paths under /v1/) handled at once.
    """

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, max_in_flight: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.api_in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500, "sent": False}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
                message = {**message, "headers": _secured(message.get("headers", []))}
            await send(message)

        is_api = scope.get("path", "").startswith(API_PREFIX)
        self.metrics.in_flight.inc()
        try:
            if is_api and self.api_in_flight >= self.max_in_flight:
                error = overloaded(
                    f"The server is busy: {self.max_in_flight} requests are already being handled.",
                    max_in_flight=self.max_in_flight,
                )
                self.metrics.count_rejection(REJECTION_REASONS[error.code])
                await error.response()(scope, receive, send_with_headers)
                return
            if is_api:
                self.api_in_flight += 1
            try:
                await self.app(scope, receive, send_with_headers)
            finally:
                if is_api:
                    self.api_in_flight -= 1
        except Exception:
            logger.exception("Unexpected error while answering %s %s", scope.get("method"), scope.get("path"))
            if not status["sent"]:
                response = error_response(
                    500,
                    "internal_error",
                    "The server failed on this request; it is logged and the server keeps running. Try again, "
                    "and report it if it happens again.",
                    received={"method": scope.get("method"), "path": str(scope.get("path", ""))[:200]},
                )
                await response(scope, receive, send_with_headers)
        finally:
            self.metrics.in_flight.dec()
            route = _route_template(scope)
            self.metrics.requests.labels(route=route, method=scope.get("method", ""), status=str(status["code"])).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)


def _secured(headers):
    headers = list(headers)
    names = {name.lower() for name, _ in headers}
    if b"x-content-type-options" not in names:
        headers.append((b"x-content-type-options", b"nosniff"))
    content_type = next((value for name, value in headers if name.lower() == b"content-type"), b"")
    if content_type.startswith(b"text/html") and b"content-security-policy" not in names:
        headers.append((b"content-security-policy", PAGE_CONTENT_SECURITY_POLICY.encode()))
        headers.append((b"referrer-policy", b"no-referrer"))
    return headers


def _route_template(scope):
    """The matched route's template (e.g. /v1/predict), so that metrics never carry a client's arbitrary path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return "unmatched"
