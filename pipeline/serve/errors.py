"""Requests the server refuses: an HTTP status and a one-line reason, shown as JSON or as a page."""

from __future__ import annotations


class ServeError(Exception):
    """A request that cannot be answered as asked (a 4xx, or 503 when a part of the server is unavailable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message
