"""A real `catsdogs serve` process on 127.0.0.1: ready after loading, predicts over HTTP, drains on SIGTERM
and exits 0, refuses a tampered model with a clear message and a non-zero exit, and warns without a key."""

import json
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from catsdogs.cli import build_parser
from catsdogs.cli import serve as serve_command
from catsdogs.errors import CatsdogsError
from catsdogs.service import create_app
from catsdogs.service.model import resolve_source
from serve_fixtures import photo_bytes, running_server, start_server, stop_server, wait_until_ready


def test_serve_arguments_become_config_overrides(monkeypatch, served_model):
    seen = {}

    def fake_serve(source, **keywords):
        seen.update(keywords, source=source)
        return 0

    monkeypatch.setattr("catsdogs.service.server.serve", fake_serve)
    monkeypatch.setenv("CATSDOGS_API_KEY", "k")
    arguments = build_parser().parse_args(
        ["serve", "EXPORT", "--port", "9001", "--host", "0.0.0.0", "--cors-origin", "https://a.example"]
        + ["--set", "serve.max_files=3", "--set", "serve.port=1"]
    )
    assert serve_command.run(arguments) == 0
    assert (seen["source"], seen["host"], seen["port"], seen["api_key"]) == ("EXPORT", "0.0.0.0", 9001, "k")
    assert seen["settings"].max_files == 3 and seen["settings"].cors_origin == "https://a.example"
    assert seen["drain_timeout_s"] == 10.0


def test_the_server_is_ready_after_loading_and_predicts_over_http(served_model, tmp_path):
    server = start_server(served_model.export_dir, tmp_path / "serve.log")
    try:
        statuses = wait_until_ready(server)
        # Until the model is warm /readyz says 503, never anything else; then 200.
        assert statuses[-1] == 200 and set(statuses[:-1]) <= {503}
        assert httpx.get(f"{server.base_url}/healthz").json() == {"status": "ok"}
        response = httpx.post(
            f"{server.base_url}/v1/predict",
            files=[
                ("files", ("dog.jpg", photo_bytes("dogs"), "image/jpeg")),
                ("files", ("cat.png", photo_bytes("cats", format="PNG"), "image/png")),
            ],
        )
        assert response.status_code == 200
        assert [row["label"] for row in response.json()["predictions"]] == ["dogs", "cats"]
        page = httpx.get(f"{server.base_url}/")
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
    finally:
        assert stop_server(server) == 0
    log = server.log()
    assert "Ready: onnx" in log or "Ready: run-a" in log
    assert log.index("Serving") < log.index("Ready")


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(served_model, tmp_path):
    # A long batch wait keeps the request in flight while the signal arrives.
    arguments = ("--set", "serve.batch_wait_ms=1000", "--set", "serve.max_batch_size=4")
    server = start_server(served_model.export_dir, tmp_path / "serve.log", arguments=arguments)
    wait_until_ready(server)
    answers = []

    def predict():
        answers.append(
            httpx.post(
                f"{server.base_url}/v1/predict",
                content=photo_bytes("cats"),
                headers={"content-type": "image/jpeg"},
                timeout=30,
            )
        )

    request = threading.Thread(target=predict)
    request.start()
    deadline = time.monotonic() + 10
    # In flight: the request waiting for its batch, and this /metrics request itself.
    while in_flight(server) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not answers, "the request should still be waiting for its batch"
    server.process.send_signal(signal.SIGTERM)
    request.join(30)
    assert server.process.wait(30) == 0, server.log()
    assert answers and answers[0].status_code == 200 and answers[0].json()["predictions"][0]["label"] == "cats"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.base_url}/healthz", timeout=2)


def in_flight(server):
    text = httpx.get(f"{server.base_url}/metrics", timeout=5).text
    line = next(line for line in text.splitlines() if line.startswith("catsdogs_requests_in_flight "))
    return float(line.split()[1])


def test_a_tampered_model_stops_the_server_with_a_clear_message(served_model, tmp_path):
    export = shutil.copytree(served_model.export_dir, tmp_path / "onnx")
    model = export / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    server = start_server(export, tmp_path / "serve.log")
    try:
        status = server.process.wait(60)
    finally:
        if server.process.poll() is None:
            server.process.kill()
    assert status == 2
    assert "does not match its SHA-256" in server.log() and "Stopped: the model could not be loaded" in server.log()


def test_a_public_address_without_a_key_warns_and_a_key_guards_the_api(served_model, tmp_path):
    with running_server(served_model.export_dir, tmp_path / "open.log", arguments=("--host", "0.0.0.0")) as server:
        assert "without an API key" in server.log()
    keyed = {"CATSDOGS_API_KEY": "s3cret"}
    with running_server(served_model.export_dir, tmp_path / "keyed.log", environment=keyed) as server:
        assert "without an API key" not in server.log()
        assert httpx.get(f"{server.base_url}/v1/model").status_code == 401
        answer = httpx.get(f"{server.base_url}/v1/model", headers={"Authorization": "Bearer s3cret"})
        assert answer.status_code == 200 and answer.json()["classes"] == ["cats", "dogs"]


def test_serve_without_the_serve_extra_says_what_to_install(served_model):
    code = (
        "import sys\n"
        "for name in ('fastapi', 'uvicorn', 'starlette', 'prometheus_client'):\n"
        "    sys.modules[name] = None\n"
        "from catsdogs.cli import main\n"
        f"sys.exit(main(['serve', {str(served_model.export_dir)!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stderr
    assert "pip install 'catsdogs[serve]'" in result.stderr


# ----------------------------------------------------------------------------- start-up: which export, and readiness


def run_copy(served_model, tmp_path, *, with_export=True):
    """A copy of the fake run folder (with or without its export), for tests that change it."""
    ignore = None if with_export else shutil.ignore_patterns("export")
    return shutil.copytree(served_model.run_dir, tmp_path / "run-a", ignore=ignore)


def test_readyz_is_503_while_a_missing_export_is_made_then_200(served_model, tmp_path):
    from catsdogs.export import export_run

    run = run_copy(served_model, tmp_path, with_export=False)
    release, calls = threading.Event(), []

    def make_export(run_dir, precision):
        calls.append((run_dir, precision))
        assert release.wait(30)
        export_run(run_dir)

    app = create_app(run, make_export=make_export, progress=lambda line: None)
    with TestClient(app) as client:
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.json()["error"]["code"] == "not_ready"
        assert not_ready.headers["retry-after"] == "1"
        assert client.get("/healthz").status_code == 200
        assert (
            client.post("/v1/predict", content=photo_bytes(), headers={"content-type": "image/jpeg"}).status_code == 503
        )
        release.set()
        assert app.state.service.loaded.wait(60) and app.state.service.failure is None
        assert client.get("/readyz").status_code == 200
    assert calls == [(run, "float32")] and (run / "export" / "onnx" / "model.onnx").is_file()


def test_a_current_verified_export_is_served_as_it_is_and_a_stale_one_is_made_again(served_model, tmp_path):
    run = run_copy(served_model, tmp_path)
    record_path = run / "export" / "onnx" / "export.json"
    record = json.loads(record_path.read_text())
    calls = []

    def make_export(run_dir, precision):
        calls.append(precision)
        record_path.write_text(json.dumps(record))

    assert resolve_source(run, make_export=make_export).export_dir == run / "export" / "onnx"
    assert calls == []
    for change in ({"source_model": {"sha256": "0" * 64}}, {"verified": False}):
        record_path.write_text(json.dumps({**record, **change}))
        assert resolve_source(run, make_export=make_export, progress=lambda line: None).run_dir == run
    assert calls == ["float32", "float32"]
    with pytest.raises(CatsdogsError, match="still cannot be served"):
        resolve_source(run, precision="int8", make_export=lambda *arguments: None, progress=lambda line: None)
    with pytest.raises(CatsdogsError, match="neither"):
        resolve_source(tmp_path / "nothing")


def test_a_tampered_export_is_reported_and_the_server_stays_unready(served_model, tmp_path):
    export = shutil.copytree(served_model.export_dir, tmp_path / "onnx")
    (export / "model.onnx").write_bytes((export / "model.onnx").read_bytes()[:-10])
    failures = []
    app = create_app(export, on_load_failure=failures.append, progress=lambda line: None)
    with TestClient(app) as client:
        assert app.state.service.loaded.wait(60)
        error = client.get("/readyz").json()["error"]
        assert error["code"] == "not_ready" and "SHA-256" in error["message"]
        assert client.get("/healthz").status_code == 200
    assert len(failures) == 1 and "does not match its SHA-256" in failures[0]


@pytest.mark.slow
def test_serving_a_run_without_an_export_makes_it_in_a_child_process(served_model, tmp_path):
    run = run_copy(served_model, tmp_path, with_export=False)
    with running_server(run, tmp_path / "serve.log") as server:
        response = httpx.post(
            f"{server.base_url}/v1/predict", content=photo_bytes("dogs"), headers={"content-type": "image/jpeg"}
        )
        assert response.json()["predictions"][0]["label"] == "dogs"
        assert "exporting it now" in server.log()
    assert (run / "export" / "onnx" / "export.json").is_file()
