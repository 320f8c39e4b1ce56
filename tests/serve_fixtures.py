"""Shared pieces of the service tests: one tiny ONNX export per session, photos, and a real `catsdogs serve`.

tests/conftest.py loads it as a plugin (`pytest_plugins`), so its fixtures
(`served_model`, `live_server`) are known to every test module and the
session-scoped export is built once; helpers are imported as usual (`from
serve_fixtures import photo_bytes`). It imports nothing heavy until a fixture
or helper runs, so every test session can load it. The export is the fixed red-minus-green model of
`fake_runs` (32x32 photos: a red square is "dogs", a green one "cats"),
exported once per test session and reused by every module that asks for it.

`running_server` starts a real `catsdogs serve` process on 127.0.0.1 with a
free port, waits for `/readyz`, yields its base URL, and stops it with
SIGTERM; the page's browser test reuses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """A run folder made by `fake_runs.make_run` and its verified ONNX export inside it."""

    run_dir: Path
    export_dir: Path


def build_served_model(root: Path) -> ServedModel:
    """Make (once per `root`) a fake run and its ONNX export; later calls reuse the finished folders."""
    from catsdogs.export import export_run
    from fake_runs import make_data, make_run

    done = root / "done"
    run_dir = root / "runs" / "run-a"
    if not done.is_file():
        data_dir = make_data(root, per_class=3)
        run = make_run(root / "runs", data_dir)
        export_run(run.path)
        done.write_text("ok", encoding="utf-8")
    return ServedModel(run_dir, run_dir / "export" / "onnx")


@pytest.fixture(scope="session")
def served_model(tmp_path_factory) -> ServedModel:
    """The session's fake run and ONNX export (built by the first module that asks; reused by the others)."""
    return build_served_model(tmp_path_factory.getbasetemp() / "served-model")


def photo_bytes(kind: str = "dogs", *, format: str = "JPEG", size: int = 64, seed: int = 0) -> bytes:
    """A photo the fake model labels `kind` ("dogs": a red square, "cats": a green one), in `format`."""
    from fake_runs import colour_square

    red, green = (220, 0) if kind == "dogs" else (0, 220)
    pixels = colour_square(red, green, seed=seed, size=size)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format)
    return buffer.getvalue()


def png_header_bomb(*, width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height pixels of 1-bit grey: a decompression bomb's shape."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    # A few rows of zeros; a real bomb's data compresses this well all the way down.
    rows = zlib.compress(b"\x00" * ((width + 7) // 8 + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def gif_header_bomb(*, width: int = 65535, height: int = 65535) -> bytes:
    """A tiny GIF whose screen and first frame declare width x height pixels: a decompression bomb's shape."""
    buffer = io.BytesIO()
    Image.new("P", (1, 1)).save(buffer, "GIF")
    data = bytearray(buffer.getvalue())
    size = struct.pack("<HH", width, height)
    data[6:10] = size  # the logical screen
    frame = data.index(b"\x2c")  # the image descriptor: separator, left, top, width, height
    data[frame + 5 : frame + 9] = size
    return bytes(data)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass
class RunningServer:
    """A `catsdogs serve` process and where it listens."""

    process: subprocess.Popen
    base_url: str
    port: int
    log_path: Path

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def start_server(
    source: Path,
    log_path: Path,
    *,
    arguments: tuple[str, ...] = (),
    environment: dict[str, str] | None = None,
    port: int | None = None,
) -> RunningServer:
    """Start `catsdogs serve SOURCE --port PORT` in a process of its own, without waiting for it."""
    port = port or free_port()
    command = [sys.executable, "-m", "catsdogs", "serve", str(source), "--port", str(port), *arguments]
    # The server's key comes from `environment` only, never from the shell that runs the tests.
    env = {name: value for name, value in os.environ.items() if name != "CATSDOGS_API_KEY"}
    env.update({"PYTHONUNBUFFERED": "1", **(environment or {})})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return RunningServer(process, f"http://127.0.0.1:{port}", port, log_path)


def wait_until_ready(server: RunningServer, timeout_s: float = READY_TIMEOUT_S) -> list[int]:
    """Poll /readyz until it answers 200; return every status seen (503s while loading, then 200).

    Raises:
        AssertionError: when the process exits or the timeout passes first, with its output.
    """
    import httpx

    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"catsdogs serve exited with {server.process.returncode}:\n{server.log()}")
        try:
            status = httpx.get(f"{server.base_url}/readyz", timeout=2.0).status_code
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        seen.append(status)
        if status == 200:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"catsdogs serve was not ready within {timeout_s} s:\n{server.log()}")


def stop_server(server: RunningServer, timeout_s: float = STOP_TIMEOUT_S) -> int:
    """Send SIGTERM and wait for the process to exit; return its exit status (kill it if it hangs)."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        raise AssertionError(
            f"catsdogs serve did not stop within {timeout_s} s after SIGTERM:\n{server.log()}"
        ) from None


@contextlib.contextmanager
def running_server(source: Path, log_path: Path, **options):
    """Start `catsdogs serve SOURCE` on a free port, wait for /readyz, yield it, and stop it with SIGTERM."""
    server = start_server(source, log_path, **options)
    try:
        wait_until_ready(server)
        yield server
    finally:
        if server.process.poll() is None:
            stop_server(server)


@pytest.fixture(scope="module")
def live_server(served_model, tmp_path_factory):
    """A real `catsdogs serve` of the session's export, for a whole test module: yields its `RunningServer`."""
    log_path = tmp_path_factory.mktemp("live-server") / "serve.log"
    with running_server(served_model.export_dir, log_path, arguments=("--set", "serve.body_timeout_s=2")) as server:
        yield server


@contextlib.contextmanager
def service_client(source: Path, *, api_key: str | None = None, static_dir: Path | None = None, **settings):
    """A FastAPI TestClient of `create_app(source, ...)` whose model is loaded: yields (client, app state).

    `settings` are `ServiceSettings` fields, e.g. `max_files=2`.
    """
    from fastapi.testclient import TestClient

    from catsdogs.service import ServiceSettings, create_app

    app = create_app(
        source,
        settings=ServiceSettings(**settings),
        api_key=api_key,
        static_dir=static_dir,
        progress=lambda line: None,
    )
    with TestClient(app) as client:
        state = app.state.service
        assert state.loaded.wait(READY_TIMEOUT_S), "the model did not load in time"
        assert state.failure is None, state.failure
        yield client, state
