"""One connection of a client: `Session` connects (resolution off the loop, nonblocking
connect, TLS), sends `Exchange`s in order and parses their responses, and hands back what it
could not finish when it closes. `Link` is its connection. Used by the Client, its event
streams and its WebSockets; it knows nothing of them (its owner is told what happens).
"""

from __future__ import annotations

import collections
import enum
import errno
import ipaddress
import logging
import os
import socket
import ssl
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional

from .client_bodies import BodyError, BodyWriter
from .client_exchange import Exchange, Headers, due, header_list
from .client_parsing import (ClientError, ConnectError, ConnectionLost, ConnectTimeout, Data,
                             End, Head, Interim, ResponseParser)
from .client_protocols import SessionClient, StreamClient
from .client_response import Response
from .grammar import list_members
from .net import FIRST_RECEIVE, Connection
from .polling import READ, WRITE, Poller

logger = logging.getLogger("hio_http.client")

__all__ = ["Session", "SessionState", "DEADLINES", "TRANSITIONS", "SessionClient",
           "StreamClient", "Link", "Exchange", "Headers", "header_list", "due",
           "resolve"]

READS_PER_WAKE = 8  # receives in a row while each fills its buffer, before polling again
UPLOAD_BUDGET = 16  # high-water marks of body one turn may send, so other work gets its turn


# -- one connection -----------------------------------------------------------------------------

class SessionState(enum.Enum):
    """Where a client connection stands; DEADLINES and TRANSITIONS say what bounds each state
    and which may follow it. Every change of state goes through `Session._enter`."""

    CONNECTING = "connecting"  # resolution, nonblocking connect, TLS handshake
    READY = "ready"            # sends exchanges; their responses come back in order
    CLOSING = "closing"        # sends nothing more; closes after the responses in flight
    CLOSED = "closed"          # its unanswered exchanges went back to its owner

    # Members are unique, so identity hashes them: Enum's own hash is a Python call, and
    # RECEIVING is looked up for every receive of a download.
    __hash__ = object.__hash__


# The client's setting that bounds each state, counted from entering it; None: no deadline of
# the session's own (each exchange in flight has its deadline, from the client's timeout, and
# a body held back for 100 Continue waits at most `continue_timeout`).
DEADLINES: dict[SessionState, Optional[str]] = {
    SessionState.CONNECTING: "connect_timeout", SessionState.READY: None,
    SessionState.CLOSING: None, SessionState.CLOSED: None}

# The states each state may change to.
TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.CONNECTING: frozenset((SessionState.READY, SessionState.CLOSED)),
    SessionState.READY: frozenset((SessionState.CLOSING, SessionState.CLOSED)),
    SessionState.CLOSING: frozenset((SessionState.CLOSED,)),
    SessionState.CLOSED: frozenset()}

# Bytes asked of one receive at most. Where the client is what limits a download (a file the
# server sends by sendfile), receives of 1 MiB took a quarter less CPU per GiB than 128 KiB
# and ran 1.3x as fast: fewer calls, and Linux widens the window of a reader that takes more
# per round trip (scripts/bench/README.md, the client's streams). A body waiting for take()
# is held at most one receive past high_water, so its receives stay within high_water.
RECEIVE_SIZE_CAP = 1024 * 1024

RECEIVING = frozenset((SessionState.READY, SessionState.CLOSING))  # responses are read


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


def resolve(host: str, port: int) -> Future:
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

    def __init__(self, client: SessionClient, owner):
        self.client = client
        self.owner = owner
        assert client.poller is not None  # sessions start once the client is open
        self.poller: Poller = client.poller
        self.parser = ResponseParser(client.max_header_bytes, client.max_header_count)
        self.in_flight: collections.deque = collections.deque()
        self.link: Optional[Link] = None
        self.persistent = False  # an HTTP/1.1 keep-alive response came: pipelining allowed
        self.continuing: Optional[Exchange] = None  # head sent, body held for 100 Continue
        self.continue_deadline = 0.0
        self.uploading: Optional[Exchange] = None  # its streamed body is going out
        self.paused = False  # reading stopped: a streamed response's consumer is behind
        self.state = SessionState.CONNECTING
        self.deadline: Optional[float] = None  # on the client's clock; None: none (DEADLINES)
        self._enter(SessionState.CONNECTING)
        self._sock: Optional[socket.socket] = None
        self._addresses: list = []
        self._resolving: Optional[Future] = None
        self._last_error: Optional[BaseException] = None

    def _enter(self, state: SessionState) -> None:
        """Change to `state` (as TRANSITIONS allow), with the deadline DEADLINES gives it."""
        if state is not self.state and state not in TRANSITIONS[self.state]:
            raise AssertionError(f"a client session does not go from {self.state.value} "
                                 f"to {state.value}")
        self.state = state
        setting = DEADLINES[state]
        self.deadline = (None if setting is None
                         else self.client.clock() + getattr(self.client, setting))

    @property
    def closing(self) -> bool:
        """Nothing more goes out: the connection closes after the responses in flight."""
        return self.state is SessionState.CLOSING

    def close_after_responses(self) -> None:
        """Send nothing more, and close once the responses in flight are in."""
        if self.state is SessionState.READY:
            self._enter(SessionState.CLOSING)

    def start(self) -> None:
        """Begin connecting (after the owner has stored the session: failure may be immediate)."""
        client = self.client
        client.connections_opened += 1
        try:
            literal = ipaddress.ip_address(client.host)
        except ValueError:
            self._resolving = resolve(client.host, client.port)
        else:
            family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            self._addresses = [(family, (client.host, client.port))]
            self._connect_next()

    # -- connecting ---------------------------------------------------------------------------

    def service(self, now: float) -> None:
        """Once a turn: resolution results, the connect deadline, the wait for 100 Continue."""
        if self.state is SessionState.CONNECTING:
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
            elif self.deadline is not None and now >= self.deadline:
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
        assert sock is not None  # this callback is registered for _sock, and leaves with it
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
        self._size_receives()
        if context is not None:
            self.link.start_handshake()
        else:
            self.connected()

    def _connect_failed(self, error: ClientError, cause: Optional[BaseException]) -> None:
        if self.state is SessionState.CLOSED:
            return
        error.__cause__ = cause
        self._enter(SessionState.CLOSED)
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
        if self.state is not SessionState.CONNECTING:
            return
        self._enter(SessionState.READY)
        self.owner.session_ready(self)

    def received(self, data: bytes) -> None:
        assert self.link is not None  # the Link is what calls this
        if not self.in_flight:
            # Nothing was asked: a server's farewell (408, say) on an idle connection.
            logger.info("unsolicited bytes from %s; closing the connection", self.client.origin)
            self.link.close()
            return
        self.link.full = len(data) >= self.link.receive_size
        if self.state in RECEIVING and self.parser.take_body(data):
            exchange = self.in_flight[0]  # the usual receive of a large download: no event
            try:
                self._take_data(exchange, data)
            except ClientError as ex:
                self._failed(exchange, ex)
            return
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
        if self.state is SessionState.CLOSED:
            return
        if self.state is SessionState.CONNECTING:  # the TLS handshake failed
            cause = self.link.error if self.link is not None else None
            self._connect_failed(ConnectError(
                f"TLS handshake with {self.client.origin} failed: {cause}"), cause)
            return
        self._enter(SessionState.CLOSED)
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

    def can_send(self, exchange: Exchange) -> bool:
        if (self.state is not SessionState.READY or self.continuing is not None
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

    def send(self, exchange: Exchange) -> None:
        exchange.attempts += 1
        self.in_flight.append(exchange)
        self._size_receives()
        self.parser.expect(exchange.method)
        if any(name.lower() == "connection" and "close" in list_members(value)
               for name, value in exchange.headers):
            self.close_after_responses()
        body = exchange.body
        assert self.link is not None  # only a connected session is sent exchanges
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

    def _start_upload(self, exchange: Exchange) -> None:
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
        stopped_on_budget = writer.sent - before >= high_water * UPLOAD_BUDGET
        if not finished and stopped_on_budget and not link.pending:
            link.wake_when_writable()  # the kernel took it all: go on at the next turn
        if finished and self.uploading is exchange:
            self.uploading = None
            self.owner.session_ready(self)

    def _stop_upload(self, exchange: Exchange) -> None:
        """A final answer came before the whole body went out: send no more of it; the
        server will not read the rest as a body, so the connection ends with this response."""
        if exchange is self.continuing:
            self.continuing = None
            self.close_after_responses()
        if exchange is self.uploading:
            self.uploading = None
            exchange.body.close()
            self.close_after_responses()

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

    def abandon(self, exchange: Exchange, error: ClientError) -> None:
        """Fail an exchange in flight (its deadline passed): the responses behind it can no
        longer be matched to their requests, so the connection closes too."""
        if exchange in self.in_flight:
            self.in_flight.remove(exchange)
        exchange.body.close()  # a generator's cleanup runs now, not whenever it is collected
        exchange.response._fail(error)
        self.close()

    def close(self) -> None:
        """Close now; exchanges in flight go back to the owner as unanswered."""
        if self.state is SessionState.CONNECTING:
            self._connect_failed(ConnectError("the client closed the connection"), None)
        elif self.link is not None and not self.link.closed:
            self.link.close()  # -> closed()

    def _take_events(self) -> None:
        while self.state in RECEIVING and self.in_flight:
            exchange = self.in_flight[0]
            try:
                event = self.parser.next_event()
                if event is None:
                    return
                if isinstance(event, Data):
                    self._take_data(exchange, event.data)
                elif isinstance(event, Head):
                    exchange.answered = True
                    self._stop_upload(exchange)
                    exchange.discarding = (exchange.response._stream is not None
                                           and self.client.follows(exchange, event))
                    exchange.response._begin(event, self.client.decompress)
                    if exchange.response._stream is not None:
                        exchange.response._abandon = lambda error, ended=exchange: \
                            self.abandon(ended, error)
                    if exchange.on_head is not None:
                        exchange.on_head(event)
                elif isinstance(event, End):
                    self.in_flight.popleft()
                    self._size_receives()
                    self._resume_reading()
                    if event.keep_alive and exchange.response.version == "1.1":
                        self.persistent = True
                    else:
                        self.close_after_responses()
                    self.owner.exchange_ended(self, exchange, event)
                    if self.closing and not self.in_flight:
                        self.close()
                elif isinstance(event, Interim):
                    if event.status == 100 and exchange is self.continuing:
                        self._send_body()
            except ClientError as ex:
                self._failed(exchange, ex)
                return

    def _size_receives(self) -> None:
        """Receives as large as RECEIVE_SIZE_CAP, unless a response in flight holds what
        arrives until it is taken (a stream read with take(), or an event stream): then no
        larger than high_water, which bounds what such a response may hold."""
        link = self.link
        if link is None:
            return
        limit = RECEIVE_SIZE_CAP
        if any(exchange.sink is not None or exchange.response.awaits_taking
               for exchange in self.in_flight):
            limit = max(FIRST_RECEIVE, min(RECEIVE_SIZE_CAP, self.client.high_water))
        link.receive_limit = limit
        link.receive_size = min(link.receive_size, limit)

    def _take_data(self, exchange: Exchange, data: bytes) -> None:
        """A piece of the body of the response to `exchange`."""
        if exchange.sink is not None:
            exchange.sink(data)
        elif not exchange.discarding:
            response = exchange.response
            if response._stream is not None:
                response._stream.feed(data)
            else:  # gathered
                response._receive(data, self.client.max_body)
            exchange.progressed(self.client.clock())
            if response._stream is not None and response._stream.full:
                self._pause_for(response)

    def _failed(self, exchange: Exchange, ex: ClientError) -> None:
        """The response to `exchange`, first in flight, failed: it gets the error, and the
        connection, no longer in step with the server, closes."""
        if (ex.__cause__ is None and isinstance(ex, ConnectionLost) and
                self.link is not None and self.link.error):
            ex.__cause__ = self.link.error
        self.in_flight.popleft()
        exchange.response._fail(ex)
        self.close()
