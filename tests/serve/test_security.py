"""Hostile requests get a 4xx and the server stays up: traversal ids, oversized, non-image and bomb uploads, foreign
hosts and origins; no CORS, safe headers, loopback unless told."""

from __future__ import annotations

import http.client
import io
import logging
import struct
import zlib
from urllib.parse import urlsplit

import pytest
from PIL import Image

from pipeline.errors import ConfigError
from pipeline.serve.config import ServeConfig
from pipeline.serve.images import SourceError, SourceImages
from pipeline.serve.run import warn_if_exposed
from tests.conftest import jpeg_bytes, make_image


def raw(url: str, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One request with the path sent byte for byte as given (no client-side normalisation of `..`)."""
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
    try:
        try:
            conn.request(method, path, body=body, headers=headers or {},
                         encode_chunked=body is not None and not isinstance(body, bytes))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was sent: read its answer
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


def still_up(url: str) -> None:
    status, _, body = raw(url, "GET", "/health")
    assert status == 200 and b'"status":"ok"' in body
    status, _, _ = raw(url, "GET", "/api/search?id=0&k=2")
    assert status == 200


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height RGB pixels, with no pixel data at all (a decompression bomb's
    first bytes: the size is all a decoder needs to allocate)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def zeros_png(side: int) -> bytes:
    """A real, decodable PNG of side × side black pixels: a few kB that decode to side² × 3 bytes."""
    out = io.BytesIO()
    Image.new("L", (side, side)).save(out, format="PNG", optimize=True)
    return out.getvalue()


TRAVERSALS = [
    "/thumb/../../etc/passwd", "/thumb/..%2F..%2Fetc%2Fpasswd", "/thumb/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/thumb/%252e%252e%252f%252e%252e%252fetc%252fpasswd", "/thumb/..%252f..%252fetc%252fpasswd",
    "/thumb/-1", "/thumb/99999999999", "/thumb/1e3", "/thumb/0x1", "/api/images/..%2F..%2Fetc%2Fpasswd",
    "/api/search?id=..%2F..%2Fetc%2Fpasswd", "/api/search?key=..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/search?key=%2Fetc%2Fpasswd", "/api/groups/..%2F..%2Fetc%2Fpasswd", "/../../etc/passwd",
    "/style.css/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/search?id=-5", "/thumb/7?size=..%2F",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_a_path_traversal_id_gets_a_4xx_and_no_file(server, path):
    url, _ = server
    status, _, body = raw(url, "GET", path)
    assert 400 <= status < 500, (path, status, body[:200])
    assert b"root:" not in body
    still_up(url)


def test_a_key_never_reads_outside_the_image_folder(folder_root):
    images = SourceImages(folder_root)
    for key in ("../../../../../../etc/passwd", "/etc/passwd", "img00.jpg/../../photos/img00.jpg/../../../etc/hosts"):
        with pytest.raises(SourceError, match="outside the image folder"):
            images.image(key, "folder-000000", 0)
    assert images.image("img03.jpg", "folder-000001", 3)[:3] == b"\xff\xd8\xff"


def test_an_oversized_upload_gets_413_before_it_is_read(server):
    url, _ = server
    big = b"\xff\xd8\xff" + bytes(1_200_000)  # over the test server's 1 MiB
    status, _, body = raw(url, "POST", "/api/search", big, {"Content-Type": "image/jpeg"})
    assert status == 413 and b"larger than 1048576 bytes" in body
    chunks = (bytes(100_000) for _ in range(12))  # no Content-Length: counted as it streams in
    status, _, body = raw(url, "POST", "/api/search", chunks, {"Content-Type": "image/jpeg"})
    assert status == 413
    form = (b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + big + b"\r\n--x--\r\n")
    status, _, _ = raw(url, "POST", "/search", form, {"Content-Type": "multipart/form-data; boundary=x"})
    assert status == 413
    still_up(url)


@pytest.mark.parametrize("body, ctype, status, message", [
    (b"hello, I am text", "image/jpeg", 415, b"not an image"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "application/octet-stream", 415, b"not an image"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", 415, b"not an image"),
    (jpeg_bytes(make_image(1)), "text/plain", 415, b"send an image"),
    (b"", "image/png", 400, b"the upload is empty"),
    (jpeg_bytes(make_image(1))[:300], "image/jpeg", 400, b"the image cannot be"),  # a header, then nothing
    (jpeg_bytes(make_image(1, (400, 300)))[:3000], "image/jpeg", 400, b"cannot be used"),  # cut off mid-scan
])
def test_a_non_image_upload_gets_a_4xx(server, body, ctype, status, message):
    url, _ = server
    got, headers, answer = raw(url, "POST", "/api/search", body, {"Content-Type": ctype})
    assert got == status and message in answer and headers["content-type"] == "application/json"
    still_up(url)


def test_a_non_image_file_in_the_pages_form_gets_415_as_a_page(server):
    url, _ = server
    form = (b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"notes.txt\"\r\n"
            b"Content-Type: text/plain\r\n\r\nnot an image\r\n--x--\r\n")
    status, headers, body = raw(url, "POST", "/search", form, {"Content-Type": "multipart/form-data; boundary=x"})
    assert status == 415 and headers["content-type"].startswith("text/html") and b"not an image" in body
    still_up(url)


@pytest.mark.parametrize("bomb", [png_header(60000, 60000), png_header(2**31 - 1, 2**31 - 1), zeros_png(2500)])
def test_a_decompression_bomb_gets_413_and_is_never_decoded(server, bomb):
    url, _ = server
    assert len(bomb) < 100_000
    status, _, body = raw(url, "POST", "/api/search", bomb, {"Content-Type": "image/png"})
    assert status == 413 and b"pixels" in body
    still_up(url)


def test_a_foreign_host_header_is_refused(server):
    url, _ = server
    for host in ("evil.example", "evil.example:80", "127.0.0.1.evil.example"):
        status, _, body = raw(url, "GET", "/health", headers={"Host": host})
        assert status == 400 and b"unknown Host" in body
    assert raw(url, "GET", "/health", headers={"Host": "localhost:1"})[0] == 200
    still_up(url)


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Origin": "http://127.0.0.1:1"}])
def test_a_write_from_another_site_is_refused(server, headers):
    url, _ = server
    decision = b'{"action": "keeper", "id": 1}'
    status, _, _ = raw(url, "POST", "/api/decisions", decision, {"Content-Type": "application/json", **headers})
    assert status == 403
    form = b"action=keeper&id=1&page=0"
    status, _, _ = raw(url, "POST", "/groups/decide", form,
                       {"Content-Type": "application/x-www-form-urlencoded", **headers})
    assert status == 403
    status, _, _ = raw(url, "POST", "/api/search", jpeg_bytes(make_image(1)), {"Content-Type": "image/jpeg", **headers})
    assert status == 403
    still_up(url)


def test_no_cors_and_safe_headers_everywhere(server):
    url, _ = server
    for path in ("/", "/api/search?id=0", "/thumb/0", "/health", "/groups"):
        status, headers, _ = raw(url, "GET", path, headers={"Origin": "http://evil.example"})
        assert status == 200
        assert not any(h.startswith("access-control-") for h in headers), (path, headers)
        assert "script-src" not in headers["content-security-policy"]  # default-src 'none': no script at all
        assert headers["content-security-policy"].startswith("default-src 'none'")
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
        assert "server" not in headers
    status, headers, _ = raw(url, "OPTIONS", "/api/search", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert status == 405 and not any(h.startswith("access-control-") for h in headers)


def test_the_server_binds_to_loopback_unless_told_and_warns_when_told(server, caplog):
    url, background = server
    assert url.startswith("http://127.0.0.1:") and background.server.config.host == "127.0.0.1"
    assert ServeConfig(index="i").host == "127.0.0.1" and not ServeConfig(index="i").exposed
    with caplog.at_level(logging.WARNING, logger="pipeline.serve.run"):
        warn_if_exposed(ServeConfig(index="i", host="0.0.0.0"))
        warn_if_exposed(ServeConfig(index="i", host="::1"))
    assert len(caplog.records) == 1 and "there is no login" in caplog.records[0].getMessage()
    with pytest.raises(ConfigError, match="port must be"):
        ServeConfig(index="i", port=70000)
    with pytest.raises(ConfigError, match="k must be 1 to max_k"):
        ServeConfig(index="i", k=0)
