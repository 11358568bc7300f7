"""The explorer against hostile or odd requests: chunked bodies past the limits, other Host names
(DNS rebinding), non-number latent values, 16-bit / EXIF-rotated / transparent uploads, a taken
or impossible port, and 50 requests at once (TestClient, and uvicorn on 127.0.0.1 where the bytes
on the wire matter)."""
from __future__ import annotations

import base64
import io
import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from betavae.cli import main
from betavae.data.transforms import uint8_to_unit
from betavae.evaluation.reconstruction import load_image
from betavae.explorer.app import JSON_BODY_LIMIT, create_app
from betavae.explorer.cli import bind
from betavae.explorer.state import MAX_UPLOAD_BYTES, load_models

CHUNK = 64 * 1024
HUGE_CHUNKS = 800 * 16  # 800 MB in 64 KB chunks


@pytest.fixture(scope="module")
def models(tiny_run):
    return load_models([tiny_run])


@pytest.fixture(scope="module")
def client(models):
    with TestClient(create_app(models, top_k=2), base_url="http://127.0.0.1:8765") as client:
        yield client


class BodyCounter:
    """ASGI wrapper outside the app: counts the body bytes the server handed on (what it consumed)."""

    def __init__(self, app):
        self.app = app
        self.bytes = 0

    async def __call__(self, scope, receive, send):
        async def counted():
            message = await receive()
            if message["type"] == "http.request":
                self.bytes += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


@pytest.fixture(scope="module")
def server(models):
    """The app under uvicorn on a free 127.0.0.1 port (bound as ``betavae explore`` binds it)."""
    counter = BodyCounter(create_app(models, top_k=2))
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(counter, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield port, counter
    server.should_exit = True
    thread.join(timeout=10)


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def _detail(response: bytes):
    return json.loads(response.split(b"\r\n\r\n", 1)[1])["detail"]


def _raw_request(port: int, head: bytes, chunks=(), timeout=10.0) -> tuple[int, bytes]:
    """Sends ``head``, then each of ``chunks`` in chunked framing until the server answers or
    hangs up; returns how many chunks went out and everything the server sent back."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                if select.select([sock], [], [], 0)[0]:
                    break  # answered before the body was finished
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += 1
            else:
                if chunks:
                    sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server hung up (its unread data makes the close a reset)
            pass
        response = b""
        try:
            while data := sock.recv(65536):
                response += data
        except OSError:
            pass
    return sent, response


def _chunked_head(port: int, path: str, content_type: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()


# --- 1. body limits, whatever the framing --------------------------------------------------------

def _endless(first: bytes, yielded: list[int]):
    """``first``, then zeros: 800 MB in all; ``yielded[0]`` counts the chunks taken."""
    zeros = b"\0" * CHUNK
    for index in range(HUGE_CHUNKS):
        yielded[0] += 1
        yield first if index == 0 else zeros


@pytest.mark.parametrize("path, content_type, first, limit", [
    ("/api/models/0/decode", "application/json", b'{"z": [' + b" " * (CHUNK - 7), JSON_BODY_LIMIT),
    ("/api/models/0/encode", "multipart/form-data; boundary=XyZ",
     b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
     b"Content-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n", MAX_UPLOAD_BYTES),
])
def test_a_chunked_body_past_the_limit_is_413_and_left_unread(server, path, content_type, first, limit):
    port, counter = server
    counter.bytes = 0
    yielded = [0]
    _, response = _raw_request(port, _chunked_head(port, path, content_type), _endless(first, yielded))
    assert _status(response) == 413, response[:300]
    assert "MB" in _detail(response)
    assert b"connection: close" in response.lower()
    # The server stopped taking the body just past the limit (a bit more sits in socket buffers).
    assert counter.bytes <= limit + 2 * 1024 * 1024
    assert yielded[0] < HUGE_CHUNKS // 8, f"{yielded[0]} of {HUGE_CHUNKS} chunks were taken"


def test_a_declared_length_past_the_limit_is_413_before_any_body(server):
    port, counter = server
    counter.bytes = 0
    head = (f"POST /api/models/0/encode HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {800 * 2**20}\r\n\r\n").encode()
    _, response = _raw_request(port, head)
    assert _status(response) == 413 and counter.bytes == 0


def test_a_chunked_upload_within_the_limit_is_encoded(server):
    port, _ = server
    buffer = io.BytesIO()
    Image.new("L", (40, 40), 128).save(buffer, format="PNG")
    body = (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + buffer.getvalue() + b"\r\n--XyZ--\r\n")
    pieces = [body[i:i + 50] for i in range(0, len(body), 50)]
    head = _chunked_head(port, "/api/models/0/encode", "multipart/form-data; boundary=XyZ")
    _, response = _raw_request(port, head, pieces)
    assert _status(response) == 200, response[:300]
    assert len(json.loads(response.split(b"\r\n\r\n", 1)[1])["z"]) == 4


def test_json_routes_have_a_smaller_limit_that_real_requests_stay_under(client):
    big = b'{"z": [' + b" " * (JSON_BODY_LIMIT + 10) + b"0, 0, 0, 0]}"
    response = client.post("/api/models/0/decode", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert JSON_BODY_LIMIT < MAX_UPLOAD_BYTES // 4
    # A body of 0.9 MB (a 4096-dim model's largest export is ~0.4 MB) reaches the checks behind.
    padded = b'{"z": [' + b" " * (900 * 1024) + b"0, 0, 0]}"
    response = client.post("/api/models/0/decode", content=padded, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "needs 4" in response.json()["detail"]


# --- 2. Host names (DNS rebinding) ---------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1:8765", "127.0.0.1", "localhost:8765", "LOCALHOST",
                                  "localhost:9000", "[::1]:8765", "[::1]"])
def test_loopback_host_names_are_served(client, host):
    assert client.get("/api/models", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1.evil.example",
                                  "localhost.evil.example:8765", "127.0.0.2:8765", "[::2]:8765",
                                  "127.0.0.1:8765@evil.example", "", "localhost:http"])
def test_other_host_names_are_refused(client, host):
    for response in (client.get("/api/models", headers={"host": host}),
                     client.get("/api/models/0/validation/0", headers={"host": host}),
                     client.get("/", headers={"host": host}),
                     client.post("/api/models/0/decode", json={"z": [0.0] * 4}, headers={"host": host})):
        assert response.status_code == 400
        assert "not served here" in response.json()["detail"]
        assert "image" not in response.text and "<script" not in response.text


def test_a_request_without_host_is_refused(server):
    port, _ = server
    _, response = _raw_request(port, b"GET /api/models HTTP/1.0\r\n\r\n")
    assert _status(response) == 400 and "not served" in _detail(response)


def test_allowed_hosts_are_served_besides_the_loopback_names(models):
    app = create_app(models, top_k=2, allow_hosts=["Explorer.Example.org", "[fe80::1]:8080"])
    with TestClient(app, base_url="http://explorer.example.org") as client:
        assert client.get("/api/models").status_code == 200
        for host in ("explorer.example.org:443", "[fe80::1]", "localhost:8765"):
            assert client.get("/api/models", headers={"host": host}).status_code == 200
        assert client.get("/api/models", headers={"host": "evil.example"}).status_code == 400


# --- 3. the port ---------------------------------------------------------------------------------

def test_a_taken_port_is_one_line_and_exit_2_without_serving(tiny_run, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["explore", str(tiny_run), "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert "serving" not in out and "Traceback" not in err
    assert err.strip().startswith(f"betavae explore: error: port {port} on 127.0.0.1 is in use")
    assert "try --port " in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_a_port_out_of_range_is_a_usage_error(tiny_run, capsys, port):
    with pytest.raises(SystemExit) as exit_:
        main(["explore", str(tiny_run), "--port", port])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"'{port}'" in err.splitlines()[-1] and "0-65535" in err.splitlines()[-1]


def test_serving_is_printed_with_the_bound_port_and_allowed_hosts_reach_the_app(tiny_run, capsys, monkeypatch):
    served = {}

    def run(self, sockets=None):
        served.update(app=self.config.app, address=sockets[0].getsockname())

    monkeypatch.setattr(uvicorn.Server, "run", run)
    assert main(["explore", str(tiny_run), "--port", "0", "--allow-host", "box.example:443"]) == 0
    port = served["address"][1]
    assert port != 0
    assert f"serving 1 model(s) at http://127.0.0.1:{port}/" in capsys.readouterr().out
    with TestClient(served["app"], base_url="http://box.example") as client:
        assert client.get("/api/models").status_code == 200
        assert client.get("/api/models", headers={"host": "evil.example"}).status_code == 400


def test_a_bad_allow_host_is_a_usage_error(tiny_run, capsys):
    with pytest.raises(SystemExit):
        main(["explore", str(tiny_run), "--allow-host", "a b/c"])
    assert "--allow-host" in capsys.readouterr().err


# --- 4. uploads read as `traverse --image` reads its file ----------------------------------------

def _encode(client, data: bytes):
    response = client.post("/api/models/0/encode", files={"file": ("image", data, "application/octet-stream")})
    assert response.status_code == 200, response.text
    body = response.json()
    shown = Image.open(io.BytesIO(base64.b64decode(body["image"].split(",", 1)[1])))
    return body["z"], np.asarray(shown)


def _saved(image: Image.Image, format="PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _sixteen_bit(kind: str = "PNG I;16") -> bytes:
    """A gray image of value 30000 of 65535, as a 16-bit PNG or TIFF or a 32-bit integer TIFF."""
    format, mode = kind.split()
    image = Image.fromarray(np.full((40, 48), 30000, dtype=np.uint16))
    return _saved(image if mode == "I;16" else image.convert(mode), format)


def _exif_rotated() -> bytes:
    array = np.zeros((48, 64), dtype=np.uint8)
    array[:, 32:] = 255  # stored: left half black; orientation 6 turns it so that the top is black
    exif = Image.Exif()
    exif[0x0112] = 6
    return _saved(Image.fromarray(array), "JPEG", exif=exif, quality=95)


def _transparent() -> bytes:
    return _saved(Image.new("RGBA", (40, 40), (0, 0, 0, 0)))


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (40, 40), 0)
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    return _saved(image, transparency=0)


@pytest.mark.parametrize("kind", ["PNG I;16", "TIFF I;16", "TIFF I"])
def test_sixteen_bit_uploads_are_scaled_not_clipped(client, kind):
    assert Image.open(io.BytesIO(_sixteen_bit(kind))).mode == kind.split()[1]
    _, shown = _encode(client, _sixteen_bit(kind))
    assert (shown == round(30000 / 257)).all()  # 117, as `prepare` scales 16-bit images


def test_exif_orientation_and_transparency_are_applied(client):
    _, shown = _encode(client, _exif_rotated())
    assert shown[:8].mean() < 30 and shown[-8:].mean() > 225  # turned: black on top
    _, shown = _encode(client, _transparent())
    assert (shown == 255).all()  # transparent pixels composited on white


@pytest.mark.parametrize("make", [_sixteen_bit, _exif_rotated, _transparent, _palette_with_transparency,
                                  lambda: _saved(Image.new("RGB", (70, 30), (200, 30, 90)))])
def test_uploads_are_read_exactly_as_traverse_image_reads_files(client, models, tmp_path, make):
    data = make()
    path = tmp_path / "image"
    path.write_bytes(data)
    expected = load_image(path, 32, 1)
    z, shown = _encode(client, data)
    np.testing.assert_array_equal(shown, expected[..., 0])
    encoded = models[0].trained.encode(uint8_to_unit(expected[None])).mean[0]
    np.testing.assert_allclose(z, encoded.numpy(), atol=1e-5)


def test_an_image_of_too_many_pixels_is_refused_from_its_header(client):
    data = _saved(Image.new("L", (4100, 4100)))  # 16.8 Mpixel, a few KB of PNG
    response = client.post("/api/models/0/encode", files={"file": ("big.png", data, "image/png")})
    assert response.status_code == 400 and "pixels" in response.json()["detail"]


def test_an_animated_or_float_upload_is_a_clear_400(client):
    frames = [Image.new("L", (20, 20), v) for v in (0, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    response = client.post("/api/models/0/encode", files={"file": ("a.gif", buffer.getvalue(), "image/gif")})
    assert response.status_code == 400
    float_tiff = _saved(Image.fromarray(np.ones((20, 20), dtype=np.float32)), "TIFF")
    response = client.post("/api/models/0/encode", files={"file": ("f.tif", float_tiff, "image/tiff")})
    assert response.status_code == 400 and "cannot be used" in response.json()["detail"]


# --- 5. numbers only -----------------------------------------------------------------------------

NOT_NUMBERS = [True, False, "1.5", "1", None, [1.0], {"v": 1}]


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_latent_values_must_be_json_numbers(client, value):
    response = client.post("/api/models/0/decode", json={"z": [value, 0.0, 0.0, 0.0]})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "z", 0]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_422(client, token):
    for path, body in [("decode", f'{{"z": [0, 0, 0, {token}]}}'),
                       ("traverse", f'{{"z": [0, 0, 0, 0], "dim": 0, "low": {token}}}'),
                       ("export", f'{{"n": 2, "fixed": {{"0": {token}}}}}'),
                       ("export", f'{{"n": 2, "sweeps": {{"0": [0, {token}]}}}}')]:
        response = client.post(f"/api/models/0/{path}", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, (path, body, response.text)


def test_integers_are_numbers(client):
    for path, body in [("decode", {"z": [0, 1, -1, 2]}),
                       ("traverse", {"z": [0, 0, 0, 0], "dim": 1, "low": -2, "high": 2}),
                       ("export", {"n": 2, "fixed": {"0": 1}, "sweeps": {"1": [-1, 1]}})]:
        assert client.post(f"/api/models/0/{path}", json=body).status_code == 200, path


@pytest.mark.parametrize("field, value", [
    (f, v) for f in ("dim", "steps", "low", "high") for v in (True, "1", None)
] + [("dim", 1.0), ("steps", 5.0), ("steps", 5.5), ("extra", 1)])
def test_traversal_fields_are_strict(client, field, value):
    body = {"z": [0.0] * 4, "dim": 1, "steps": 5, field: value}
    assert client.post("/api/models/0/traverse", json=body).status_code == 422


@pytest.mark.parametrize("change", [
    {"n": True}, {"n": "3"}, {"n": 3.0}, {"n": None}, {"seed": True}, {"seed": "1"}, {"seed": 1.5},
    {"fixed": {"0": True}}, {"fixed": {"0": "1.5"}}, {"fixed": {"0": None}},
    {"sweeps": {"0": [True, 1.0]}}, {"sweeps": {"0": ["-1", 1.0]}}, {"sweeps": {"0": [0.0]}},
    {"fixed": {"0.0": 1.0}}, {"fixed": {" 0": 1.0}}, {"fixed": {"+0": 1.0}}, {"fixed": {"1_0": 1.0}},
    {"fixed": {"-1": 1.0}}, {"unknown": 1},
])
def test_export_fields_are_strict(client, change):
    body = {"n": 3, "seed": 0, **change}
    assert client.post("/api/models/0/export", json=body).status_code == 422


# --- what held up: many requests at once ---------------------------------------------------------

def test_fifty_parallel_requests_all_answer_and_the_server_stays_up(server):
    port, _ = server
    url = f"http://127.0.0.1:{port}/api/models/0"

    def request(i: int) -> int:
        kinds = [(f"{url}/prior?seed={i}", None), (f"{url}/validation/{i}", None),
                 (f"{url}/decode", {"z": [i / 50, 0, 0, 0]}), (f"{url}/decode", {"z": [True, 0, 0, 0]})]
        target, body = kinds[i % len(kinds)]
        data = None if body is None else json.dumps(body).encode()
        try:
            with urllib.request.urlopen(urllib.request.Request(target, data=data, headers={
                    "content-type": "application/json"}), timeout=60) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(request, range(50)))
    assert codes == [422 if i % 4 == 3 else 200 for i in range(50)]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=10) as response:
        assert json.load(response)["ok"]
