"""`serve`: run the service in uvicorn, in this process, until SIGTERM or Ctrl+C; then drain and exit 0.

On SIGTERM uvicorn stops accepting connections and lets the requests in
flight finish, for at most `drain_timeout_s`; the lifespan then stops the
model workers and `serve` returns 0. uvicorn re-raises the signal once it has
shut down (so a default handler would end the process with -15); `serve`
installs a quiet handler first, so a drained server exits with status 0. A
model that cannot be loaded (missing, incomplete or tampered) stops the server
with its message and status 2.

Clients that stall are cut off: a connection gets `header_timeout_s` to send
each request's headers (uvicorn's h11 protocol has no such deadline of its
own, so `HeaderDeadlineProtocol` adds one), the body must arrive within
`body_timeout_s` (the app's own limit), and idle kept-alive connections close
after `keep_alive_timeout_s`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Callable

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from catsdogs.service.app import API_KEY_VARIABLE, create_app
from catsdogs.service.settings import ServiceSettings

EXIT_OK = 0
EXIT_MODEL_FAILED = 2


def serve(
    source: str | os.PathLike,
    *,
    host: str,
    port: int,
    settings: ServiceSettings,
    api_key: str | None = None,
    header_timeout_s: float = 10.0,
    keep_alive_timeout_s: int = 5,
    drain_timeout_s: float = 10.0,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Serve RUN_OR_EXPORT on host:port until SIGTERM or Ctrl+C.

    Args:
        source: a run folder or an export folder.
        host: the address to listen on.
        port: the port to listen on (0: a free one).
        settings: the service's limits and tuning.
        api_key: when set, /v1/ requests need `Authorization: Bearer <api_key>`.
        header_timeout_s: seconds a connection has to send each request's headers.
        keep_alive_timeout_s: seconds an idle kept-alive connection stays open.
        drain_timeout_s: seconds the requests in flight get to finish after SIGTERM.
        progress: called with lines for the operator; default: printed to stderr.

    Returns:
        0 after a clean shutdown; 2 when the model could not be loaded.
    """
    progress = progress or _print
    if not api_key and not is_loopback(host):
        progress(
            f"Warning: listening on {host} without an API key: anyone who can reach port {port} can use the API. "
            f"Set {API_KEY_VARIABLE} to require `Authorization: Bearer <key>`."
        )
    failure: list[str] = []
    server: uvicorn.Server | None = None

    def on_load_failure(message: str) -> None:
        failure.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(source, settings=settings, api_key=api_key, progress=progress, on_load_failure=on_load_failure)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=header_deadline_protocol(header_timeout_s),
        lifespan="on",
        timeout_keep_alive=keep_alive_timeout_s,
        timeout_graceful_shutdown=drain_timeout_s,
        log_level="info",
        access_log=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    progress(f"Serving {source} on http://{_url_host(host)}:{port} (the model loads now; /readyz says when)")
    previous = {number: signal.signal(number, _note_signal) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if failure:
        progress(f"Stopped: the model could not be loaded: {failure[0]}")
        return EXIT_MODEL_FAILED
    return EXIT_OK


def is_loopback(host: str) -> bool:
    """Whether `host` answers this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def header_deadline_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for each request's headers, from connection or last response."""

    class HeaderDeadlineProtocol(H11Protocol):
        _deadline = None
        _timed_cycle = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._note_request_started()

        def on_response_complete(self) -> None:
            # Armed before the next request is parsed, which the parent may do at once for pipelined data.
            self._arm()
            super().on_response_complete()
            self._note_request_started()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self):
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout_s, self._headers_too_late)

        def _disarm(self):
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _note_request_started(self):
            if self.cycle is not None and self.cycle is not self._timed_cycle:
                self._timed_cycle = self.cycle
                self._disarm()

        def _headers_too_late(self):
            self._deadline = None
            if not self.transport.is_closing():
                logging.getLogger("catsdogs.service").info("Closed a connection that sent no complete headers")
                self.transport.close()

    return HeaderDeadlineProtocol


def _note_signal(number, frame):
    # uvicorn re-raises SIGTERM and SIGINT after its graceful shutdown; here that is the end of a normal run.
    return None


def _url_host(host):
    return f"[{host}]" if ":" in host else host


def _print(line: str) -> None:
    print(f"catsdogs serve: {line}", file=sys.stderr, flush=True)
