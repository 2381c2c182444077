"""ASGI middleware in front of every route: body size limit, same-origin writes, allowed hosts, safe headers."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

# The pages load nothing from elsewhere and run no script; forms post only back here. The referrer policy keeps
# the Origin header of our own form posts (no-referrer would make it "null", refused as foreign).
CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"DENY"),
           (b"cross-origin-resource-policy", b"same-origin")]
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class BodyTooLarge(Exception):
    """The request body grew past the limit while it was read."""


async def _answer(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *HEADERS]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Refuses, before any route runs: a body over `max_bytes` (413; by its Content-Length at once, else as it
    streams in), a Host header that is not an allowed host (400: DNS rebinding), and a write coming from
    another site (403: a page elsewhere posting a form here). Adds the security headers to every answer.
    There is no CORS: other origins cannot read any answer."""

    def __init__(self, app, max_bytes: int, hosts: tuple[str, ...] | None) -> None:
        self.app, self.max_bytes, self.hosts = app, max_bytes, hosts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.hosts is not None and urlsplit(f"//{host}").hostname not in self.hosts:
            return await _answer(send, 400, "unknown Host header")
        if scope["method"] in UNSAFE_METHODS:
            origin = headers.get("origin")
            if headers.get("sec-fetch-site") in ("cross-site", "same-site") or \
                    (origin is not None and urlsplit(origin).netloc != host):
                return await _answer(send, 403, "writes are accepted from this server's own pages only")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await _answer(send, 413, f"the request is larger than {self.max_bytes} bytes")

        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except BodyTooLarge:
            if not started:
                await _answer(send, 413, f"the request is larger than {self.max_bytes} bytes")
