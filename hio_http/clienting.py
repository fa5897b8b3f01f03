"""A nonblocking HTTP/1.1 client on the doer loop: `Client` queues requests and hands back
`Response`s that fill in as bytes arrive; `ClientDoer` services it in a Doist; `EventStream`
follows a Server-Sent Events stream and reconnects. Nothing here blocks the loop, and no network
failure is ever raised into it: each lands on its response as a `ClientError`.
"""

# Theory of operation
# -------------------
# `ResponseParser` (client_parsing.py) is the pure protocol core: bytes in, events out (Interim,
# Head, Data, End), no sockets and no clock. It drives llhttp (httptools) and adds what llhttp
# cannot know: which response answers a HEAD (no body whatever the headers say), where a
# close-delimited body ends (at EOF), and our bounds on the head.
#
# A Client keeps a queue of exchanges (a request and its Response) and one `Session`, its
# keep-alive connection. A session is
#   connecting  resolve, nonblocking connect, TLS handshake                   [connect timeout]
#   ready       sends queued exchanges; each waits in `in_flight` for its response, in order
#   closed      its unanswered exchanges went back to its owner
# Pipelining starts once the connection proved persistent (an HTTP/1.1 keep-alive response),
# up to `max_pipeline` requests, never behind a non-idempotent request or one that waits for
# 100 Continue (RFC 9112 §9.3.2). When a connection closes with exchanges in flight, those that
# saw no byte of their response and are idempotent go back to the front of the queue (at most
# MAX_ATTEMPTS sends) if their body can be sent again (an iterable already begun cannot); the
# others fail with ConnectionLost, because the server may have acted on them. Every exchange has a deadline [timeout]; one that passes in flight also closes its
# connection, since the responses behind it can no longer be told apart.
# A streamed request body (client_bodies.RequestBody) goes out after its head, pulled while
# the link's send buffer is under `high_water`: on `drained()`, and on each turn after the
# source said "not yet"; nothing is sent behind it until it is complete. A streamed response
# (ResponseStream) pauses the link's reading while its consumer leaves `high_water` untaken.
# Socket work runs in Poller callbacks, so a response is handled the moment its bytes arrive;
# `service()`, once a turn, checks deadlines and (with a Poller of its own) polls it.
# An EventStream has a session of its own, since its response never ends; when it does end, or
# the connection drops, the stream reconnects after `retry` ms with Last-Event-ID.
# A WebSocketClient (websocket_client.py) has one too, and takes its link over once it is up.
# Both stand in `client.streams`, which the client starts (`_start`), services every turn
# (`_service(now)`) and closes (`close()`) with itself.

from __future__ import annotations

import collections
import errno
import ipaddress
import json as json_codec
import logging
import os
import socket
import ssl
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Sequence, Union
from urllib.parse import urljoin, urlsplit

from .client_bodies import (BodyError, BodyWriter, FileTarget, RequestBody, ResponseStream,
                           Source)
from .client_parsing import (ClientError, ClientTimeout, ConnectError, ConnectionLost,
                             ConnectTimeout, Data, End, Event, EventParser, Head, Interim,
                             ProtocolError, ResponseParser, TooManyRedirects, _tokens)
from .compression import DECODABLE, DecodeError, Inflater
from .doing import Doer
from .grammar import check_field, is_token
from .net import RECEIVE_SIZE, Connection
from .polling import READ, WRITE, Poller, join_loop, leave_loop
from .responding import header_text  # one rule for header values, requests and responses

if TYPE_CHECKING:
    from .websocket_client import WebSocketClient

logger = logging.getLogger("hio_http.client")

__all__ = ["Client", "ClientDoer", "Response", "EventStream", "Event", "ResponseParser",
           "EventParser", "Interim", "Head", "Data", "End", "ClientError", "ConnectError",
           "ClientTimeout", "ConnectTimeout", "ProtocolError", "ConnectionLost",
           "TooManyRedirects", "BodyError"]

IDEMPOTENT = frozenset(("GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"))
REDIRECTS = frozenset((301, 302, 303, 307, 308))
MAX_ATTEMPTS = 3  # sends of one idempotent request across connections that closed under it
CONTINUE_WAIT = 1.0  # seconds to wait for 100 Continue before sending the body anyway
CONTINUE_THRESHOLD = 1024 * 1024  # larger bodies (and those of unknown length) ask first
READS_PER_WAKE = 8  # receives in a row while each fills its buffer, before polling again
UPLOAD_BUDGET = 16  # high-water marks of body one turn may send, so other work gets its turn
DEFAULT_PORTS = {"http": 80, "https": 443}

HeaderValue = Union[str, bytes, bytearray, memoryview, int]
Headers = Union[Mapping[str, HeaderValue], Iterable[tuple[str, HeaderValue]], None]
Timeout = Union[float, tuple[Optional[float], Optional[float]], None]


class Response:
    """The answer to one request, filled in as its bytes arrive.

    `done` turns True once the response is complete or has failed; then `error` is None or the
    ClientError that ended it. `headers` is the ordered list of (name, value) as sent (strings
    decoded as latin-1); `header(name)` finds one case-insensitively. After followed redirects
    `history` holds the earlier responses and `url` the final address.

    A body sent with Content-Encoding gzip or deflate is decoded as it arrives (`headers` still
    say how it came). A streamed response (`request(..., stream=True)`) gathers nothing:
    `take()` returns what has arrived (b"" when nothing new), and reading pauses while
    `buffered` is at the client's high-water mark.
    """

    def __init__(self, method: str, url: str):
        self.method = method
        self.url = url
        self.status: Optional[int] = None
        self.reason = ""
        self.version: Optional[str] = None
        self.headers: list = []
        self.trailers: list = []
        self.error: Optional[ClientError] = None
        self.done = False
        self.history: list = []
        self._chunks: list = []
        self._size = 0
        self._stream: Optional[ResponseStream] = None  # set for stream=True
        self._inflater: Optional[Inflater] = None  # a gathered body's content coding
        self._done_callbacks: list = []
        self._resume: Optional[Callable[[], None]] = None  # reading paused for a full stream

    def __repr__(self) -> str:
        state = (f"error={self.error!r}" if self.error else
                 f"{self.status} {self.reason}" if self.status else "pending")
        return f"<Response {self.method} {self.url} {state}{'' if self.done else ' ...'}>"

    @property
    def ok(self) -> bool:
        """Complete, without error, with a status below 400."""
        return self.done and self.error is None and self.status is not None and self.status < 400

    @property
    def body(self) -> bytes:
        """The body received so far (all of it once `done`)."""
        if len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0] if self._chunks else b""

    @property
    def text(self) -> str:
        """The body decoded with the charset of Content-Type (UTF-8 when none is named)."""
        charset = "utf-8"
        for parameter in (self.header("content-type") or "").split(";")[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "charset" and value.strip():
                charset = value.strip().strip('"')
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError if it is not JSON)."""
        return json_codec.loads(self.body)

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of header `name` (case-insensitive), else `default`."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return default

    @property
    def streamed(self) -> bool:
        return self._stream is not None

    @property
    def buffered(self) -> int:
        """Body bytes held for the consumer of a streamed response (0 for a gathered one)."""
        return self._stream.buffered if self._stream is not None else 0

    def take(self) -> bytes:
        """A streamed body's bytes that arrived since the last take (decoded), or b"". Once
        `done` and take() returns b"", the body is over. Taking lets reading resume."""
        stream = self._stream
        if stream is None:
            raise ValueError("take() is for streamed responses: request(..., stream=True)")
        try:
            data = stream.take()
        except ClientError as ex:
            self._fail(ex)
            return b""
        if self._resume is not None and not stream.full:
            resume, self._resume = self._resume, None
            resume()
        return data

    def when_done(self, callback: Callable[["Response"], None]) -> None:
        """Call `callback(response)` once it is done (at once if it already is)."""
        if self.done:
            callback(self)
        else:
            self._done_callbacks.append(callback)

    def raise_for_error(self) -> "Response":
        """Raise `error` if the response failed (for code outside the loop); else return self."""
        if self.error is not None:
            raise self.error
        return self

    # -- filled in by the client ----------------------------------------------------------------

    def _begin(self, head: Head, decode: bool) -> None:
        self.status, self.reason, self.version = head.status, head.reason, head.version
        self.headers = head.headers
        coding = (self.header("content-encoding") or "").strip().lower()
        if decode and coding in DECODABLE and self.method != "HEAD" and head.status != 304:
            if self._stream is not None:
                self._stream.decode(coding)
            else:
                self._inflater = Inflater(coding)

    def _receive(self, data: bytes, limit: int) -> None:
        if self._stream is not None:
            self._stream.feed(data)
            return
        if self._inflater is not None:  # inflate no more than the limit allows, plus one
            self._inflater.feed(data)
            data = self._inflate(limit - self._size + 1)
        self._size += len(data)
        if self._size > limit:
            raise ProtocolError(f"response body larger than max_body ({limit} bytes)"
                                + (" once decoded" if self._inflater is not None else ""))
        if data:
            self._chunks.append(data)

    def _inflate(self, limit: int) -> bytes:
        assert self._inflater is not None
        try:
            return self._inflater.read(limit)
        except DecodeError as ex:
            raise ProtocolError(str(ex)) from None

    def _complete(self, trailers: list) -> None:
        """The last byte arrived: check a coded body's end, then finish."""
        try:
            if self._stream is not None:
                self._stream.end()
            elif self._inflater is not None:
                self._inflater.end()
        except (ClientError, DecodeError) as ex:
            error = ex if isinstance(ex, ClientError) else ProtocolError(str(ex))
            self._finish(trailers, error)
            return
        self._finish(trailers)

    def _finish(self, trailers: list, error: Optional[ClientError] = None) -> None:
        if self.done:
            return
        self.trailers = trailers
        self.error = error
        self.done = True
        self._resume = None
        callbacks, self._done_callbacks = self._done_callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                logger.exception("error in a done callback of %r", self)

    def _fail(self, error: ClientError) -> None:
        self._finish(self.trailers, error)

    def _restart(self, url: str, method: str) -> None:
        """Keep this one as history; start over for a redirect to `url`."""
        previous = Response(self.method, self.url)
        previous.status, previous.reason, previous.version = self.status, self.reason, self.version
        previous.headers, previous.trailers = self.headers, self.trailers
        previous._chunks, previous.done = self._chunks, True
        self.history.append(previous)
        self.method, self.url = method, url
        self.status, self.reason, self.version = None, "", None
        self.headers, self.trailers, self._chunks, self._size = [], [], [], 0
        self._inflater = None
        if self._stream is not None:
            self._stream = ResponseStream(self._stream.high_water, self._stream.on_data)


class _Exchange:
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


# -- one connection -----------------------------------------------------------------------------

class Link(Connection):
    """A client connection: net.Connection, remembering why it was lost."""

    def __init__(self, sock, peer, poller, handler):
        self.error: Optional[BaseException] = None
        self.full = False  # the last receive filled its buffer (the session says so)
        super().__init__(sock, peer, poller, handler)

    def _receive(self) -> None:
        """A receive that filled its buffer means more is probably waiting: read on, a few
        times, before going back to the poller (a download then costs fewer wake-ups)."""
        if self.tls:
            super()._receive()
            return
        for _ in range(READS_PER_WAKE):
            self.full = False
            if not self._receive_once() or not self.reading or not self.full:
                return

    def start_handshake(self) -> None:
        """The client speaks first in TLS: send the ClientHello now rather than on readiness."""
        self._handshake()

    def _lost(self, ex: Optional[BaseException]) -> None:
        if self.error is None:
            self.error = ex
        super()._lost(ex)


_resolver: Optional[ThreadPoolExecutor] = None


def _resolve(host: str, port: int) -> Future:
    """Name resolution blocks, so it runs in a worker thread; the loop polls the Future."""
    global _resolver
    if _resolver is None:
        _resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hio_http-resolve")
    return _resolver.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)


class Session:
    """One connection of a Client (or of an EventStream): connects, sends exchanges, parses
    their responses in order, and hands back what it could not finish when it closes.

    Its owner provides `session_ready(session)`, `exchange_ended(session, exchange, end)`,
    `session_closed(session, unanswered, error)` and `connect_failed(session, error)`.
    """

    def __init__(self, client: "Client", owner):
        self.client = client
        self.owner = owner
        self.poller = client.poller
        self.parser = ResponseParser(client.max_header_bytes, client.max_header_count)
        self.in_flight: collections.deque = collections.deque()
        self.state = "connecting"
        self.link: Optional[Link] = None
        self.persistent = False  # an HTTP/1.1 keep-alive response came: pipelining allowed
        self.closing = False  # nothing more goes out; closes after the last response
        self.continuing: Optional[_Exchange] = None  # head sent, body held for 100 Continue
        self.continue_deadline = 0.0
        self.uploading: Optional[_Exchange] = None  # its streamed body is going out
        self.paused = False  # reading stopped: a streamed response's consumer is behind
        self.deadline = client.clock() + client.connect_timeout
        self._sock: Optional[socket.socket] = None
        self._addresses: list = []
        self._resolving: Optional[Future] = None
        self._last_error: Optional[BaseException] = None

    def start(self) -> None:
        """Begin connecting (after the owner has stored the session: failure may be immediate)."""
        client = self.client
        client.connections_opened += 1
        try:
            literal = ipaddress.ip_address(client.host)
        except ValueError:
            self._resolving = _resolve(client.host, client.port)
        else:
            family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            self._addresses = [(family, (client.host, client.port))]
            self._connect_next()

    # -- connecting ---------------------------------------------------------------------------

    def service(self, now: float) -> None:
        """Once a turn: resolution results, the connect deadline, the wait for 100 Continue."""
        if self.state == "connecting":
            if self._resolving is not None and self._resolving.done():
                future, self._resolving = self._resolving, None
                try:
                    infos = future.result()
                except OSError as ex:
                    self._connect_failed(ConnectError(
                        f"cannot resolve {self.client.host!r}: {ex}"), ex)
                    return
                self._addresses = [(info[0], info[4]) for info in infos]
                self._connect_next()
            elif now >= self.deadline:
                self._connect_failed(ConnectTimeout(
                    f"no connection to {self.client.origin} within "
                    f"{self.client.connect_timeout} s"), None)
        elif self.continuing is not None and now >= self.continue_deadline:
            self._send_body()  # RFC 9110 §10.1.1: the client need not wait forever
        elif self.uploading is not None:
            self._upload()  # the body said "not yet", or used its share of the last turn

    def _connect_next(self) -> None:
        while self._addresses:
            family, address = self._addresses.pop(0)
            sock = None
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
                code = sock.connect_ex(address)
            except OSError as ex:
                if sock is not None:
                    sock.close()
                self._last_error = ex
                continue
            if code in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
                self._sock = sock
                self._peer = address
                self.poller.register(sock, WRITE, self._guarded(self._connected))
                return
            sock.close()
            self._last_error = OSError(code, os.strerror(code))
        self._connect_failed(ConnectError(f"cannot connect to {self.client.origin}: "
                                          f"{self._last_error}"), self._last_error)

    def _connected(self, mask: int) -> None:
        sock, self._sock = self._sock, None
        self.poller.unregister(sock)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            sock.close()
            self._last_error = OSError(code, os.strerror(code))
            self._connect_next()
            return
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = self.client.tls_context
        if context is not None:
            try:
                sock = context.wrap_socket(sock, server_hostname=self.client.server_name,
                                           do_handshake_on_connect=False)
            except (ssl.SSLError, OSError, ValueError) as ex:
                sock.close()
                self._connect_failed(ConnectError(f"TLS setup failed: {ex}"), ex)
                return
        self.link = Link(sock, self._peer, self.poller, self)
        # A streamed body is held at most one receive past high_water: keep receives near it.
        self.link.receive_size = max(16 * 1024, min(RECEIVE_SIZE, self.client.high_water))
        if context is not None:
            self.link.start_handshake()
        else:
            self.connected()

    def _connect_failed(self, error: ClientError, cause: Optional[BaseException]) -> None:
        if self.state == "closed":
            return
        error.__cause__ = cause
        self.state = "closed"
        self._resolving = None
        if self._sock is not None:
            self.poller.unregister(self._sock)
            self._sock.close()
            self._sock = None
        if self.link is not None and not self.link.closed:
            self.link.close()
        self.owner.connect_failed(self, error)

    def _guarded(self, callback: Callable[[int], None]) -> Callable[[int], None]:
        """Poller callbacks must never raise into the loop."""
        def run(mask: int) -> None:
            try:
                callback(mask)
            except Exception as ex:
                logger.exception("client connection to %s failed", self.client.origin)
                self._connect_failed(ConnectError(f"internal error while connecting: {ex}"), ex)
        return run

    # -- net.Connection events ----------------------------------------------------------------

    def connected(self) -> None:
        if self.state != "connecting":
            return
        self.state = "ready"
        self.owner.session_ready(self)

    def received(self, data: bytes) -> None:
        if not self.in_flight:
            # Nothing was asked: a server's farewell (408, say) on an idle connection.
            logger.info("unsolicited bytes from %s; closing the connection", self.client.origin)
            self.link.close()
            return
        self.link.full = len(data) >= self.link.receive_size
        self.parser.feed(data)
        self._take_events()

    def ended(self) -> None:
        self.parser.feed_eof()
        self._take_events()
        if self.link is not None and not self.link.closed:
            self.link.close()

    def drained(self) -> None:
        if self.uploading is not None:
            self._upload()

    def closed(self) -> None:
        if self.state == "closed":
            return
        if self.state == "connecting":  # the TLS handshake failed
            cause = self.link.error if self.link is not None else None
            self._connect_failed(ConnectError(
                f"TLS handshake with {self.client.origin} failed: {cause}"), cause)
            return
        self.state = "closed"
        self.continuing = self.uploading = None
        unanswered = list(self.in_flight)
        self.in_flight.clear()
        cause = self.link.error if self.link is not None else None
        if cause is not None:
            error = ConnectionLost(f"connection to {self.client.origin} lost: {cause}")
            error.__cause__ = cause
        else:
            error = ConnectionLost(f"{self.client.origin} closed the connection")
        self.owner.session_closed(self, unanswered, error)

    # -- requests out, responses in -----------------------------------------------------------

    def can_send(self, exchange: _Exchange) -> bool:
        if (self.state != "ready" or self.closing or self.continuing is not None
                or self.uploading is not None):
            return False
        in_flight = self.in_flight
        if not in_flight:
            return True
        if not self.persistent or len(in_flight) >= self.client.max_pipeline:
            return False
        # RFC 9112 §9.3.2: nothing is pipelined after a non-idempotent request, and a
        # non-idempotent one waits for an empty pipeline, so a closing connection can only
        # cost it when it was the first in line. The same holds for 100-continue and for a
        # streamed body (which may not be sendable twice). HEAD goes alone too: see
        # ResponseParser._step.
        if not exchange.pipelinable:
            return False
        return all(sent.pipelinable for sent in in_flight)

    def send(self, exchange: _Exchange) -> None:
        exchange.attempts += 1
        self.in_flight.append(exchange)
        self.parser.expect(exchange.method)
        if any(name.lower() == "connection" and "close" in _tokens(value)
               for name, value in exchange.headers):
            self.closing = True
        body = exchange.body
        if exchange.expect_continue:
            self.continuing = exchange
            self.continue_deadline = self.client.clock() + self.client.continue_timeout
            self.link.send(exchange.wire_head())
        elif body.streamed:
            self.link.send(exchange.wire_head())
            self._start_upload(exchange)
        else:
            self.link.send(exchange.wire_head() + (body.whole or b""))

    def _send_body(self) -> None:
        exchange, self.continuing = self.continuing, None
        if exchange is not None and self.link is not None and not self.link.closed:
            if exchange.body.streamed:
                self._start_upload(exchange)
            else:
                self.link.send(exchange.body.whole or b"")
        if self.uploading is None:
            self.owner.session_ready(self)  # the pipeline may move again

    def _start_upload(self, exchange: _Exchange) -> None:
        exchange.writer = BodyWriter(exchange.body)
        self.uploading = exchange
        self._upload()

    def _upload(self) -> None:
        """Send more of a streamed body while the socket takes it (never more than the
        high-water mark waits in our buffer); the rest on `drained()` or the next turn."""
        exchange, link = self.uploading, self.link
        if exchange is None or exchange.writer is None or link is None or link.closed:
            return
        writer = exchange.writer
        high_water = self.client.high_water
        before = writer.sent
        try:
            finished = writer.write(link, high_water, high_water * UPLOAD_BUDGET)
        except BodyError as ex:
            self.uploading = None
            exchange.body.close()
            self.abandon(exchange, ex)  # half a body: the connection cannot be reused
            return
        if writer.sent != before:
            exchange.progressed(self.client.clock())
        if finished and self.uploading is exchange:
            self.uploading = None
            self.owner.session_ready(self)

    def _stop_upload(self, exchange: _Exchange) -> None:
        """A final answer came before the whole body went out: send no more of it; the
        server will not read the rest as a body, so the connection ends with this response."""
        if exchange is self.continuing:
            self.continuing = None
            self.closing = True
        if exchange is self.uploading:
            self.uploading = None
            exchange.body.close()
            self.closing = True

    def _pause_for(self, response: Response) -> None:
        """A streamed body's consumer is behind: stop reading until it takes some (TCP then
        holds the server back)."""
        if not self.paused and self.link is not None and not self.link.closed:
            self.paused = True
            self.link.pause_reading()
            response._resume = self._resume_reading

    def _resume_reading(self) -> None:
        if not self.paused:
            return
        self.paused = False
        link = self.link
        if link is None or link.closed:
            return
        if self.in_flight:
            self.in_flight[0].progressed(self.client.clock())
        link.resume_reading()
        if link.tls and link.sock.pending():  # type: ignore[attr-defined]  # decrypted, unseen
            link._ready(READ)

    def abandon(self, exchange: _Exchange, error: ClientError) -> None:
        """Fail an exchange in flight (its deadline passed): the responses behind it can no
        longer be matched to their requests, so the connection closes too."""
        if exchange in self.in_flight:
            self.in_flight.remove(exchange)
        exchange.body.close()  # a generator's cleanup runs now, not whenever it is collected
        exchange.response._fail(error)
        self.close()

    def close(self) -> None:
        """Close now; exchanges in flight go back to the owner as unanswered."""
        if self.state == "connecting":
            self._connect_failed(ConnectError("the client closed the connection"), None)
        elif self.link is not None and not self.link.closed:
            self.link.close()  # -> closed()

    def _take_events(self) -> None:
        while self.state == "ready" and self.in_flight:
            exchange = self.in_flight[0]
            try:
                event = self.parser.next_event()
                if event is None:
                    return
                if isinstance(event, Data):
                    response = exchange.response
                    if exchange.sink is not None:
                        exchange.sink(event.data)
                    elif not exchange.discarding:
                        response._receive(event.data, self.client.max_body)
                        exchange.progressed(self.client.clock())
                        if response._stream is not None and response._stream.full:
                            self._pause_for(response)
                elif isinstance(event, Head):
                    exchange.answered = True
                    self._stop_upload(exchange)
                    exchange.discarding = (exchange.response._stream is not None
                                           and self.client.follows(exchange, event))
                    exchange.response._begin(event, self.client.decompress)
                    if exchange.on_head is not None:
                        exchange.on_head(event)
                elif isinstance(event, End):
                    self.in_flight.popleft()
                    self._resume_reading()
                    if event.keep_alive and exchange.response.version == "1.1":
                        self.persistent = True
                    else:
                        self.closing = True
                    self.owner.exchange_ended(self, exchange, event)
                    if self.closing and not self.in_flight:
                        self.close()
                elif isinstance(event, Interim):
                    if event.status == 100 and exchange is self.continuing:
                        self._send_body()
            except ClientError as ex:
                if ex.__cause__ is None and isinstance(ex, ConnectionLost) and self.link.error:
                    ex.__cause__ = self.link.error
                self.in_flight.popleft()
                exchange.response._fail(ex)
                self.close()
                return


# -- the client ---------------------------------------------------------------------------------

class Client:
    """A nonblocking HTTP/1.1 client for one origin, serviced by a doer (or by hand).

    `Client("http://127.0.0.1:8080")` or `Client(host=..., port=..., scheme=...)`. `request()`
    returns a `Response` at once; it fills in while `service()` runs every turn (`ClientDoer`
    does that). Requests share one keep-alive connection, pipelined up to `max_pipeline`.

    timeout: seconds for each response to be complete, counted from `request()`; or a pair
        (connect timeout, response timeout); None: no limit.
    max_redirects: redirects to follow (same origin only); 0 leaves 3xx responses as they are.
    tls_context / verify: TLS for https. By default the server's certificate is verified
        against the system's CAs (`ssl.create_default_context()`); `verify=False` turns that
        off; a `tls_context` of your own is used as it is. `server_name` is the name the
        certificate is checked against (and sent as SNI); by default `host`.
    poller: the Poller to register sockets with (ClientDoer uses its Doist's); else the client
        keeps one and polls it in `service()`.
    clock: seconds for deadlines (ClientDoer uses the Doist's tymth); default time.monotonic.
    max_body: the largest gathered response body, counted decoded; streamed ones have no limit.
    high_water: bytes a streamed upload may leave unsent, and a streamed response may hold
        untaken, before the client stops pulling the body or reading the socket.
    decompress: ask for gzip / deflate (`Accept-Encoding`) and decode responses that use them.
    continue_threshold / continue_timeout: bodies larger than this (or of unknown length) are
        sent with `Expect: 100-continue`, after the 100 or after the timeout (seconds).
    """

    def __init__(self, base_url: Optional[str] = None, *, host: str = "127.0.0.1",
                 port: Optional[int] = None, scheme: str = "http", timeout: Timeout = 30.0,
                 max_redirects: int = 0, tls_context: Optional[ssl.SSLContext] = None,
                 verify: bool = True, poller: Optional[Poller] = None,
                 clock: Optional[Callable[[], float]] = None, headers: Headers = None,
                 max_pipeline: int = 8, max_body: int = 64 * 1024 * 1024,
                 max_header_bytes: int = 65536, max_header_count: int = 100,
                 user_agent: Optional[str] = "hio_http", server_name: Optional[str] = None,
                 high_water: int = 256 * 1024, decompress: bool = True,
                 continue_threshold: int = CONTINUE_THRESHOLD,
                 continue_timeout: float = CONTINUE_WAIT):
        prefix = ""
        if base_url is not None:
            parts = urlsplit(base_url)
            if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
                raise ValueError(f"expected an http:// or https:// URL, not {base_url!r}")
            scheme, host = parts.scheme, parts.hostname
            port = parts.port
            prefix = parts.path.rstrip("/")
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"unsupported scheme {scheme!r}")
        self.scheme = scheme
        self.host = host
        self.port = port if port is not None else DEFAULT_PORTS[scheme]
        self.prefix = prefix  # a path the base URL carried; request paths go below it
        default_port = self.port == DEFAULT_PORTS[scheme]
        named = f"[{host}]" if ":" in host else host
        self.authority = named if default_port else f"{named}:{self.port}"
        self.origin = f"{scheme}://{self.authority}"
        if isinstance(timeout, tuple):
            self.connect_timeout, self.timeout = timeout
        else:
            self.connect_timeout = self.timeout = timeout
        if self.connect_timeout is None:
            self.connect_timeout = float("inf")
        self.max_redirects = max_redirects
        if scheme == "https" and tls_context is None:
            tls_context = ssl.create_default_context()
            if not verify:
                tls_context.check_hostname = False
                tls_context.verify_mode = ssl.CERT_NONE
        self.tls_context = tls_context if scheme == "https" else None
        self.server_name = server_name or host
        self.poller = poller
        self.owns_poller = False
        self.clock = clock or time.monotonic
        self.max_pipeline = max(1, max_pipeline)
        self.max_body = max_body
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        if high_water < 1:
            raise ValueError("high_water must be positive")
        self.high_water = high_water
        self.decompress = decompress
        self.continue_threshold = continue_threshold
        self.continue_timeout = continue_timeout
        self.default_headers = header_list(headers)
        if user_agent and not any(n.lower() == "user-agent" for n, _ in self.default_headers):
            self.default_headers.append(("User-Agent", user_agent))
        self.opened = False
        self.closed = False
        self.connections_opened = 0  # connections begun so far (keep-alive shows as reuse)
        self.queue: collections.deque = collections.deque()  # exchanges not yet sent
        self.streams: list = []
        self._session: Optional[Session] = None
        self._pumping = False

    def __repr__(self) -> str:
        return f"<Client {self.origin}{self.prefix}>"

    @property
    def unsent(self) -> int:
        """Bytes of requests waiting in the client's send buffer (at most about `high_water`
        for a streamed body: the socket, not memory, holds the rest back)."""
        session = self._session
        link = session.link if session is not None else None
        return link.pending if link is not None and not link.closed else 0

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> "Client":
        """Start working: from now on queued requests go out (service() opens it if needed)."""
        if self.opened:
            return self
        if self.poller is None:
            self.poller = Poller()
            self.owns_poller = True
        self.opened = True
        self.closed = False
        for stream in list(self.streams):  # one that fails at once leaves the list
            stream._start()
        self._pump()
        return self

    def close(self) -> None:
        """Close every connection; responses not yet done fail with ConnectionLost."""
        self.closed = True
        error = ConnectionLost("the client was closed")
        for stream in list(self.streams):
            stream.close()
        while self.queue:
            self.queue.popleft().response._fail(error)
        session, self._session = self._session, None
        if session is not None:
            for exchange in session.in_flight:
                exchange.response._fail(error)
            session.in_flight.clear()
            session.close()
        if self.owns_poller and self.poller is not None:
            self.poller.close()
            self.poller = None
            self.owns_poller = False
        self.opened = False

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Keep deadlines on another clock from now on; the ones already set keep their
        remaining time."""
        shift = clock() - self.clock()
        self.clock = clock
        exchanges = list(self.queue)
        if self._session is not None:
            exchanges += list(self._session.in_flight)
            self._session.deadline += shift
        for exchange in exchanges:
            if exchange.deadline is not None:
                exchange.deadline += shift

    def __enter__(self) -> "Client":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------------------

    def request(self, method: str, path: str = "/", headers: Headers = None,
                body: Source = b"", *, json: Any = None, timeout: Optional[float] = ...,
                trailers: Iterable[tuple[str, str]] = (), expect_continue: Optional[bool] = None,
                stream: bool = False,
                on_data: Optional[Callable[[bytes], None]] = None) -> Response:
        """Queue a request and return its Response at once; it fills in as bytes arrive.

        `path` is the request target below the base URL ("/items?page=2"), or an absolute URL
        of the same origin. `json` sends a value as JSON. `body` is bytes (or str, sent as
        UTF-8), an iterable of bytes-like chunks (b"": "not yet, ask again later") or a binary
        file; a known length is sent as Content-Length, an unknown one chunked, and `trailers`
        follow a chunked body. The body is pulled only while the socket takes it.
        `expect_continue` sends `Expect: 100-continue` and holds the body until the 100 (None:
        for bodies over `continue_threshold` or of unknown length). `stream=True` gathers no
        body: take it with `response.take()`, or have each piece passed to `on_data`.
        `timeout` overrides the client's for this response (for a streamed body, it is the
        longest time without progress). Header values are str, bytes-like (sent as those exact
        bytes) or int; a Content-Length, if given, must match the body. Invalid arguments raise
        here: a value of another type TypeError, a header with CR or LF (say) ValueError;
        anything that goes wrong on the network later lands on `response.error`.
        """
        method = method.upper()
        if not is_token(method):
            raise ValueError(f"invalid method {method!r}")
        fields = self.default_headers + header_list(headers)
        if json is not None:
            body = json_codec.dumps(json, separators=(",", ":")).encode("utf-8")
            if not any(name.lower() == "content-type" for name, _ in fields):
                fields.append(("Content-Type", "application/json"))
        if self.decompress and not any(name.lower() == "accept-encoding" for name, _ in fields):
            fields.append(("Accept-Encoding", "gzip, deflate"))
        content = RequestBody(body, trailers)
        if expect_continue is None:
            expect_continue = content.length is None or content.length > self.continue_threshold
        if expect_continue and not content.empty and not any(
                name.lower() == "expect" for name, _ in fields):
            fields.append(("Expect", "100-continue"))
        target = self.request_target(path)
        response = Response(method, self.origin + target)
        if stream or on_data is not None:
            response._stream = ResponseStream(self.high_water, on_data)
        limit = self.timeout if timeout is ... else timeout
        exchange = _Exchange(method, target, self.request_fields(fields, method, content), content,
                             response, self._deadline(limit))
        if stream or on_data is not None or content.streamed:
            exchange.idle_timeout = limit
        if self.closed:
            response._fail(ConnectionLost("the client is closed"))
            return response
        self.queue.append(exchange)
        self._pump()
        return response

    def get(self, path: str = "/", **kwa) -> Response:
        return self.request("GET", path, **kwa)

    def post(self, path: str = "/", **kwa) -> Response:
        return self.request("POST", path, **kwa)

    def download(self, path: str, destination, **kwa) -> Response:
        """GET `path` straight into `destination`, a file path or a binary file, as it
        arrives (never held whole; memory stays under `high_water`). A path is written to
        `destination + ".part"` and renamed once the response is complete and 2xx, else
        removed; a file object is left open. Returns the streamed Response."""
        if hasattr(destination, "write"):
            return self.request("GET", path, on_data=destination.write, **kwa)
        target = FileTarget(destination)
        try:
            response = self.request("GET", path, on_data=target.write, **kwa)
        except BaseException:
            target.discard()
            raise
        response.when_done(lambda done: target.settle(done.ok and (done.status or 0) >= 200
                                                      and (done.status or 0) < 300))
        return response

    def events(self, path: str, last_event_id: Optional[str] = None, headers: Headers = None,
               retry: int = 3000, idle_timeout: Optional[float] = None,
               max_reconnects: Optional[int] = None) -> "EventStream":
        """Follow a Server-Sent Events stream at `path` on a connection of its own."""
        stream = EventStream(self, path, last_event_id=last_event_id, headers=headers,
                             retry=retry, idle_timeout=idle_timeout,
                             max_reconnects=max_reconnects)
        self.streams.append(stream)
        if self.opened:
            stream._start()
        return stream

    def websocket(self, path: str, subprotocols: Sequence[str] = (), headers: Headers = None,
                  compression: bool = True, max_message: int = 1024 * 1024, *,
                  on_message: Optional[Callable[[Union[str, bytes]], None]] = None,
                  on_close: Optional[Callable[[int, str], None]] = None,
                  on_open: Optional[Callable[[], None]] = None,
                  close_timeout: float = 10.0) -> "WebSocketClient":
        """Open a WebSocket at `path` (ws://, or wss:// for an https client) on a connection of
        its own; see websocket_client.WebSocketClient."""
        from .websocket_client import WebSocketClient  # it builds on this module
        return WebSocketClient(self, path, subprotocols=subprotocols, headers=headers,
                               compression=compression, max_message=max_message,
                               on_message=on_message, on_close=on_close, on_open=on_open,
                               close_timeout=close_timeout)

    # -- the loop -----------------------------------------------------------------------------

    def service(self) -> None:
        """One turn: dispatch ready sockets (if the Poller is ours), enforce deadlines, start
        connections and send what waits. Call it every tick; ClientDoer does."""
        if not self.opened:
            if self.closed:
                return
            self.open()
        if self.owns_poller:
            self.poller.poll(0)
        now = self.clock()
        if self.queue:
            for exchange in [e for e in self.queue if _due(e, now)]:
                self.queue.remove(exchange)
                exchange.response._fail(self._timeout_error(exchange))
        session = self._session
        if session is not None:
            session.service(now)
            for exchange in [e for e in session.in_flight if _due(e, now)]:
                session.abandon(exchange, self._timeout_error(exchange))
        for stream in list(self.streams):
            stream._service(now)
        self._pump()

    def run_until(self, condition: Union[Response, Callable[[], bool]],
                  timeout: float = 10.0) -> None:
        """Blocking: service the client until `condition()` holds (or the Response is done).
        For scripts and tests that drive a client outside any Doist; never call it from a
        doer. Raises TimeoutError after `timeout` seconds of wall time."""
        if isinstance(condition, Response):
            response = condition
            condition = lambda: response.done  # noqa: E731
        deadline = time.monotonic() + timeout
        self.service()
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout} s")
            if self.poller is not None:
                self.poller.poll(min(0.01, remaining))
            self.service()

    # -- sessions call back here ----------------------------------------------------------------

    def session_ready(self, session: Session) -> None:
        self._pump()

    def exchange_ended(self, session: Session, exchange: _Exchange, end: End) -> None:
        response = exchange.response
        location = response.header("location")
        if response.status in REDIRECTS and location and self.max_redirects > 0:
            if self._redirect(exchange, location):
                return
        if exchange.discarding:  # the redirect was not followed after all
            response._finish(end.trailers, ProtocolError(
                f"redirect to {location!r} not followed; its body was discarded"))
            return
        response._complete(end.trailers)

    def follows(self, exchange: _Exchange, head: Head) -> bool:
        """Whether a response with this head is a redirect the client will follow (so a
        streamed response's body can be dropped rather than handed to its consumer)."""
        location = next((value for name, value in head.headers if name.lower() == "location"),
                        None)
        if self.max_redirects <= 0 or head.status not in REDIRECTS or not location:
            return False
        if self._same_origin(urljoin(exchange.response.url, location)) is None:
            return False
        return _becomes_get(head.status, exchange.method) or exchange.body.replayable

    def session_closed(self, session: Session, unanswered: list, error: ClientError) -> None:
        if session is self._session:
            self._session = None
        self._requeue(unanswered, error)
        self._pump()

    def connect_failed(self, session: Session, error: ClientError) -> None:
        """Nothing was sent on a connection that never came up: the requests waiting for it
        fail with the reason (a retry is one more request away)."""
        if session is self._session:
            self._session = None
        for exchange in session.in_flight:
            exchange.response._fail(error)
        session.in_flight.clear()
        while self.queue:
            self.queue.popleft().response._fail(error)

    # -- internals ----------------------------------------------------------------------------

    def _pump(self) -> None:
        """Make every step possible now: open a connection, send what the pipeline allows."""
        if not self.opened or self._pumping:
            return
        self._pumping = True
        try:
            while self.queue:
                session = self._session
                if session is None or session.state == "closed":
                    self._session = Session(self, self)
                    self._session.start()
                    continue  # it may have connected (or failed) at once
                if session.closing and session.state == "ready" and not session.in_flight:
                    session.close()
                    continue
                if not session.can_send(self.queue[0]):
                    break
                session.send(self.queue.popleft())
        finally:
            self._pumping = False

    def _requeue(self, unanswered: list, error: ClientError) -> None:
        """Requests a closed connection left unanswered: resend those that are safe to resend
        (idempotent, no byte of response seen), in their order, ahead of the queue."""
        retry = []
        for exchange in unanswered:
            if exchange.response.done:
                continue
            if exchange.answered:
                exchange.response._fail(error)
            elif not exchange.body.rewind():
                failure = ConnectionLost(f"{error}; the request body was partly sent and "
                                         f"cannot be sent again")
                failure.__cause__ = error.__cause__
                exchange.response._fail(failure)
            elif not exchange.idempotent:
                failure = ConnectionLost(f"{error}; {exchange.method} is not retried because it "
                                         f"is not idempotent")
                failure.__cause__ = error.__cause__
                exchange.response._fail(failure)
            elif exchange.attempts >= MAX_ATTEMPTS:
                exchange.response._fail(ConnectionLost(
                    f"{error} (after {exchange.attempts} attempts)"))
            else:
                retry.append(exchange)
        self.queue.extendleft(reversed(retry))

    def _redirect(self, exchange: _Exchange, location: str) -> bool:
        response = exchange.response
        url = urljoin(response.url, location)
        parts = self._same_origin(url)
        if parts is None:
            return False  # another origin: left to the caller
        if exchange.redirects >= self.max_redirects:
            response._finish(response.trailers, TooManyRedirects(
                f"more than {self.max_redirects} redirects (last to {url})"))
            return True
        method, body = exchange.method, exchange.body
        if _becomes_get(response.status, method):
            method, body = "GET", RequestBody(b"")
        elif not body.rewind():
            return False  # a streamed body cannot be sent twice: the caller gets the 3xx
        dropped = (("content-length", "transfer-encoding", "trailer") if body is exchange.body
                   else ("content-length", "transfer-encoding", "trailer", "content-type",
                         "expect"))
        fields = self.request_fields([(name, value) for name, value in exchange.headers
                               if name.lower() not in dropped], method, body)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        follow = _Exchange(method, target, fields, body, response, exchange.deadline)
        follow.idle_timeout = exchange.idle_timeout
        follow.redirects = exchange.redirects + 1
        response._restart(self.origin + target, method)
        self.queue.appendleft(follow)
        self._pump()
        return True

    def _same_origin(self, url: str):
        """The parts of `url` if it is on this client's origin, else None."""
        parts = urlsplit(url)
        try:
            port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return None
        if (parts.scheme, (parts.hostname or "").lower(), port) != (
                self.scheme, self.host.lower(), self.port):
            return None
        return parts

    def request_target(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            parts = urlsplit(path)
            if f"{parts.scheme}://{parts.netloc}" != self.origin:
                raise ValueError(f"{path!r} is not on {self.origin}")
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            prefix = ""
        else:
            prefix = self.prefix
        if not path.startswith("/"):
            path = "/" + path
        target = prefix + path
        if any(ord(c) <= 32 or ord(c) >= 127 for c in target):
            raise ValueError(f"request target {target!r} must be percent-encoded")
        return target

    def request_fields(self, fields: list, method: str, body: Union[RequestBody, bytes]) -> list:
        """Every header field to send: Host first, then the caller's, then the framing:
        Content-Length, or Transfer-Encoding: chunked (with Trailer naming the trailers)."""
        if not isinstance(body, RequestBody):
            body = RequestBody(body)
        result = []
        host = None
        for name, value in fields:
            lowered = name.lower()
            if (lowered == "content-length" and body.length is not None
                    and value.strip() == str(body.length)):
                continue  # what the client would send anyway
            if lowered in ("content-length", "transfer-encoding"):
                size = "of unknown length" if body.length is None else f"{body.length} bytes"
                raise ValueError(f"{name} is set by the client from the body ({size}), "
                                 f"not {value!r}")
            if lowered == "host":
                host = value
                continue
            result.append((name, value))
        result.insert(0, ("Host", host or self.authority))
        if body.chunked:
            result.append(("Transfer-Encoding", "chunked"))
            if body.trailers:
                result.append(("Trailer", ", ".join(name for name, _ in body.trailers)))
        elif not body.empty or method in ("POST", "PUT", "PATCH"):
            result.append(("Content-Length", str(body.length)))
        for name, value in result:
            check_field(name, value)
        return result

    def _deadline(self, timeout: Optional[float]) -> Optional[float]:
        return None if timeout is None else self.clock() + timeout

    def _timeout_error(self, exchange: _Exchange) -> ClientTimeout:
        return ClientTimeout(f"{exchange.method} {exchange.target}: no complete response "
                             f"within the timeout")


def _becomes_get(status: Optional[int], method: str) -> bool:
    """RFC 9110 §15.4: 303 is fetched with GET; a POST moved by 301/302 becomes GET too, as
    every browser does. 307 and 308 repeat the method and body."""
    return (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST")


def _due(exchange: _Exchange, now: float) -> bool:
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


# -- event streams ------------------------------------------------------------------------------

class EventStream:
    """A Server-Sent Events stream, followed on a connection of its own.

    Parsed `Event`s collect in `events` (a deque: pop them as you go). When the stream ends or
    the connection drops, it reconnects after `retry` ms (the server may change it) sending
    `Last-Event-ID`; a 204 answer ends it for good, as does any other non-200 answer or a
    Content-Type other than text/event-stream (then `error` tells why), or `close()`.
    """

    def __init__(self, client: Client, path: str, last_event_id: Optional[str] = None,
                 headers: Headers = None, retry: int = 3000, idle_timeout: Optional[float] = None,
                 max_reconnects: Optional[int] = None):
        self.client = client
        self.path = path
        self.headers = header_list(headers)
        self.events: collections.deque = collections.deque()
        self.last_event_id = last_event_id or ""
        self.retry = retry  # ms before reconnecting
        self.idle_timeout = idle_timeout  # reconnect after this long without a byte
        self.max_reconnects = max_reconnects
        self.reconnects = 0
        self.connected = False  # the current connection answered 200 text/event-stream
        self.closed = False
        self.error: Optional[ClientError] = None  # why the last connection ended, if it failed
        self.response: Optional[Response] = None
        self._session: Optional[Session] = None
        self._exchange: Optional[_Exchange] = None
        self._parser: Optional[EventParser] = None
        self._reconnect_at: Optional[float] = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open" if self.connected else "connecting"
        return f"<EventStream {self.client.origin}{self.path} {state}>"

    def close(self) -> None:
        """Stop following the stream, now and for good."""
        self.closed = True
        self.connected = False
        self._reconnect_at = None
        session, self._session = self._session, None
        if session is not None:
            session.in_flight.clear()
            session.close()
        if self in self.client.streams:
            self.client.streams.remove(self)

    # -- driven by the client -----------------------------------------------------------------

    def _start(self) -> None:
        if self.closed or self._session is not None:
            return
        self._reconnect_at = None
        fields = list(self.headers)
        fields.append(("Accept", "text/event-stream"))
        fields.append(("Cache-Control", "no-cache"))
        if self.last_event_id:
            fields.append(("Last-Event-ID", self.last_event_id))
        client = self.client
        target = client.request_target(self.path)
        response = Response("GET", client.origin + target)
        fields = client.request_fields(client.default_headers + fields, "GET", b"")
        exchange = _Exchange("GET", target, fields, b"", response,
                             client._deadline(client.timeout))
        exchange.sink = self._receive
        exchange.on_head = self._head
        self.response, self._exchange = response, exchange
        self._parser = EventParser(self.last_event_id)
        self._session = Session(client, self)
        self._session.start()

    def _service(self, now: float) -> None:
        if self.closed:
            return
        session, exchange = self._session, self._exchange
        if session is not None:
            session.service(now)
            if exchange is not None and _due(exchange, now) and exchange in session.in_flight:
                session.abandon(exchange, ClientTimeout(
                    f"event stream {self.path}: nothing received within the timeout"))
        elif self._reconnect_at is not None and now >= self._reconnect_at:
            self._start()

    def session_ready(self, session: Session) -> None:
        if session is self._session and not session.in_flight and self._exchange is not None:
            session.send(self._exchange)

    def _head(self, head: Head) -> None:
        media = (self.response.header("content-type") or "").split(";")[0].strip().lower()
        if head.status == 204:
            self._end_for_good(None)
        elif head.status != 200:
            self._end_for_good(ProtocolError(f"event stream answered {head.status} "
                                             f"{head.reason}"))
        elif media != "text/event-stream":
            self._end_for_good(ProtocolError(f"event stream answered with Content-Type "
                                             f"{media or 'none'}"))
        else:
            self.connected = True
            self.error = None
            self._exchange.deadline = self._idle_deadline()

    def _receive(self, data: bytes) -> None:
        if self.closed or self._parser is None:
            return
        events = self._parser.feed(data)  # ProtocolError ends this connection (and reconnects)
        self.last_event_id = self._parser.last_event_id
        if self._parser.retry is not None:
            self.retry = self._parser.retry
        self.events.extend(events)
        if self._exchange is not None:
            self._exchange.deadline = self._idle_deadline()

    def _idle_deadline(self) -> Optional[float]:
        if self.idle_timeout is None:
            return None
        return self.client.clock() + self.idle_timeout

    def exchange_ended(self, session: Session, exchange: _Exchange, end: End) -> None:
        exchange.response._finish(end.trailers)
        session.closing = True
        if not self.closed:
            self._lost(None)

    def session_closed(self, session: Session, unanswered: list, error: ClientError) -> None:
        for exchange in unanswered:
            exchange.response._fail(error)
        if session is self._session and not self.closed:
            failed = self._exchange.response.error if self._exchange is not None else None
            self._lost(failed or error)

    def connect_failed(self, session: Session, error: ClientError) -> None:
        if session is self._session and not self.closed:
            self._exchange.response._fail(error)
            self._lost(error)

    def _lost(self, error: Optional[ClientError]) -> None:
        """This connection is over: reconnect after `retry` ms (EventSource "reestablish")."""
        session, self._session = self._session, None
        self.connected = False
        if error is not None:
            self.error = error
        if session is not None and session.state != "closed":
            session.in_flight.clear()
            session.close()
        if self.closed:
            return
        if self.max_reconnects is not None and self.reconnects >= self.max_reconnects:
            self.closed = True
            return
        self.reconnects += 1
        self._reconnect_at = self.client.clock() + self.retry / 1000.0

    def _end_for_good(self, error: Optional[ClientError]) -> None:
        self.error = error
        self.close()


# -- the doer -----------------------------------------------------------------------------------

class ClientDoer(Doer):
    """Runs a Client in a Doist: opens it on enter, services it every turn, closes it on exit.

    Under this package's Doist the client registers its sockets with the Doist's Poller (so a
    response is handled the moment its bytes arrive) and keeps deadlines on the Doist's tyme;
    under a scheduler without one (hio's Doist) it polls a Poller of its own on each turn.
    An error inside the client is logged and never ends the doer.
    """

    def __init__(self, client: Client, **kwa):
        super().__init__(**kwa)
        self.client = client
        self.nested: Optional[Poller] = None

    def enter(self) -> None:
        client = self.client
        client.set_clock(self.tymth)  # deadlines follow the Doist's tyme, simulated or real
        if not client.opened:
            client.closed = False
        self.nested = join_loop(client, self.tymth)

    def recur(self, tyme: float) -> bool:
        try:
            self.client.service()
        except Exception:
            logger.exception("error servicing %r", self.client)
        return False

    def exit(self) -> None:
        leave_loop(self.nested, self.tymth)
        self.nested = None
        self.client.close()
