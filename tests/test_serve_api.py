"""The service through FastAPI's TestClient: every endpoint, limit and error code, the one error shape,
metrics, keys, CORS, the page's headers, raw and multipart bodies, and the micro-batcher batching and shedding."""

import concurrent.futures
import hashlib
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from catsdogs.service.errors import install_error_handlers
from serve_fixtures import photo_bytes, png_header_bomb, service_client

MAX_FILES = 4
JPEG = "image/jpeg"


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory):
    """A page folder of the test's own, so these tests do not depend on the real page's files."""
    folder = tmp_path_factory.mktemp("static")
    (folder / "index.html").write_text("<!doctype html><title>test page</title><script src='static/page.js'></script>")
    (folder / "page.js").write_text("console.log('page');")
    return folder


@pytest.fixture(scope="module")
def api(served_model, static_dir):
    """(client, state) of a service of the fake run folder, with small limits; shared by the module."""
    with service_client(served_model.run_dir, static_dir=static_dir, max_files=MAX_FILES, max_upload_mb=1) as pair:
        yield pair


@pytest.fixture(scope="module")
def client(api):
    return api[0]


def metric(client, name, **labels):
    """The value of one sample in /metrics (0 when absent)."""
    text = client.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(name) and all(f'{key}="{value}"' in line for key, value in labels.items()):
            if line.split("{")[0].split(" ")[0] == name:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "received"}
    assert body["error"]["code"] == code
    assert len(body["error"]["message"]) > 20
    return body["error"]


def files(*photos):
    return [("files", (name, data, JPEG)) for name, data in photos]


# ----------------------------------------------------------------------------- endpoints


def test_healthz_and_readyz_answer_with_the_model(client, api):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["sha256"] == api[1].info.sha256


def test_model_describes_the_served_export(client, served_model):
    model = client.get("/v1/model").json()
    expected_sha256 = hashlib.sha256((served_model.export_dir / "model.onnx").read_bytes()).hexdigest()
    assert model["sha256"] == expected_sha256
    assert (model["name"], model["format"], model["precision"]) == ("run-a", "onnx", "float32")
    assert model["classes"] == ["cats", "dogs"] and model["image_size"] == [32, 32]
    assert model["architecture"] == "tiny_cnn" and model["verified"] is True
    assert 0.0 <= model["test_accuracy"] <= 1.0
    assert model["max_files"] == MAX_FILES and model["max_upload_bytes"] == 1024 * 1024
    assert model["explain"] is True


def test_predict_labels_several_photos_in_order(client):
    response = client.post(
        "/v1/predict", files=files(("dog.jpg", photo_bytes("dogs")), ("cat.jpg", photo_bytes("cats")))
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model"]["name"] == "run-a" and body["model"]["format"] == "onnx"
    assert [(row["file"], row["label"], row["error"]) for row in body["predictions"]] == [
        ("dog.jpg", "dogs", None),
        ("cat.jpg", "cats", None),
    ]
    for row in body["predictions"]:
        assert sum(row["probabilities"].values()) == pytest.approx(1.0)
        assert row["probability"] == row["probabilities"][row["label"]] > 0.5
        assert row["seconds"] >= 0


@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg", "application/octet-stream"])
def test_predict_takes_one_raw_image_body_whatever_image_type_it_declares(client, content_type):
    response = client.post(
        "/v1/predict", content=photo_bytes("cats", format="PNG"), headers={"content-type": content_type}
    )
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "cats"


def test_one_bad_file_gets_an_error_entry_and_the_others_are_answered(client):
    truncated = photo_bytes("dogs")[:200]
    response = client.post(
        "/v1/predict",
        files=files(("a.jpg", photo_bytes("dogs")), ("broken.jpg", truncated), ("c.jpg", photo_bytes("cats"))),
    )
    assert response.status_code == 200
    rows = response.json()["predictions"]
    assert [row["label"] for row in rows] == ["dogs", None, "cats"]
    assert rows[1]["error"]["code"] == "bad_image" and rows[1]["error"]["received"] == {"reason": "truncated"}
    assert rows[1]["probabilities"] is None


def test_when_every_file_is_bad_the_request_fails_with_the_first_ones_status(client):
    error = assert_error(
        client.post("/v1/predict", files=files(("x.jpg", b"not a photo"))), 415, "unsupported_image_type"
    )
    assert error["received"] == {"detected": "text"}
    error = assert_error(
        client.post("/v1/predict", files=files(("a.jpg", photo_bytes()[:100]), ("b.jpg", photo_bytes()[:100]))),
        422,
        "bad_image",
    )
    assert "a.jpg" in error["message"] and "b.jpg" in error["message"]


def test_explain_answers_a_png_overlay_for_a_run_folder(client):
    response = client.post("/v1/explain", content=photo_bytes("dogs", size=80), headers={"content-type": JPEG})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png" and response.content.startswith(b"\x89PNG")
    assert response.headers["x-catsdogs-label"] == "dogs"
    assert_error(
        client.post("/v1/explain", files=files(("a.jpg", photo_bytes()), ("b.jpg", photo_bytes()))),
        413,
        "too_many_files",
    )


def test_explain_is_unavailable_for_an_export_without_its_run(served_model, tmp_path):
    export_copy = shutil.copytree(served_model.export_dir, tmp_path / "onnx")
    with service_client(export_copy) as (client, _):
        assert client.get("/v1/model").json()["explain"] is False
        response = client.post("/v1/explain", content=photo_bytes(), headers={"content-type": JPEG})
        assert_error(response, 501, "explain_unavailable")
        # Prediction from the export alone works as ever.
        assert client.post("/v1/predict", content=photo_bytes(), headers={"content-type": JPEG}).status_code == 200


# ----------------------------------------------------------------------------- limits and error codes


def test_too_many_files_is_413(client):
    many = files(*[(f"{index}.jpg", photo_bytes(seed=index)) for index in range(MAX_FILES + 1)])
    assert_error(client.post("/v1/predict", files=many), 413, "too_many_files")


def test_a_body_over_the_cap_is_413_before_it_is_read(client):
    response = client.post(
        "/v1/predict", content=b"\xff\xd8\xff" + b"0" * (1024 * 1024), headers={"content-type": JPEG}
    )
    error = assert_error(response, 413, "body_too_large")
    assert error["received"]["content_length"] == 1024 * 1024 + 3


def test_a_header_with_too_many_pixels_is_413_before_decoding(client, served_model):
    bomb = png_header_bomb(width=8000, height=8000)
    error = assert_error(
        client.post("/v1/predict", content=bomb, headers={"content-type": "image/png"}), 413, "too_many_pixels"
    )
    assert error["received"]["width"] == 8000


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", None])
def test_a_wrong_request_content_type_is_415(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    assert_error(client.post("/v1/predict", content=photo_bytes(), headers=headers), 415, "unsupported_media_type")


def test_multipart_without_files_is_422_and_without_a_boundary_400(client):
    assert_error(client.post("/v1/predict", data={"photo": "x"}, files={"other": ("a.jpg", b"x")}), 422, "no_files")
    headers = {"content-type": "multipart/form-data"}
    assert_error(client.post("/v1/predict", content=b"--x\r\n", headers=headers), 400, "bad_request")


def test_unknown_paths_and_methods_use_the_error_shape(client):
    assert_error(client.get("/v2/nothing"), 404, "not_found")
    assert_error(client.get("/v1/predict"), 405, "method_not_allowed")
    assert_error(client.get("/static/missing.js"), 404, "not_found")


def test_fastapi_validation_errors_use_the_error_shape():
    app = FastAPI()
    install_error_handlers(app, count_rejection=lambda reason: None)

    @app.get("/count")
    def count(number: int) -> dict:
        return {"number": number}

    assert_error(TestClient(app).get("/count", params={"number": "many"}), 422, "validation_error")


def test_an_unexpected_error_is_a_500_in_the_shape_and_the_server_stays_up(client, api, monkeypatch):
    async def broken(upload):
        raise RuntimeError("a bug")

    monkeypatch.setattr(api[1], "predict_upload", broken)
    assert_error(
        client.post("/v1/predict", content=photo_bytes(), headers={"content-type": JPEG}), 500, "internal_error"
    )
    monkeypatch.undo()
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/predict", content=photo_bytes(), headers={"content-type": JPEG}).status_code == 200


# ----------------------------------------------------------------------------- metrics, keys, CORS, page


def test_metrics_are_named_and_count(client):
    names = (
        "catsdogs_requests_total",
        "catsdogs_request_duration_seconds_bucket",
        "catsdogs_requests_in_flight",
        "catsdogs_queue_depth",
        "catsdogs_batch_size_bucket",
        "catsdogs_inference_seconds_bucket",
    )
    text = client.get("/metrics").text
    assert all(re.search(rf"^{name}[ {{]", text, re.MULTILINE) for name in names), text[:2000]
    dogs, refused = (
        metric(client, "catsdogs_predictions_total", label="dogs"),
        metric(client, "catsdogs_rejections_total", reason="unsupported_type"),
    )
    requests = metric(client, "catsdogs_requests_total", route="/v1/predict", status="200")
    client.post("/v1/predict", files=files(("dog.jpg", photo_bytes("dogs")), ("pdf.jpg", b"%PDF-1.4 ...")))
    assert metric(client, "catsdogs_predictions_total", label="dogs") == dogs + 1
    assert metric(client, "catsdogs_rejections_total", reason="unsupported_type") == refused + 1
    assert metric(client, "catsdogs_requests_total", route="/v1/predict", status="200") == requests + 1


def test_a_key_guards_the_api_but_not_health_or_the_page(served_model, static_dir):
    with service_client(served_model.export_dir, api_key="s3cret", static_dir=static_dir) as (client, _):
        error = assert_error(client.get("/v1/model"), 401, "unauthorized")
        assert error["received"] == {"authorization": "missing"}
        assert client.get("/v1/model").headers["www-authenticate"] == "Bearer"
        assert_error(client.get("/v1/model", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
        assert_error(
            client.post("/v1/predict", content=photo_bytes(), headers={"content-type": JPEG}), 401, "unauthorized"
        )
        assert client.get("/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        for path in ("/healthz", "/readyz", "/", "/static/page.js"):
            assert client.get(path).status_code == 200, path
        assert metric(client, "catsdogs_rejections_total", reason="unauthorized") == 4


def test_cors_is_off_by_default_and_allows_one_origin_when_set(client, served_model):
    preflight = {"Origin": "https://photos.example.com", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.get("/v1/model", headers={"Origin": "https://x.example"}).headers
    assert client.options("/v1/predict", headers=preflight).status_code == 405
    with service_client(served_model.export_dir, cors_origin="https://photos.example.com") as (cors_client, _):
        response = cors_client.options("/v1/predict", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://photos.example.com"
        answer = cors_client.get("/v1/model", headers={"Origin": "https://photos.example.com"})
        assert answer.headers["access-control-allow-origin"] == "https://photos.example.com"
        other = cors_client.get("/v1/model", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_the_page_and_docs_carry_a_strict_content_security_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and "test page" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "img-src 'self' blob: data:" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/page.js").headers["x-content-type-options"] == "nosniff"
    docs = client.get("/docs")
    policy = docs.headers["content-security-policy"]
    assert policy.startswith("default-src 'self'") and "'sha256-" in policy and "unsafe-inline" not in policy
    schema = client.get("/openapi.json").json()
    content = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/jpeg", "image/png"} <= set(content)


# ----------------------------------------------------------------------------- micro-batching and overload


def test_concurrent_requests_share_model_calls(served_model):
    with service_client(served_model.export_dir, batch_wait_ms=400, max_batch_size=8) as (client, _):

        def post(seed):
            return client.post("/v1/predict", content=photo_bytes(seed=seed), headers={"content-type": JPEG})

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(post, range(8)))
        assert all(response.status_code == 200 for response in responses)
        calls = metric(client, "catsdogs_batch_size_count")
        photos = metric(client, "catsdogs_batch_size_sum")
        # The warm-up is not counted; 8 photos in fewer calls than photos means batches larger than one.
        assert photos == 8 and calls < 8
        assert metric(client, "catsdogs_batch_size_bucket", le="1.0") < calls


def test_a_full_queue_answers_503_with_retry_after(served_model):
    with service_client(served_model.export_dir, queue_size=1, batch_wait_ms=1000, max_batch_size=2) as (client, _):
        first = threading.Thread(
            target=client.post,
            args=("/v1/predict",),
            kwargs={"content": photo_bytes(), "headers": {"content-type": JPEG}},
        )
        first.start()
        deadline = time.monotonic() + 10
        while metric(client, "catsdogs_queue_depth") < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        response = client.post("/v1/predict", content=photo_bytes(), headers={"content-type": JPEG})
        first.join()
        assert_error(response, 503, "overloaded")
        assert response.headers["retry-after"] == "1"
        assert metric(client, "catsdogs_rejections_total", reason="overloaded") == 1


def test_a_photo_that_waits_longer_than_the_queue_timeout_is_answered_503(served_model):
    with service_client(served_model.export_dir, queue_timeout_s=0.2, batch_wait_ms=1000, max_batch_size=2) as pair:
        client, _ = pair
        started = time.monotonic()
        response = client.post("/v1/predict", content=photo_bytes(), headers={"content-type": JPEG})
        assert_error(response, 503, "overloaded")
        assert response.headers["retry-after"] == "1" and time.monotonic() - started < 1.0


def test_requests_beyond_max_in_flight_are_shed_before_their_body_is_read(served_model):
    with service_client(served_model.export_dir, max_in_flight=1, batch_wait_ms=800, max_batch_size=2) as pair:
        client, _ = pair
        first = threading.Thread(
            target=client.post,
            args=("/v1/predict",),
            kwargs={"content": photo_bytes(), "headers": {"content-type": JPEG}},
        )
        first.start()
        deadline = time.monotonic() + 10
        while metric(client, "catsdogs_requests_in_flight") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        response = client.get("/v1/model")
        first.join()
        assert_error(response, 503, "overloaded")
        assert client.get("/healthz").status_code == 200


# ----------------------------------------------------------------------------- no TensorFlow


def test_the_service_modules_import_no_tensorflow():
    code = (
        "import sys, catsdogs.service.server, catsdogs.service.state, catsdogs.cli.serve; "
        "sys.exit(int(any(name.split('.')[0] in ('tensorflow', 'keras') for name in sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
