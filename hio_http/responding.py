"""Writers of responses: `Responder` runs a WSGI app (PEP 3333), `CustomResponder` sends a bare
status, headers and body. Both frame the body the same way (Content-Length, chunked or
close-delimited) and pull it only while the connection's send buffer is under its high-water mark.

A responder never blocks and never reads the socket; an app's item of b"" means "not yet".
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
import io
import json
import logging
import re
import sys
import time
from email.utils import formatdate
from typing import Callable, Iterable, Iterator, Optional, Protocol
from urllib.parse import unquote_to_bytes

from .compression import Compression, GzipStream, choose_coding, compressed_headers, header_value
from .grammar import check_field

logger = logging.getLogger("hio_http.server")
wsgi_logger = logging.getLogger("hio_http.wsgi")

DONE, WAITING, BLOCKED = "done", "waiting", "blocked"

SERVER_SOFTWARE = "hio_http"
DEFAULT_SERVER = b"Server: hio_http\r\n"

# RFC 9110 §7.6.1: connection-specific fields are the server's business, not the app's. An
# app's `Connection: close` is honoured (the server writes it, once); the rest are dropped.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade"})
BYTES_LIKE = (bytes, bytearray, memoryview)
_warned_hop_by_hop: set = set()  # names already warned of: one WARNING per name per process
STATUS = re.compile(r"[1-9][0-9][0-9] [^\r\n]*\Z")

REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
           414: "URI Too Long", 417: "Expectation Failed", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}

# The response fields send_head looks for; any other is 0.
_LENGTH, _DATE, _SERVER = 1, 2, 3
_FIELD_KINDS = {"content-length": _LENGTH, "date": _DATE, "server": _SERVER}

# Response fields found valid and not hop-by-hop, (name, value) -> (the line on the wire, its
# kind above): an app sends the same few fields again and again, so each is checked and
# encoded once. Bounded, and only short values (no session cookies piling up).
_clean_headers: dict = {}
MAX_CLEAN_HEADERS = 4096
MAX_CLEAN_VALUE = 256
_clean_statuses: set = set()  # status lines found valid
_status_lines: dict = {}  # status -> (its code, its line on the wire)

_date_cache = [0, b""]


def http_date() -> bytes:
    """The Date header line, reformatted at most once a second."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0] = now
        _date_cache[1] = b"Date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
    return _date_cache[1]


class Outlet(Protocol):
    """Where a responder writes: a net.Connection, or a threaded.Relay for an app thread."""

    closed: bool
    tls: bool

    @property
    def pending(self) -> int:
        """Bytes queued and not yet sent."""

    def send(self, data: bytes) -> None: ...

    def sendfile(self, fd: int, offset: int, count: int) -> None: ...


class BaseResponder:
    """Frames and sends one response on a Connection; subclasses supply status, headers, body."""

    high_water = 64 * 1024
    # Defaults every response starts from, kept on the class: a response sets only what differs.
    status: Optional[str] = None
    head_sent = False
    keep_alive = False
    broken = False  # the response could not be completed after its head went out
    length: Optional[int] = None  # declared Content-Length
    sent = 0  # body bytes sent
    chunked = False
    bodiless = False
    closed = False
    compress: Optional[bool] = None  # None: as the server is set; True / False: always
    compression: Optional[Compression] = None  # the policy in force; None: identity
    encoder: Optional[GzipStream] = None  # set once the body is being gzipped
    raw_length: Optional[int] = None  # the app's Content-Length, before gzip
    raw_sent = 0  # body bytes taken from the app, before gzip

    def __init__(self, connection=None, request=None, server_header: bytes = DEFAULT_SERVER):
        self.connection: Optional[Outlet] = None  # a net.Connection, or an app thread's Relay
        self.request = None
        self.server_header = server_header
        self.headers: list = []
        if connection is not None:
            self.attach(connection, request, server_header)

    def attach(self, connection, request, server_header: bytes = DEFAULT_SERVER) -> None:
        """Bind to the connection and the request this responder answers."""
        self.connection = connection
        self.request = request
        self.server_header = server_header
        self.keep_alive = bool(request.keep_alive)
        self.bodiless = request.method == "HEAD"

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
        request = self.request
        return f"{request.method} {request.target}" if request is not None else "a response"

    def use_compression(self, policy: Compression, server_compresses: bool) -> None:
        """Take the server's policy, unless this responder chose for itself (`compress`).
        A responder that asks for compression also gets it for text/event-stream."""
        if self.compress is None:
            self.compression = policy if server_compresses else None
        elif self.compress:
            self.compression = dataclasses.replace(policy, event_streams=True)
        else:
            self.compression = None

    def compresses(self, size: Optional[int]) -> bool:
        """Whether the body (of `size` bytes, if known) would go out gzipped."""
        if self.compression is None or self.status is None:
            return False
        return choose_coding(self.compression, int(self.status[:3]), self.headers,
                             self._accept_encoding(), size)[1]

    def _accept_encoding(self) -> Optional[str]:
        header = getattr(self.request, "header", None)
        return header("accept-encoding") if header is not None else None

    def _negotiate(self, code: int, body: bytes, last: bool) -> bytes:
        """Choose the content coding as the head goes out; returns the body to frame."""
        declared = header_value(self.headers, "content-length")
        size = len(body) if last else (int(declared) if declared else None)
        varies, compress = choose_coding(self.compression, code, self.headers,
                                         self._accept_encoding(), size)
        if not varies:
            return body
        self.headers = compressed_headers(self.headers, varies, compress)
        if not compress:
            return body
        if last:  # the whole body at once: one gzip member, framed by its Content-Length
            return GzipStream.whole(body, self.compression.level)
        self.encoder = GzipStream(self.compression.level)
        self.raw_length = size
        return body

    # -- framing ------------------------------------------------------------------------------

    def send_head(self, body: bytes = b"", last: bool = False) -> None:
        """Send status line and headers, with `body` if given; `last` means body is all of it."""
        status = _status_lines.get(self.status)
        if status is None:
            status = (int(self.status[:3]), b"HTTP/1.1 " + self.status.encode("latin-1") + b"\r\n")
            if len(_status_lines) < MAX_CLEAN_HEADERS:
                _status_lines[self.status] = status
        code = status[0]
        if code < 200 or code in (204, 304):
            self.bodiless = True
        if self.compression is not None:
            body = self._negotiate(code, body, last)
        has_date = has_server = False
        lines = [status[1]]
        for header in self.headers:
            try:
                known = _clean_headers.get(header)
            except TypeError:  # an app changed its list after start_response
                known = None
            if known is None:
                name, value = header
                kind = _FIELD_KINDS.get(name.lower(), 0)
                line = name.encode("latin-1") + b": " + value.encode("latin-1") + b"\r\n"
            else:
                line, kind = known
            if kind:
                if kind == _LENGTH:
                    self.length = int(header[1])
                elif kind == _DATE:
                    has_date = True
                else:
                    has_server = True
            lines.append(line)
        if not has_date:
            lines.append(http_date())
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
        if self.encoder is not None:
            data = self._encode(data)
        return self._wire(data)

    def _encode(self, data: bytes) -> bytes:
        """Gzip one item, flushed; the app's own Content-Length still bounds what it sends."""
        if self.raw_length is not None:
            room = self.raw_length - self.raw_sent
            if len(data) > room:
                logger.error("app sent more than its Content-Length (%d); extra bytes dropped",
                             self.raw_length)
                data = data[:room]
        self.raw_sent += len(data)
        return self.encoder.compress(data) if data else b""

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
        park = getattr(getattr(self, "iterator", None), "park", None)
        if park is None:
            return False, None
        return True, park(wake)


class Responder(BaseResponder):
    """Runs a WSGI application for one request (PEP 3333)."""

    def __init__(self, connection, request, app, environ: dict, **kwa):
        super().__init__(connection, request, **kwa)
        self.app = app
        self.environ = environ
        self.result: Optional[Iterable] = None
        self.iterator: Optional[Iterator] = None
        self.pending_head = False  # start_response was called; head not yet sent

    def start_response(self, status: str, headers: list, exc_info=None):
        if exc_info:
            try:
                if self.head_sent:  # too late to change anything: let it propagate (PEP 3333)
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        if type(status) is not str or status not in _clean_statuses:  # else known valid
            check_status(status)
        if not check_headers(headers):  # some field is new: maybe hop-by-hop
            headers, close = drop_hop_by_hop(headers)
            if close:
                self.keep_alive = False
        self.status, self.headers = status, headers
        self.pending_head = True
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy write() callable: sends at once (the buffer may pass its high-water mark)."""
        if self.status is None:
            raise AssertionError("write() called before start_response()")
        self._out(body_bytes(data, "write() was given"))

    def _out(self, data: bytes, last: bool = False) -> None:
        if not self.head_sent:
            self.pending_head = False
            self.send_head(data, last=last)
        else:
            self.send_body(data)

    def start(self) -> None:
        try:
            self.result = self.app(self.environ, self.start_response)
            if type(self.result) is FileWrapper and self._send_whole_file():
                return
            self.iterator = iter(self.result)
        except Exception:
            self.fail()

    def _send_whole_file(self) -> bool:
        """A wsgi.file_wrapper of a regular file on plain TCP goes out by os.sendfile, straight
        from the page cache; under TLS (or for other file-likes) it is read in blocks."""
        result = self.result
        if (type(result) is not FileWrapper or self.connection.tls or self.status is None
                or self.pending_head is False):
            return False
        fd, offset, size = regular_file_span(result.filelike)
        if fd is None or self.compresses(size):  # gzip needs the bytes: read them in blocks
            return False
        if self.length_header() is None:
            self.headers.append(("Content-Length", str(size)))
        self.send_head(b"")
        count = min(size, self.length) if self.length is not None else size
        if not self.bodiless:
            self.connection.sendfile(fd, offset, count)
            self.sent = count
        self.iterator = iter(())
        self.finish()
        return True

    def length_header(self) -> Optional[str]:
        for name, value in self.headers:
            if name.lower() == "content-length":
                return value
        return None

    def pump(self) -> str:
        if self.iterator is None:  # the app failed
            return DONE
        result = self.result
        if (type(result) is list and len(result) == 1 and type(result[0]) is bytes
                and not self.head_sent and self.status is not None
                and self.connection.pending < self.high_water and not self.connection.closed):
            return self._send_whole(result[0])
        try:
            return self._pull()
        except Exception:
            self.fail()
            return DONE

    def _send_whole(self, body: bytes) -> str:
        """The common answer, a one-item list: head and body in one send, no iteration."""
        try:
            self.iterator = iter(())  # the item is taken
            self.pending_head = False
            self.send_head(body, last=True)  # the head is not out yet: pump() checked
            if self.bodiless or self.connection.pending < self.high_water:
                self.finish()
                return DONE
            return BLOCKED  # finished on the pump after the drain, as the loop would
        except Exception:
            self.fail()
            return DONE

    def _pull(self) -> str:
        connection = self.connection
        sized = isinstance(self.result, (list, tuple))
        while connection.pending < self.high_water:
            if connection.closed:
                return DONE
            try:
                chunk = next(self.iterator)
            except StopIteration:
                if self.status is None:
                    raise AssertionError("the app returned without calling start_response()")
                if not self.head_sent:
                    self._out(b"", last=True)
                self.finish()
                return DONE
            if type(chunk) is not bytes:
                chunk = body_bytes(chunk, "the app yielded")
            if not chunk:
                if sized:
                    continue
                return WAITING
            if self.status is None:
                raise AssertionError("the app yielded body bytes before start_response()")
            # A one-item list is the whole body: send it with a Content-Length, in one write.
            self._out(chunk, last=sized and len(self.result) == 1)
            if self.bodiless:  # HEAD, 204, 304: the rest of the body would be discarded anyway
                self.finish()
                return DONE
        return BLOCKED

    def fail(self) -> None:
        """The app raised: log it; answer 500 if nothing went out yet, else break the response."""
        logger.error("error in WSGI app for %s %s", self.request.method, self.request.target,
                     exc_info=sys.exc_info())
        self.iterator = None
        if self.head_sent:
            self.broken = True
            self.keep_alive = False
        else:
            self.send_error(500)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        close = getattr(self.result, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                logger.exception("error closing the WSGI app's iterable")


class CustomResponder(BaseResponder):
    """A bare response for a Steward to return: `status` (code or "200 OK"), `headers` (list of
    pairs or a dict; values str, bytes-like or int), and either `body` (bytes-like, or an
    iterable of bytes-like items where b"" means "not yet", for streaming) or `data` (sent as
    JSON). `Connection: close` ends the connection after this response. `compress=True` gzips
    it whenever the client accepts gzip and the type is text-like (event streams included),
    `False` never; by default the server's `compress` setting decides. The Steward attaches it
    to its connection."""

    def __init__(self, status=200, headers=None, body=b"", data=None,
                 compress: Optional[bool] = None, **kwa):
        super().__init__(**kwa)
        self.compress = compress
        code = int(str(status)[:3])
        self.status = str(status) if " " in str(status) else f"{code} {reason_of(code)}"
        pairs = headers.items() if isinstance(headers, dict) else headers or []
        self.headers = [(name, header_text(name, value)) for name, value in pairs]
        if data is not None:
            body = json.dumps(data, separators=(",", ":")).encode("utf-8")
            if not any(name.lower() == "content-type" for name, _ in self.headers):
                self.headers.append(("Content-Type", "application/json"))
        check_status(self.status)
        check_headers(self.headers)
        self.headers, self.close_asked = drop_hop_by_hop(self.headers)
        self.whole = isinstance(body, BYTES_LIKE)
        if self.whole:
            self.iterator = iter([bytes(body)])
        elif isinstance(body, str) or not hasattr(body, "__iter__"):
            raise TypeError(f"CustomResponder body must be bytes-like or an iterable of "
                            f"bytes-like items, not {type(body).__name__}")
        else:
            self.iterator = iter(body)
        self.body = body

    def attach(self, connection, request, server_header: bytes = DEFAULT_SERVER) -> None:
        super().attach(connection, request, server_header)
        if self.close_asked:
            self.keep_alive = False

    def start(self) -> None:
        pass

    def pump(self) -> str:
        if self.bodiless and not self.head_sent:  # HEAD: the head alone, without the body
            self.send_head(bytes(self.body) if self.whole else b"", last=self.whole)
            self.finish()
            return DONE
        try:
            while self.connection.pending < self.high_water:
                if self.connection.closed:
                    return DONE
                try:
                    chunk = next(self.iterator)
                except StopIteration:
                    if not self.head_sent:
                        self.send_head(b"", last=True)
                    self.finish()
                    return DONE
                if type(chunk) is not bytes:
                    chunk = body_bytes(chunk, "the response body yielded")
                if not chunk:
                    if not self.whole:
                        return WAITING
                    continue
                if self.head_sent:
                    self.send_body(chunk)
                else:
                    self.send_head(chunk, last=self.whole)
                if self.bodiless:  # HEAD, 204, 304: the rest would be discarded anyway
                    self.finish()
                    return DONE
            return BLOCKED
        except Exception:
            logger.exception("error in response body for %s", self.request.target)
            if self.head_sent:
                self.broken, self.keep_alive = True, False
            else:
                self.send_error(500)
            return DONE

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            close = getattr(self.body, "close", None)
            if close is not None and not self.whole:
                close()


def reason_of(code: int) -> str:
    from http import HTTPStatus
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def check_status(status) -> None:
    if type(status) is str and status in _clean_statuses:
        return
    if not isinstance(status, str) or not STATUS.match(status):
        raise ValueError(f"invalid status {status!r}: expected a str like '200 OK'")
    if type(status) is str and len(_clean_statuses) < MAX_CLEAN_HEADERS:
        _clean_statuses.add(status)


def check_headers(headers) -> bool:
    """Refuse header lists that would corrupt or split the response. True when every field was
    seen before, valid and not hop-by-hop (see `_clean_headers`): nothing is left to drop."""
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


def _remember_clean(item: tuple) -> None:
    """Keep a checked field for next time, with its wire form: most responses repeat them."""
    name, value = item
    if type(item) is not tuple or type(name) is not str or type(value) is not str:
        return  # subclasses may compare equal to what they do not encode to
    lower = name.lower()
    if (lower not in HOP_BY_HOP and len(value) <= MAX_CLEAN_VALUE
            and len(_clean_headers) < MAX_CLEAN_HEADERS):
        line = name.encode("latin-1") + b": " + value.encode("latin-1") + b"\r\n"
        _clean_headers[item] = (line, _FIELD_KINDS.get(lower, 0))


def drop_hop_by_hop(headers: list) -> tuple[list, bool]:
    """The headers without hop-by-hop fields (PEP 3333, RFC 9110 §7.6.1), and whether they asked
    for `Connection: close`. That one is honoured: the response ends the connection and the
    server sends the header itself, once. The others are the server's to set (it frames the
    body and keeps the connection) and are dropped, with one WARNING per name per process."""
    if not any(name.lower() in HOP_BY_HOP for name, _ in headers):
        return headers, False
    kept, close = [], False
    for name, value in headers:
        lower = name.lower()
        if lower not in HOP_BY_HOP:
            kept.append((name, value))
            continue
        if lower == "connection" and "close" in (t.strip().lower() for t in value.split(",")):
            close = True
            continue
        if lower not in _warned_hop_by_hop:
            _warned_hop_by_hop.add(lower)
            logger.warning("dropped hop-by-hop header %r from a response: the server frames the "
                           "body and manages the connection (warned once per name)", name)
    return kept, close


def header_text(name: str, value: object) -> str:
    """A header value as text whose latin-1 encoding is what goes on the wire: str as it is,
    bytes-like as those exact bytes, int in decimal. Anything else is a TypeError, never
    str(value), which would send "bytearray(b'...')" or "None" without a word."""
    if isinstance(value, str):
        return value
    if isinstance(value, BYTES_LIKE):
        return bytes(value).decode("latin-1")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"header {name} value must be str, bytes-like or int, not "
                    f"{type(value).__name__}")


def body_bytes(item, what: str) -> bytes:
    """A body item as bytes: bytes-like objects are accepted, anything else (str included:
    its encoding is the app's choice) is a TypeError saying what was given."""
    if isinstance(item, BYTES_LIKE):
        return bytes(item)
    hint = " (encode text first, e.g. text.encode('utf-8'))" if isinstance(item, str) else ""
    raise TypeError(f"{what} {type(item).__name__}, not a bytes-like object{hint}")


class ErrorStream:
    """wsgi.errors: what the app writes goes to the `hio_http.wsgi` logger, line by line."""

    def __init__(self):
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            wsgi_logger.error(line)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._partial:
            wsgi_logger.error(self._partial)
            self._partial = ""


class FileWrapper:
    """wsgi.file_wrapper: iterates a file in blocks and closes it with the response."""

    def __init__(self, filelike, block_size: int = 64 * 1024):
        self.filelike = filelike
        self.block_size = block_size
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self):
        read = self.filelike.read
        while True:
            block = read(self.block_size)
            if not block:
                return
            yield block


def regular_file_span(filelike) -> tuple:
    """(descriptor, current offset, bytes left) of a regular file, or (None, 0, 0)."""
    import os
    import stat
    try:
        fd = filelike.fileno()
        info = os.fstat(fd)
        offset = filelike.tell()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None, 0, 0
    if not stat.S_ISREG(info.st_mode):
        return None, 0, 0
    return fd, offset, max(0, info.st_size - offset)


_environ_keys: dict = {}


def environ_key(name: str) -> Optional[str]:
    """HTTP_* key of a request header; None for names with '_' (they could spoof '-' names)."""
    key = _environ_keys.get(name)
    if key is None:
        if "_" in name:
            return None
        key = "HTTP_" + name.upper().replace("-", "_")
        if len(_environ_keys) < 4096:
            _environ_keys[name] = key
    return key


def build_environ(base: dict, request, root_path: str = "") -> dict:
    """The WSGI environ of `request` on top of the per-connection `base` (PEP 3333)."""
    environ = base.copy()
    path = request.path
    if "%" in path:
        path = unquote_to_bytes(path).decode("latin-1")
    if root_path and (path == root_path or path.startswith(root_path + "/")):
        environ["SCRIPT_NAME"] = root_path
        path = path[len(root_path):]
    environ["REQUEST_METHOD"] = request.method
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = request.query
    environ["RAW_URI"] = environ["REQUEST_URI"] = request.target
    environ["SERVER_PROTOCOL"] = "HTTP/" + request.version
    environ["wsgi.input"] = request.body
    # PEP 3333 has no place for trailer fields; the body is complete before the app runs, so
    # they are all here: [(name, value), ...], empty unless a chunked body carried some.
    environ["hio_http.trailers"] = request.trailers
    for name, value in request.headers:
        lower = name.lower()
        if lower == "content-type":
            environ["CONTENT_TYPE"] = value
            continue
        if lower == "content-length":
            continue
        key = environ_key(name)
        if key is None:
            continue
        if key in environ:
            separator = "; " if key == "HTTP_COOKIE" else ", "
            environ[key] = environ[key] + separator + value
        else:
            environ[key] = value
    if request.content_length is not None or request.chunked:
        environ["CONTENT_LENGTH"] = str(request.body_size)
    return environ
