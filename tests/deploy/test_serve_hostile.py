"""The served API under hostile clients, against a real uvicorn on 127.0.0.1: every client
mistake is a 4xx with a JSON message and one log line, never a 5xx or a traceback, a body
that stalls is answered 408, and the server keeps answering afterwards."""

from __future__ import annotations

import io
import json
import socket
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("fastapi")

from maskclf.deploy.export import export_run
from maskclf.deploy.request import ExportRequest  # noqa: E402
from maskclf.train.execute import train_run  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402
from tests.helpers.server import Served, served  # noqa: E402

pytestmark = pytest.mark.slow  # trains a (tiny) model to serve
READ_TIMEOUT_S = 1.0


class Server:
    """A running server (``tests.helpers.server.served``) and the requests a hostile client
    sends it."""

    def __init__(self, running: Served):
        self.port, self.log = running.port, running.log

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def raw(self, payload: bytes, wait_s: float = 30.0) -> tuple[int, dict]:
        """Send bytes as they are (a request line, headers and body of our own making)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=wait_s) as sock:
            sock.sendall(payload)
            answer = b""
            while True:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                answer += chunk
                head, _, body = answer.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
        head, _, body = answer.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1]) if head else 0
        return status, json.loads(body) if body.strip().startswith(b"{") else {}

    def post(self, files: list[tuple[str, bytes]], content_type: str | None = None,
             boundary: bytes = b"maskclfboundary") -> tuple[int, dict]:
        body = b"".join(b"--" + boundary + b"\r\nContent-Disposition: form-data; "
                        b"name=\"files\"; filename=\"" + name.encode() + b"\"\r\n\r\n" + data
                        + b"\r\n" for name, data in files) + b"--" + boundary + b"--\r\n"
        kind = content_type or f"multipart/form-data; boundary={boundary.decode()}"
        return self.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: " + kind.encode()
                        + b"\r\nContent-Length: " + str(len(body)).encode()
                        + b"\r\nConnection: close\r\n\r\n" + body)


@pytest.fixture(scope="module")
def server(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve-hostile")
    run = train_run(tiny_config(), synthetic_root, out, "r", interactive=False).run
    export_run(ExportRequest(run, out / "export", data=synthetic_root))
    with served(out / "export", "--read-timeout", str(READ_TIMEOUT_S), "--max-concurrent",
                "2", log=out / "server.log") as running:
        yield Server(running)
    log = (out / "server.log").read_text()
    assert "Traceback" not in log, log


def _image(kind: str, size=(64, 48), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3),
                                                               dtype=np.uint8)).convert(mode)
    image.save(buffer, kind)
    return buffer.getvalue()


def _bomb_png() -> bytes:
    data = bytearray(_image("PNG", (1, 1), "L"))
    data[16:24] = (200_000).to_bytes(4, "big") * 2  # the header claims 4e10 pixels
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def _request(body: bytes, kind: bytes = b"multipart/form-data; boundary=b") -> bytes:
    return (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: " + kind
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close"
            b"\r\n\r\n" + body)


CASES = [  # (name, request, expected status)
    ("decompression-bomb-png", lambda s: s.post([("bomb.png", _bomb_png())]), 413),
    ("text-as-jpeg", lambda s: s.post([("notes.jpg", b"hello, not a photo")]), 415),
    ("empty-file", lambda s: s.post([("empty.jpg", b"")]), 400),
    ("jpeg-cut-short", lambda s: s.post([("cut.jpg", _image("JPEG")[:300])]), 415),
    ("png-cut-short", lambda s: s.post([("cut.png", _image("PNG")[:100])]), 415),
    ("gif", lambda s: s.post([("a.gif", _image("GIF"))]), 200),
    ("bmp", lambda s: s.post([("a.bmp", _image("BMP"))]), 200),
    ("tiff", lambda s: s.post([("a.tif", _image("TIFF"))]), 200),
    ("webp", lambda s: s.post([("a.webp", _image("WEBP"))]), 200),
    ("cmyk-jpeg", lambda s: s.post([("cmyk.jpg", _image("JPEG", mode="CMYK"))]), 200),
    ("rgba-png", lambda s: s.post([("rgba.png", _image("PNG", mode="RGBA"))]), 200),
    ("grey-png", lambda s: s.post([("grey.png", _image("PNG", mode="L"))]), 200),
    ("one-pixel", lambda s: s.post([("dot.png", _image("PNG", (1, 1)))]), 200),
    ("not-multipart", lambda s: s.post([("a.jpg", _image("JPEG"))],
                                       content_type="application/json"), 400),
    ("boundary-mismatch", lambda s: s.post([("a.jpg", _image("JPEG"))],
                                           content_type="multipart/form-data; boundary=zzz"),
     400),
    ("multipart-without-boundary", lambda s: s.post([("a.jpg", _image("JPEG"))],
                                                    content_type="multipart/form-data"), 400),
    ("no-file-part", lambda s: s.raw(_request(b"--b\r\nContent-Disposition: form-data; "
                                              b"name=x\r\n\r\nvalue\r\n--b--\r\n")), 400),
    ("declared-too-large", lambda s: s.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type"
                                           b": multipart/form-data; boundary=b\r\nContent-Len"
                                           b"gth: 999999999\r\nConnection: close\r\n\r\n"), 413),
    ("empty-body", lambda s: s.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 0"
                                   b"\r\nConnection: close\r\n\r\n"), 400),
    ("stalls-mid-body", lambda s: s.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                        b"multipart/form-data; boundary=b\r\nContent-Length: "
                                        b"5000\r\n\r\n--b\r\nContent-Dis", wait_s=15), 408),
    ("get-predict", lambda s: s.get("/predict"), 405),
    ("unknown-path", lambda s: s.get("/../../etc/passwd"), 404),
]


@pytest.mark.parametrize("request_of", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_a_client_mistake_is_a_4xx_with_a_message_and_the_server_keeps_answering(
        server, request_of):
    expected = next(status for _, made, status in CASES if made is request_of)
    started = time.monotonic()
    status, body = request_of(server)
    assert status == expected, body
    if status >= 400 and status != 405 and status != 404:
        assert isinstance(body.get("detail"), str) and body["detail"], body
    assert server.get("/health")[0] == 200
    assert time.monotonic() - started < 20


def test_a_stalled_body_is_answered_after_the_read_timeout(server):
    started = time.monotonic()
    status, body = CASES[[c[0] for c in CASES].index("stalls-mid-body")][1](server)
    waited = time.monotonic() - started
    assert status == 408 and "stopped arriving" in body["detail"]
    assert READ_TIMEOUT_S <= waited < READ_TIMEOUT_S + 5


def test_file_names_from_clients_are_plain_names(server):
    status, body = server.post([("../../etc/pass\x07wd<b>.jpg", _image("JPEG"))])
    assert status == 200, body
    assert body["results"][0]["file"] == "pass" + "wd<b>.jpg"
    status, body = server.post([("..\\..\\windows\\x.txt", b"not an image")])
    assert status == 415 and body["detail"].startswith("x.txt:")


def test_a_burst_queues_behind_the_concurrency_limit_and_every_request_is_answered(server):
    photo = _image("JPEG")
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(lambda i: server.post([(f"{i}.jpg", photo)])[0], range(24)))
    assert statuses == [200] * 24


def test_the_server_logs_one_line_per_client_mistake(server):
    server.post([("notes.jpg", b"hello")])
    time.sleep(0.5)
    lines = [line for line in server.log.read_text().splitlines() if "-> 415" in line]
    assert lines and all("notes.jpg" in line or "not an image" in line for line in lines)
    assert "Traceback" not in server.log.read_text()
