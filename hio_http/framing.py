"""The framing of one response on the wire: `BaseResponder` sends a status line, headers and a
body (Content-Length, chunked or close-delimited, gzipped when negotiated) on an `Outlet`, and
pulls the body only while the outlet's send buffer is under its high-water mark. The checks of
what an app or handler gives (status, header fields, hop-by-hop fields, body items) live here.

Nothing here blocks or reads a socket; an app's item of b"" means "not yet".
"""

# Theory of operation
# -------------------
# The Steward calls `start()` once, then `pump()` whenever there may be progress: at first, when
# the send buffer drains, and on later passes after a b"" item. `pump()` returns
#   DONE     the response is complete (or failed); `keep_alive` says whether the connection
#            may carry another request,
#   WAITING  the body iterator said "not yet" (b""): call again on a later pass,
#   BLOCKED  the send buffer is at its high-water mark: call again when it drains.
# The head goes out together with the first body bytes, so a small response is a single send.
# Once the head is sent, a failure can only be signalled by closing the connection without a
# proper end (no terminating chunk, or fewer bytes than Content-Length): `broken` says so.

from __future__ import annotations

import dataclasses
import logging
import re
import time
from email.utils import formatdate
from typing import Callable, Final, Iterator, Optional

from mypy_extensions import mypyc_attr

from .compression import Compression, GzipStream, choose_coding, compressed_headers, header_value
from .grammar import BYTES_LIKE, check_field, list_members
from .net import Outlet
from .request import Request

__all__ = ["DONE", "WAITING", "BLOCKED", "DEFAULT_SERVER", "HOP_BY_HOP", "REASONS", "Header",
           "ResponseSettings", "BaseResponder", "http_date", "wall_time",
           "reason_of", "check_status", "clean_statuses", "clean_heads", "check_headers",
           "drop_hop_by_hop", "body_bytes"]

logger: Final = logging.getLogger("hio_http.server")
# time.time as a constant: compiled code here and in modules importing it calls it directly
wall_time: Final = time.time

Header = tuple[str, str]  # a response field: (name, value), both text

# Final: the compiled build reads these as constants, not by name from the module.
DONE: Final = "done"
WAITING: Final = "waiting"
BLOCKED: Final = "blocked"

DEFAULT_SERVER: Final = b"Server: hio_http\r\n"

# RFC 9110 §7.6.1: connection-specific fields are the server's business, not the app's. An
# app's `Connection: close` is honoured (the server writes it, once); the rest are dropped.
HOP_BY_HOP: Final = frozenset({"connection", "keep-alive", "proxy-connection", "te",
                               "trailer", "transfer-encoding", "upgrade"})
_warned_hop_by_hop: set[str] = set()  # names already warned of: one WARNING per name per process
STATUS: Final = re.compile(r"[1-9][0-9][0-9] [^\r\n]*\Z")

REASONS: Final = {
    400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
    414: "URI Too Long", 417: "Expectation Failed", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "HTTP Version Not Supported"}

# The response fields send_head looks for; any other is 0.
_LENGTH: Final = 1
_DATE: Final = 2
_SERVER: Final = 3
_FIELD_KINDS: Final = {"content-length": _LENGTH, "date": _DATE, "server": _SERVER}

# Response fields found valid and not hop-by-hop, (name, value) -> (the line on the wire, its
# kind above): an app sends the same few fields again and again, so each is checked and
# encoded once. Bounded, and only short values (no session cookies piling up).
_clean_headers: Final[dict[Header, tuple[bytes, int]]] = {}
MAX_CLEAN_HEADERS: Final = 4096
MAX_CLEAN_VALUE: Final = 256
# status lines found valid (a caller may skip check_status)
clean_statuses: Final[set[str]] = set()
# status -> (its code, its line on the wire)
_status_lines: Final[dict[str, tuple[int, bytes]]] = {}

# The start of a head (status line and fields) as send_head uses it, by its status and fields
# (a tuple: the status, then each field): (code, the bytes, the Content-Length given or None,
# whether a Date field and a Server field were given). Only clean fields, so bounded likewise;
# a status and fields found here need no checks (start_response skips them).
HeadStart = tuple[int, bytes, Optional[int], bool, bool]
clean_heads: Final[dict[tuple[object, ...], HeadStart]] = {}

# (the second it was made for, the Date line), replaced whole: a thread reads a matching pair
_date_line: Final[list[tuple[int, bytes]]] = [(0, b"")]


def http_date() -> bytes:
    """The Date header line, reformatted at most once a second."""
    now = int(wall_time())
    if now != _date_line[0][0]:
        _date_line[0] = (now, b"Date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n")
    return _date_line[0][1]


class ResponseSettings:
    """What every response of one server shares, made once with the server: its Server line, how
    much may wait unsent before a body is pulled no further, and gzip as the server is set."""

    __slots__ = ("server_header", "high_water", "compression", "compression_asked")

    def __init__(self, server_header: bytes = DEFAULT_SERVER, high_water: int = 64 * 1024,
                 compression: Compression = Compression(), compress: bool = False):
        self.server_header = server_header  # the whole line; b"": none is sent
        self.high_water = high_water
        # The policy for a response that does not choose (None: identity), and for one that
        # asks for gzip itself (a bare answer's compress=True), which covers event streams too.
        self.compression = compression if compress else None
        self.compression_asked = dataclasses.replace(compression, event_streams=True)


@mypyc_attr(allow_interpreted_subclasses=True)
class BaseResponder:
    """Frames and sends one response to `request` on `connection`; subclasses supply status,
    headers and body. Alone it sends only `send_error`'s answers."""

    # Defaults every response starts from, kept on the class: a response sets only what differs.
    status = ""  # "200 OK" and the like; "" until known (a WSGI app's start_response)
    head_sent = False
    broken = False  # the response could not be completed after its head went out
    length: Optional[int] = None  # declared Content-Length
    sent = 0  # body bytes sent
    chunked = False
    closed = False
    compression: Optional[Compression] = None  # the policy in force; None: identity
    encoder: Optional[GzipStream] = None  # set once the body is being gzipped
    raw_length: Optional[int] = None  # the app's Content-Length, before gzip
    raw_sent = 0  # body bytes taken from the app, before gzip
    iterator: Optional[Iterator[object]] = None  # the body's items, as they are pulled
    # The encoded head of `status` and `headers`, when start_response already found it among
    # the clean ones; None: send_head looks it up (or builds it).
    head: Optional[HeadStart] = None

    def __init__(self, connection: Outlet, request: Request, settings: ResponseSettings):
        self.connection = connection  # a net.Connection, or an app thread's Relay
        self.request = request
        self.server_header = settings.server_header
        self.high_water = settings.high_water
        self.headers: list[Header] = []
        self.keep_alive = request.keep_alive
        self.bodiless = request.method == "HEAD"
        if settings.compression is not None:
            self.compression = settings.compression

    @property
    def working(self) -> bool:
        """The app works on this response off the loop (see threaded.ThreadedResponder)."""
        return False

    @property
    def queued(self) -> bool:
        """It waits for a free app thread (see threaded.ThreadedResponder)."""
        return False

    def describe(self) -> str:
        """The request answered, as a log line names it."""
        return f"{self.request.method} {self.request.target}"

    def compresses(self, size: Optional[int]) -> bool:
        """Whether the body (of `size` bytes, if known) would go out gzipped."""
        if self.compression is None or not self.status:
            return False
        return choose_coding(self.compression, int(self.status[:3]), self.headers,
                             self._accept_encoding(), size)[1]

    def _accept_encoding(self) -> Optional[str]:
        return self.request.header("accept-encoding")

    def _negotiate(self, policy: Compression, code: int, body: bytes, last: bool) -> bytes:
        """Choose the content coding as the head goes out; returns the body to frame."""
        declared = header_value(self.headers, "content-length")
        size = len(body) if last else (int(declared) if declared else None)
        varies, compress = choose_coding(policy, code, self.headers, self._accept_encoding(),
                                         size)
        if not varies:
            return body
        self.headers = compressed_headers(self.headers, varies, compress)
        self.head = None
        if not compress:
            return body
        if last:  # the whole body at once: one gzip member, framed by its Content-Length
            return GzipStream.whole(body, policy.level)
        self.encoder = GzipStream(policy.level)
        self.raw_length = size
        return body

    # -- framing ------------------------------------------------------------------------------

    def send_head(self, body: bytes = b"", last: bool = False) -> None:
        """Send status line and headers, with `body` if given; `last` means body is all of it."""
        compression = self.compression
        if compression is not None:
            body = self._negotiate(compression, _status_line(self.status)[0], body, last)
        head = self.head
        if head is None:
            try:
                head = clean_heads.get((self.status, *self.headers))
            except TypeError:  # an app changed its list after start_response
                head = None
            if head is None:
                head = _head_start(self.status, self.headers)
        code, start, length, has_date, has_server = head
        if code < 200 or code in (204, 304):
            self.bodiless = True
        if length is not None:
            self.length = length
        lines = [start]
        if not has_date:  # the Date line of this second, made by the first head in it
            date = _date_line[0]
            lines.append(date[1] if date[0] == int(wall_time()) else http_date())
        if not has_server:
            lines.append(self.server_header)
        if self.length is None and (not self.bodiless or last and self.request.method == "HEAD"
                                    and code >= 200 and code not in (204, 304)):
            if last:  # the whole body is known: its length frames it (for HEAD, GET's length)
                self.length = len(body)
                lines += (b"Content-Length: ", str(self.length).encode(), b"\r\n")
            elif self.request.version == "1.1":
                self.chunked = True
                lines.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep_alive = False  # HTTP/1.0 without a length: the close ends the body
        if not self.keep_alive:
            lines.append(b"Connection: close\r\n")
        elif self.request.version == "1.0":
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        self.head_sent = True
        if body and not self.bodiless:
            if self.encoder is None and self.length is not None and len(body) <= self.length:
                self.sent = len(body)  # the usual whole body: nothing to cut or encode
                lines.append(body)
            else:
                lines.append(self._frame(body))
        self.connection.send(b"".join(lines))

    def send_body(self, data: bytes) -> None:
        if not self.bodiless and data:
            self.connection.send(self._frame(data))

    def _frame(self, data: bytes) -> bytes:
        encoder = self.encoder
        if encoder is not None:
            data = self._encode(encoder, data)
        return self._wire(data)

    def _encode(self, encoder: GzipStream, data: bytes) -> bytes:
        """Gzip one item, flushed; the app's own Content-Length still bounds what it sends."""
        if self.raw_length is not None:
            room = self.raw_length - self.raw_sent
            if len(data) > room:
                logger.error("app sent more than its Content-Length (%d); extra bytes dropped",
                             self.raw_length)
                data = data[:room]
        self.raw_sent += len(data)
        return encoder.compress(data) if data else b""

    def _wire(self, data: bytes) -> bytes:
        """Frame body bytes as the head announced: as they are, or as one chunk."""
        if not data:
            return b""  # an empty chunk would end a chunked body
        if self.length is not None:
            room = self.length - self.sent
            if len(data) > room:  # never send more than declared: it would corrupt the stream
                logger.error("app sent more than its Content-Length (%d); extra bytes dropped",
                             self.length)
                data = data[:room]
                self.keep_alive = False
            self.sent += len(data)
            return data
        self.sent += len(data)
        if self.chunked:
            return b"%x\r\n%b\r\n" % (len(data), data)
        return data

    def finish(self) -> None:
        """End the body properly, or mark the response broken if it came up short."""
        if self.bodiless:
            return
        if self.encoder is not None:
            tail, self.encoder = self.encoder.finish(), None
            self.connection.send(self._wire(tail))
            if self.raw_length is not None and self.raw_sent < self.raw_length:
                logger.error("app sent %d of its Content-Length %d bytes; closing the "
                             "connection", self.raw_sent, self.raw_length)
                self.broken = True
                self.keep_alive = False
                return
        if self.chunked:
            self.connection.send(b"0\r\n\r\n")
        elif self.length is not None and self.sent < self.length:
            logger.error("app sent %d of its Content-Length %d bytes; closing the connection",
                         self.sent, self.length)
            self.broken = True
            self.keep_alive = False

    def end_now(self) -> None:
        """End a body that waits for data ("not yet") here, properly framed: the server is
        draining and will not wait for the rest (an event stream's client reconnects)."""
        self.finish()

    def send_error(self, code: int, message: str = "") -> None:
        """A plain-text error response that closes the connection (nothing sent yet)."""
        self.keep_alive = False
        self.bodiless = self.request.method == "HEAD"
        self.compression = self.encoder = None
        self.status = f"{code} {REASONS.get(code, 'Error')}"
        body = (message or REASONS.get(code, "Error")).encode("utf-8") + b"\n"
        self.headers = [("Content-Type", "text/plain; charset=utf-8"),
                        ("Content-Length", str(len(body)))]
        self.head = None
        self.length = None
        self.chunked = False
        self.send_head(body, last=True)

    # -- the protocol the Steward drives ------------------------------------------------------

    def start(self) -> None:
        raise NotImplementedError

    def pump(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True

    def park(self, wake: Callable[[], None]) -> tuple[bool, Optional[float]]:
        """The body said "not yet": may it wake the server itself instead of being asked again
        on every pass? A body iterator with `park(wake)` (an SSE Subscription has one) calls
        `wake()` once it has more, from any thread, and returns the seconds after which it
        wants to be asked anyway (None: only when woken). Returns (parked, those seconds)."""
        park: Optional[Callable[[Callable[[], None]], Optional[float]]]
        park = getattr(self.iterator, "park", None)
        if park is None:
            return False, None
        return True, park(wake)


def _status_line(status: str) -> tuple[int, bytes]:
    """The code of a status ("200 OK") and its line on the wire."""
    line = _status_lines.get(status)
    if line is None:
        line = (int(status[:3]), b"HTTP/1.1 " + status.encode("latin-1") + b"\r\n")
        if len(_status_lines) < MAX_CLEAN_HEADERS:
            _status_lines[status] = line
    return line


def _head_start(status: str, headers: list[Header]) -> HeadStart:
    """The start of a head: its status line and fields, remembered when every field was a
    clean one (then the same status and fields skip all of this next time)."""
    code, line = _status_line(status)
    length: Optional[int] = None
    has_date = has_server = False
    lines = [line]
    clean = True
    for header in headers:
        try:
            known = _clean_headers.get(header)
        except TypeError:  # an app changed its list after start_response
            known = None
        if known is None:
            clean = False
            name, value = header
            kind = _FIELD_KINDS.get(name.lower(), 0)
            line = name.encode("latin-1") + b": " + value.encode("latin-1") + b"\r\n"
        else:
            line, kind = known
        if kind:
            if kind == _LENGTH:
                length = int(header[1])
            elif kind == _DATE:
                has_date = True
            else:
                has_server = True
        lines.append(line)
    head = (code, b"".join(lines), length, has_date, has_server)
    if clean and type(status) is str and status in clean_statuses:  # all of it checked
        if len(clean_heads) >= MAX_CLEAN_HEADERS:
            clean_heads.clear()  # the heads in use come back at once
        clean_heads[(status, *headers)] = head
    return head


def reason_of(code: int) -> str:
    """The reason phrase of a status code ("Unknown" for codes without one)."""
    from http import HTTPStatus
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def check_status(status: object) -> None:
    """Refuse a status that is not text like "200 OK" (from an app, so anything may be given)."""
    if type(status) is str and status in clean_statuses:
        return
    if not isinstance(status, str) or not STATUS.match(status):
        raise ValueError(f"invalid status {status!r}: expected a str like '200 OK'")
    if type(status) is str and len(clean_statuses) < MAX_CLEAN_HEADERS:
        clean_statuses.add(status)


def check_headers(headers: object) -> bool:
    """Refuse header lists that would corrupt or split the response (they come from an app,
    so anything may be given). True when every field was seen before, valid and not
    hop-by-hop (see `_clean_headers`): nothing is left to drop."""
    if not isinstance(headers, list):
        raise TypeError(f"response headers must be a list, not {type(headers).__name__}")
    known = True
    for item in headers:
        try:
            if item in _clean_headers:
                continue
        except TypeError:  # unhashable: not a (str, str) tuple, which the checks below say
            pass
        known = False
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError(f"response header {item!r} is not a (name, value) tuple")
        name, value = item
        if not isinstance(name, str):
            raise ValueError(f"invalid response header name {name!r}")
        if not isinstance(value, str):
            raise TypeError(f"response header {name} value must be str, not "
                            f"{type(value).__name__}")
        check_field(name, value, "response header")
        _remember_clean(item)
    return known


def _remember_clean(item: Header) -> None:
    """Keep a checked field for next time, with its wire form: most responses repeat them."""
    name, value = item
    if type(item) is not tuple or type(name) is not str or type(value) is not str:
        return  # subclasses may compare equal to what they do not encode to
    lower = name.lower()
    if (lower not in HOP_BY_HOP and len(value) <= MAX_CLEAN_VALUE
            and len(_clean_headers) < MAX_CLEAN_HEADERS):
        line = name.encode("latin-1") + b": " + value.encode("latin-1") + b"\r\n"
        _clean_headers[item] = (line, _FIELD_KINDS.get(lower, 0))


def drop_hop_by_hop(headers: list[Header]) -> tuple[list[Header], bool]:
    """The headers without hop-by-hop fields (PEP 3333, RFC 9110 §7.6.1), and whether they asked
    for `Connection: close`. That one is honoured: the response ends the connection and the
    server sends the header itself, once. The others are the server's to set (it frames the
    body and keeps the connection) and are dropped, with one WARNING per name per process."""
    if not any(name.lower() in HOP_BY_HOP for name, _ in headers):
        return headers, False
    kept: list[Header] = []
    close = False
    for name, value in headers:
        lower = name.lower()
        if lower not in HOP_BY_HOP:
            kept.append((name, value))
            continue
        if lower == "connection" and "close" in list_members(value):
            close = True
            continue
        if lower not in _warned_hop_by_hop:
            _warned_hop_by_hop.add(lower)
            logger.warning("dropped hop-by-hop header %r from a response: the server frames the "
                           "body and manages the connection (warned once per name)", name)
    return kept, close


def body_bytes(item: object, what: str) -> bytes:
    """A body item as bytes: bytes-like objects are accepted, anything else (str included:
    its encoding is the app's choice) is a TypeError saying what was given."""
    if isinstance(item, BYTES_LIKE):
        return bytes(item)
    hint = " (encode text first, e.g. text.encode('utf-8'))" if isinstance(item, str) else ""
    raise TypeError(f"{what} {type(item).__name__}, not a bytes-like object{hint}")
