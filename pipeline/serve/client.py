"""A small Python client of the server's JSON API (standard library only): `Client(url).search(path_or_bytes, k)`.

    from pipeline.serve.client import Client
    c = Client("http://127.0.0.1:8000")
    for hit in c.search("photo.jpg", k=5): print(hit["similarity"], hit["key"])
    c.search_key("img00.jpg"); c.groups(page=0); c.decide("keeper", id=12)
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


class ClientError(Exception):
    """The server refused a request: its HTTP status and its one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class Client:
    """The API of one server; every call returns the decoded JSON (search calls: the list of results)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", timeout: float = 60) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    def _call(self, method: str, path: str, params: dict | None = None, body: bytes | None = None,
              content_type: str | None = None) -> dict:
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
        request = urllib.request.Request(f"{self.url}{path}{'?' + query if query else ''}", data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise ClientError(exc.code, str(message)) from None

    def health(self) -> dict:
        return self._call("GET", "/health")

    def search(self, image: str | os.PathLike | bytes, k: int | None = None) -> list[dict]:
        """Neighbours of an image (a file path or its encoded bytes): rank, id, key, shard, index, similarity,
        thumbnail (a URL path on the server)."""
        data = image if isinstance(image, (bytes, bytearray)) else Path(image).read_bytes()
        return self._call("POST", "/api/search", {"k": k}, bytes(data), "application/octet-stream")["results"]

    def search_key(self, key: str, k: int | None = None) -> list[dict]:
        return self._call("GET", "/api/search", {"key": key, "k": k})["results"]

    def search_id(self, id_: int, k: int | None = None) -> list[dict]:
        return self._call("GET", "/api/search", {"id": id_, "k": k})["results"]

    def thumbnail(self, id_: int) -> bytes:
        with urllib.request.urlopen(f"{self.url}/thumb/{int(id_)}", timeout=self.timeout) as answer:
            return answer.read()

    def groups(self, page: int = 0, per_page: int | None = None) -> dict:
        return self._call("GET", "/api/groups", {"page": page, "per_page": per_page})

    def decide(self, action: str, id: int) -> dict:
        """Record a decision on the group member with groups id `id`: keeper, not_duplicate or duplicate."""
        body = json.dumps({"action": action, "id": id}).encode()
        return self._call("POST", "/api/decisions", body=body, content_type="application/json")["group"]

    def decisions(self, page: int = 0) -> dict:
        return self._call("GET", "/api/decisions", {"page": page})

    def selection(self, page: int = 0, source: str | None = None) -> dict:
        return self._call("GET", "/api/selection", {"page": page, "source": source})
