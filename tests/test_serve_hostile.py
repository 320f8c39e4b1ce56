"""Hostile uploads: each a clear 4xx in the one error shape, never a 5xx, and /healthz still answers afterwards.

The bad files that `prepare` quarantines go through FastAPI's TestClient. The
HTTP-level cases a test client cannot produce (no Content-Length, a lying
one, stalled clients, huge headers) go to a real `catsdogs serve` process over
raw sockets.
"""

import io
import select
import socket
import time
import zipfile

import httpx
import pytest
from PIL import Image

from catsdogs.service.uploads import clean_name
from serve_fixtures import gif_header_bomb, photo_bytes, png_header_bomb, running_server, service_client

MAX_FILES = 8
MAX_UPLOAD_MB = 1
CAP = MAX_UPLOAD_MB * 1024 * 1024


@pytest.fixture(scope="module")
def client(served_model):
    with service_client(served_model.export_dir, max_files=MAX_FILES, max_upload_mb=MAX_UPLOAD_MB) as (client, _):
        yield client


def one_by_one_png():
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(buffer, "PNG")
    return buffer.getvalue()


def zip_file():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cat.jpg", photo_bytes("cats"))
    return buffer.getvalue()


# (name, bytes, expected status, expected code, expected `received` entries)
HOSTILE_FILES = [
    ("empty", lambda: b"", 422, "bad_image", {"reason": "empty file"}),
    ("truncated JPEG", lambda: photo_bytes("dogs")[:300], 422, "bad_image", {"reason": "truncated"}),
    ("truncated PNG", lambda: photo_bytes("dogs", format="PNG")[:120], 422, "bad_image", {}),
    (
        "not an image",
        lambda: b"Dear diary, today I sent a text file.",
        415,
        "unsupported_image_type",
        {"detected": "text"},
    ),
    (
        "SVG",
        lambda: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>',
        415,
        "unsupported_image_type",
        {"detected": "SVG"},
    ),
    (
        "PDF",
        lambda: b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF",
        415,
        "unsupported_image_type",
        {"detected": "PDF"},
    ),
    ("zip", zip_file, 415, "unsupported_image_type", {"detected": "zip"}),
    ("PNG bomb", lambda: png_header_bomb(width=100_000, height=100_000), 413, "too_many_pixels", {}),
    ("PNG over the cap", lambda: png_header_bomb(width=8000, height=8000), 413, "too_many_pixels", {"width": 8000}),
    ("GIF bomb", gif_header_bomb, 413, "too_many_pixels", {}),
    ("GIF over the cap", lambda: gif_header_bomb(width=10_000, height=10_000), 413, "too_many_pixels", {}),
    ("1x1", one_by_one_png, 422, "bad_image", {"reason": "too small: 1x1"}),
    ("a JPEG signature and nothing else", lambda: b"\xff\xd8\xff\xe0" + b"\x00" * 64, 422, "bad_image", {}),
]


@pytest.mark.parametrize("upload", ["multipart", "raw"])
@pytest.mark.parametrize(
    ("name", "make", "status", "code", "received"), HOSTILE_FILES, ids=[row[0] for row in HOSTILE_FILES]
)
def test_a_bad_file_is_a_clear_4xx_and_the_server_stays_healthy(client, upload, name, make, status, code, received):
    data = make()
    if upload == "multipart":
        response = client.post("/v1/predict", files=[("files", (f"{name}.jpg", data, "image/jpeg"))])
    else:
        response = client.post("/v1/predict", content=data, headers={"content-type": "image/jpeg"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and len(error["message"]) > 30
    assert received.items() <= (error["received"] or {}).items()
    assert client.get("/healthz").status_code == 200


def test_bad_files_in_a_batch_do_not_stop_the_good_one(client):
    parts = [("files", (row[0], row[1](), "image/png")) for row in HOSTILE_FILES[: MAX_FILES - 1]]
    parts.append(("files", ("good.jpg", photo_bytes("dogs"), "image/jpeg")))
    response = client.post("/v1/predict", files=parts)
    assert response.status_code == 200
    rows = response.json()["predictions"]
    assert [row["error"]["code"] for row in rows[:-1]] == [row[3] for row in HOSTILE_FILES[: MAX_FILES - 1]]
    assert rows[-1]["label"] == "dogs"


def test_a_thousand_multipart_parts_are_refused(client):
    parts = [("files", (f"{index}.jpg", b"x", "image/jpeg")) for index in range(1000)]
    response = client.post("/v1/predict", files=parts)
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_many_files"
    assert client.get("/healthz").status_code == 200


def test_path_traversal_names_are_labels_and_nothing_is_written(client, served_model, tmp_path, monkeypatch, snapshot):
    monkeypatch.chdir(tmp_path)
    before = snapshot(served_model.run_dir.parent)
    names = ["../../etc/passwd", "..\\..\\windows\\win.ini", "/tmp/evil.jpg", "~/.ssh/authorized_keys"]
    response = client.post("/v1/predict", files=[("files", (name, photo_bytes(), "image/jpeg")) for name in names])
    assert response.status_code == 200
    assert [row["file"] for row in response.json()["predictions"]] == names
    assert list(tmp_path.iterdir()) == [] and snapshot(served_model.run_dir.parent) == before


def test_uploaded_names_become_short_printable_labels():
    assert clean_name("a/../b\x00\x1b[31m.jpg", 0) == "a/../b[31m.jpg"
    assert clean_name("", 2) == "file 3" and clean_name(None, 0) == "file 1"
    assert len(clean_name("x" * 10_000, 0)) == 200


@pytest.mark.parametrize("content_type", ["text/html", "application/x-www-form-urlencoded", "image"])
def test_a_wrong_content_type_is_415(client, content_type):
    response = client.post("/v1/predict", content=photo_bytes(), headers={"content-type": content_type})
    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"


def test_an_empty_body_is_422(client):
    response = client.post("/v1/predict", content=b"", headers={"content-type": "image/jpeg"})
    assert response.status_code == 422 and response.json()["error"]["received"] == {"reason": "empty file"}
    response = client.post("/v1/predict", content=b"", headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code in (400, 422)


# ----------------------------------------------------------------------------- a real server over raw sockets


@pytest.fixture(scope="module")
def server(served_model, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("hostile-server") / "serve.log"
    limits = ("serve.body_timeout_s=1.5", "serve.header_timeout_s=1.5", f"serve.max_upload_mb={MAX_UPLOAD_MB}")
    arguments = tuple(item for limit in limits for item in ("--set", limit))
    with running_server(served_model.export_dir, log_path, arguments=arguments) as server:
        yield server


def raw_exchange(server, request: bytes, *, body_chunks=(), pause_s=0.05, timeout_s=10.0) -> bytes:
    """Send raw bytes, then body chunks until the server answers, and return everything it answers.

    Sending stops as soon as an answer is readable: writing on into a socket the server has closed would
    make the kernel reset the connection and drop the answer before it is read.
    """
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout_s) as connection:
        try:
            connection.sendall(request)
            for chunk in body_chunks:
                readable, _, _ = select.select([connection], [], [], pause_s)
                if readable:
                    break
                connection.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while data := connection.recv(65536):
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
        return answer


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def headers(content_length=None, *, extra=b"") -> bytes:
    lines = b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nConnection: close\r\n"
    if content_length is not None:
        lines += b"Content-Length: %d\r\n" % content_length
    return lines + extra + b"\r\n"


def assert_healthy(server):
    assert httpx.get(f"{server.base_url}/healthz", timeout=5).status_code == 200


def test_a_body_over_the_cap_is_refused_from_content_length_before_it_is_sent(server):
    started = time.monotonic()
    answer = raw_exchange(server, headers(50 * CAP))
    assert status_of(answer) == 413 and b'"body_too_large"' in answer
    assert time.monotonic() - started < 5
    assert_healthy(server)


def test_a_chunked_body_over_the_cap_is_refused_while_it_streams(server):
    chunk = b"\xff\xd8\xff" + b"0" * (256 * 1024 - 3)
    encoded = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    answer = raw_exchange(server, headers(extra=b"Transfer-Encoding: chunked\r\n"), body_chunks=[encoded] * 8)
    assert status_of(answer) == 413 and b'"bytes_received"' in answer
    assert_healthy(server)


def test_a_content_length_that_claims_less_than_is_sent_is_answered_4xx(server):
    photo = photo_bytes()
    answer = raw_exchange(server, headers(100) + photo)
    assert 400 <= status_of(answer) < 500
    assert_healthy(server)


def test_a_content_length_that_claims_more_than_is_sent_times_out_with_408(server):
    answer = raw_exchange(server, headers(5000) + photo_bytes()[:100])
    assert status_of(answer) == 408 and b'"body_timeout"' in answer
    assert_healthy(server)


def test_a_client_that_trickles_its_headers_is_cut_off(server):
    started = time.monotonic()
    answer = raw_exchange(server, b"GET /healthz HTTP/1.1\r\n", body_chunks=[b"X-Slow: 1\r\n"] * 20, pause_s=0.25)
    assert answer == b"" and time.monotonic() - started < 4.5
    assert_healthy(server)


def test_huge_headers_are_refused(server):
    answer = raw_exchange(server, headers(10, extra=b"X-Huge: " + b"a" * 200_000 + b"\r\n") + b"0123456789")
    assert answer == b"" or 400 <= status_of(answer) < 500
    assert_healthy(server)
