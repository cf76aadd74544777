"""`ad-runtime serve` over real HTTP on 127.0.0.1: results, bad uploads, and concurrent clients.

Every request has a timeout and every loop a fixed count, so a hung server fails the test instead of hanging it.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from contract_graphs import expected
from PIL import Image

from ad_runtime import Detector
from ad_runtime.overlay import HEADER, SIDE
from ad_runtime.server import make_server

TIMEOUT = 30  # seconds per request
LIMIT = 50_000  # the test server's upload limit, bytes


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _request(port: int, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@contextlib.contextmanager
def _serving(detector: Detector, **options) -> Iterator[int]:
    """`detector` served on a free loopback port in a thread; yields the port, stops the server after."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    instance = make_server(detector, "127.0.0.1", port, log_level="warning", **options)
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    try:
        while not instance.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        yield port
    finally:
        instance.should_exit = True
        thread.join(TIMEOUT)
        sock.close()


@pytest.fixture
def server(make_export) -> Iterator[int]:
    """A server for the brightness export (batch 1, as most exports) with a 50 kB upload limit."""
    with _serving(Detector.load(make_export(batch=1)), max_upload_bytes=LIMIT) as port:
        yield port


def test_health_and_model(server) -> None:
    assert _request(server, "GET", "/health") == (200, {"status": "ok", "model": "brightness"})
    status, model = _request(server, "GET", "/model")
    assert status == 200
    assert model["format"] == "ad-core-export" and model["input"]["height"] == 24
    assert model["runtime"] == {"backend": "onnxruntime", "input_size": [24, 32], "batch": 1}


def test_a_raw_upload_is_scored_as_the_file_would_be(server) -> None:
    pixels = np.full((40, 50, 3), 230, dtype=np.uint8)
    status, body = _request(server, "POST", "/predict", _png(pixels), {"Content-Type": "image/png"})
    want = expected(pixels, 24, 32)
    assert status == 200
    assert body["score"] == pytest.approx(want["score"], abs=1e-6) and body["label"] == 1
    assert body["original_size"] == [40, 50] and body["path"] is None and "map_png" not in body


def test_a_form_upload_with_the_map_picture(server) -> None:
    pixels = np.full((30, 20, 3), 20, dtype=np.uint8)
    data, headers = _multipart("image", "part.png", _png(pixels))
    status, body = _request(server, "POST", "/predict?map=1", data, headers)
    assert status == 200
    assert body["path"] == "part.png" and body["label"] == 0
    picture = Image.open(io.BytesIO(base64.b64decode(body["map_png"])))
    assert picture.format == "PNG" and picture.size == (20 + SIDE, 30 + HEADER)


@pytest.mark.parametrize("body, headers, status, message", [
    (b"hello", {"Content-Type": "text/plain"}, 415, "unsupported content type"),
    (b"", {"Content-Type": "image/png"}, 400, "empty upload"),
    (b"\x89PNG\r\n\x1a\n broken", {"Content-Type": "image/png"}, 400, "cannot read image the upload"),
    (b"x" * (LIMIT + 1), {"Content-Type": "image/png"}, 413, "over the limit"),
])
def test_bad_uploads_get_4xx(server, body, headers, status, message) -> None:
    got, answer = _request(server, "POST", "/predict", body, headers)
    assert got == status and message in answer["error"]


def test_an_oversized_chunked_upload_is_cut_off(server) -> None:
    chunks = iter([b"y" * 20_000] * 4)  # an iterator: http.client sends it chunked, with no Content-Length
    status, answer = _request(server, "POST", "/predict", chunks, {"Content-Type": "application/octet-stream"})
    assert status == 413 and "over the limit" in answer["error"]


def test_a_form_without_the_image_field(server) -> None:
    data, headers = _multipart("file", "part.png", _png(np.zeros((8, 8, 3), np.uint8)))
    status, answer = _request(server, "POST", "/predict", data, headers)
    assert status == 400 and "no file in the field 'image'" in answer["error"]


def test_unknown_routes_and_methods_are_json_errors(server) -> None:
    assert _request(server, "GET", "/nothing")[0] == 404
    assert _request(server, "GET", "/predict")[0] == 405


def test_concurrent_clients_each_get_their_own_result(server) -> None:
    rng = np.random.default_rng(1)
    uploads = [np.clip(rng.normal(level, 15, size=(28, 36, 3)), 0, 255).astype(np.uint8)
               for level in (30, 90, 160, 230)]
    wanted = [expected(pixels, 24, 32) for pixels in uploads]

    def client(index: int) -> list[tuple[int, int, dict]]:
        answers = []
        for request in range(10):
            which = (index + request) % len(uploads)
            status, body = _request(server, "POST", "/predict", _png(uploads[which]), {"Content-Type": "image/png"})
            answers.append((which, status, body))
        return answers

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = [a for batch in pool.map(client, range(4), timeout=120) for a in batch]
    assert len(answers) == 40
    for which, status, body in answers:
        assert status == 200
        assert body["score"] == pytest.approx(wanted[which]["score"], abs=1e-6)
        assert body["label"] == int(wanted[which]["label"])


def test_the_serve_command_answers_and_stops(make_export) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(sys.executable).with_name("ad-runtime")
    process = subprocess.Popen([str(script), "serve", str(make_export()), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                assert _request(port, "GET", "/health")[0] == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "ad-runtime serve did not answer within 60 s"
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(TIMEOUT)


def test_serve_on_a_bad_folder_is_one_line(tmp_path) -> None:
    script = Path(sys.executable).with_name("ad-runtime")
    done = subprocess.run([str(script), "serve", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


class _CountingDetector(Detector):
    """Records how many images are being scored at the same moment."""

    def __init__(self, detector: Detector) -> None:
        super().__init__(detector.info, detector.backend)
        self.lock = threading.Lock()
        self.active = self.most = 0

    def predict_images(self, pictures, paths=None):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(0.2)  # long enough for the other requests to arrive meanwhile
            return super().predict_images(pictures, paths)
        finally:
            with self.lock:
                self.active -= 1


def test_at_most_max_parallel_images_are_scored_at_once(make_export) -> None:
    detector = _CountingDetector(Detector.load(make_export()))
    body = _png(np.full((16, 16, 3), 100, dtype=np.uint8))
    with _serving(detector, max_parallel=2) as port, ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: _request(port, "POST", "/predict", body, {"Content-Type": "image/png"}),
                                range(6), timeout=120))
    assert [status for status, _ in answers] == [200] * 6
    assert 1 <= detector.most <= 2
