"""A client request on its way: `Exchange` holds a request's method, target, fields and body,
the `Response` it fills, its deadline and how far it got on a connection, and writes its head;
`due` tells whether its deadline passed. `Headers` and `header_list` are the header lists a
request is built from. Used by the Client, its sessions and its event streams.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional, Union

from .client_bodies import BodyWriter, RequestBody
from .client_parsing import Head
from .client_response import Response
from .grammar import header_text  # one rule for header values, requests and responses

__all__ = ["Exchange", "Headers", "header_list", "due"]

IDEMPOTENT = frozenset(("GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"))

HeaderValue = Union[str, bytes, bytearray, memoryview, int]
Headers = Union[Mapping[str, HeaderValue], Iterable[tuple[str, HeaderValue]], None]


class Exchange:
    """A request on its way, and the Response it fills."""

    __slots__ = ("method", "target", "headers", "body", "response", "deadline", "attempts",
                 "answered", "expect_continue", "redirects", "sink", "on_head", "writer",
                 "idle_timeout", "discarding")

    def __init__(self, method: str, target: str, headers: list,
                 body: Union[RequestBody, bytes], response: Response, deadline: Optional[float]):
        self.method = method
        self.target = target
        self.headers = headers  # every field to send, Host and Content-Length included
        self.body = body if isinstance(body, RequestBody) else RequestBody(body)
        self.response = response
        self.deadline = deadline
        self.attempts = 0  # times sent
        self.answered = False  # a byte of the final response arrived: never resent
        self.expect_continue = any(name.lower() == "expect" and value.lower() == "100-continue"
                                   for name, value in headers) and not self.body.empty
        self.redirects = 0
        self.sink: Optional[Callable[[bytes], None]] = None  # where body bytes go, if not kept
        self.on_head: Optional[Callable[[Head], None]] = None
        self.writer: Optional[BodyWriter] = None  # while a streamed body goes out
        # For streamed bodies the timeout counts from the last progress, not from the start:
        # a gigabyte may take longer than any fixed limit, a stall may not.
        self.idle_timeout: Optional[float] = None
        self.discarding = False  # the body of a redirect that will be followed

    def progressed(self, now: float) -> None:
        if self.idle_timeout is not None:
            self.deadline = now + self.idle_timeout

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT

    @property
    def pipelinable(self) -> bool:
        """May go behind other requests, or have others behind it, on one connection."""
        return (self.idempotent and not self.expect_continue and self.method != "HEAD"
                and not self.body.streamed)

    def wire_head(self) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def due(exchange: Exchange, now: float) -> bool:
    return exchange.deadline is not None and now >= exchange.deadline


def header_list(headers: Headers) -> list:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(_header_name(name), header_text(name, value)) for name, value in items]


def _header_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"header name must be str, not {type(name).__name__}")
    return name
