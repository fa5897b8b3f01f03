"""What the request parser (requesting.Requestant) makes and keeps to: a parsed `Request`, the
`Limits` on what one request may make the server hold, and the `RequestError` that refuses a
request with the status to answer. Plain data: nothing here parses or touches a socket.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

from .grammar import first_field

__all__ = ["Limits", "Request", "RequestError"]


class RequestError(Exception):
    """Malformed or unacceptable request; carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(status, message)
        self.status = status
        self.message = message  # short, plain text, never echoes client bytes

    def __str__(self) -> str:
        return f"{self.status} {self.message}"


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may make the server hold; each breach has its own status."""

    max_request_line: int = 8190      # "METHOD target HTTP/1.1\r\n"; over -> 414
    max_header_bytes: int = 65536     # header (or trailer) section; over -> 431
    max_header_count: int = 100       # field lines per section; over -> 431
    max_body: int = 1 << 30           # body bytes; over -> 413
    spill_threshold: int = 1 << 20    # bodies above this go to a temporary file

    def __post_init__(self) -> None:
        for name in ("max_request_line", "max_header_bytes", "max_header_count",
                     "max_body", "spill_threshold"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"Limits.{name} must be a non-negative int")


class Request:
    """One parsed request. Strings are latin-1 decoded; target, path and query stay
    percent-encoded exactly as sent. `body` is positioned at 0 once `complete`."""

    # A plain class rather than a dataclass: a dataclass's generated __init__ is interpreted
    # code even in the compiled build, fifteen generic attribute writes on every request.
    __slots__ = ("method", "target", "path", "query", "version", "headers", "trailers", "body",
                 "body_size", "content_length", "chunked", "keep_alive", "expect_continue",
                 "upgrade", "complete")

    def __init__(self, method: str = "GET", target: str = "/", path: str = "/", query: str = "",
                 version: str = "1.1", headers: list[tuple[str, str]] | None = None,
                 trailers: list[tuple[str, str]] | None = None, body: BinaryIO | None = None,
                 body_size: int = 0, content_length: int | None = None, chunked: bool = False,
                 keep_alive: bool = True, expect_continue: bool = False,
                 upgrade: str | None = None, complete: bool = False):
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.headers: list[tuple[str, str]] = [] if headers is None else headers
        self.trailers: list[tuple[str, str]] = [] if trailers is None else trailers
        self.body: BinaryIO = io.BytesIO() if body is None else body
        self.body_size = body_size
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        self.complete = complete

    def __repr__(self) -> str:
        return (f"Request(method={self.method!r}, target={self.target!r}, "
                f"version={self.version!r}, headers={self.headers!r}, "
                f"body_size={self.body_size!r}, complete={self.complete!r})")

    def header(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of header `name` (case-insensitive), else `default`."""
        return first_field(self.headers, name.lower(), default)
