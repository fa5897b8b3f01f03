"""Servers on the doer loop: `Server` hosts a WSGI app, `BareServer` bare `Steward` handlers;
`ServerDoer` runs either in a Doist; `openServer` opens one for the length of a with-block.

One `Steward` per connection owns its Requestant and its current responder, answers pipelined
requests in order, and keeps the connection's deadline. Nothing here blocks, and one
connection's failure (bad bytes, an app exception, a reset) never touches another.
"""

# Theory of operation
# -------------------
# All socket work happens in Poller callbacks: Acceptor -> Server._accept -> Steward; Connection
# -> Steward.received/drained/ended/closed. A Steward is in one `State` at a time (the Enum
# below says what each means), each bounded by the setting the DEADLINES table names; every
# change of state goes through `Steward._expect`, which sets the deadline from that table.
# A WAITING steward (the app said "not yet", b"") is resumed on every pass of the Server; or,
# for a body that can wake the server itself (responder.park), only when it does so or its own
# deadline comes (an SSE heartbeat); an app thread's response wakes it when the thread is done.
# Deadlines are checked by a sweep once the earliest of them is due (every new deadline is
# reported to the server with `remind`), and at most every `sweep_interval`; never per tick, so
# idle connections cost nothing between sweeps. Only WAITING stewards are touched on every pass.
# Under this package's Doist the ServerDoer sleeps until the next sweep unless a steward waits
# (its `urgent` wakes it for the next pass), so an idle server does not wake at all.
# An upgrade request ends the HTTP/1 stream: it is answered and the connection closes, unless it
# is a WebSocket handshake for one of the server's `websockets` endpoints; then `switch()` hands
# the connection to a protocol object (websocket.WebSocketSession) that takes the Steward's place
# both as the Connection's handler and in the server's stewards (deadline, sweep, shutdown).
# Draining (shutdown): every response says Connection: close and ends its connection; an idle
# connection's deadline becomes the end of `drain_window` (a proxy may be sending on it until
# it has marked this server down), and an idle deadline never closes a connection with unread
# bytes: they are a request, to be answered.

from __future__ import annotations

import contextlib
import enum
import fcntl
import importlib
import logging
import math
import socket
import sys
import termios
import time
from collections import deque
from typing import Any, Callable, Iterator, Optional, Protocol

from .accesslog import AccessLog
from .doing import Doer
from .net import Acceptor, Connection
from .polling import Poller, join_loop, leave_loop, poller_of
from .proxying import (FORWARDING_KEYS, ProxyProtocolError, TrustedPeers, apply_forwarding,
                       parse_proxy_header)
from .requesting import RequestError, Requestant
from .pool import AppPool
from .settings import Settings
from .responding import (DONE, WAITING, BaseResponder, CustomResponder, ErrorStream,
                         FileWrapper, Responder, build_environ)
from .stalls import StallWatch, stall_watch_of
from .threaded import ThreadedResponder

logger = logging.getLogger("hio_http.server")

WEBSOCKET_UPGRADE = "hio_http.websocket:upgrade"  # the handshake, resolved by name (see below)
PARSE_SLICE = 4096  # bytes parsed at a time while requests may be small and pipelined
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # RFC 9110 §9.2.1


class TrafficObserver(Protocol):
    """What a server tells of its traffic, when given one (hio_http.metrics.Metrics is)."""

    received: int  # bytes read from clients, added to as they come

    def responded(self, responder: BaseResponder, started: float) -> None:
        """A response finished; `started` is when it began (time.time())."""


class State(enum.Enum):
    """Where a connection stands; DEADLINES says which setting bounds each state."""

    HANDSHAKE = "handshake"    # TLS handshake not done
    IDLE = "idle"              # nothing of a next request yet
    HEAD = "head"              # some bytes of a request, head incomplete (slowloris)
    BODY = "body"              # head done, body arriving (per progress)
    RESPONDING = "responding"  # a responder is writing; deadline only while blocked (per drain)
    WAITING = "waiting"        # the app said "not yet", or an app thread works on the request
    CLOSING = "closing"        # an error answer is going out; then the connection closes


# The setting that bounds each state (its deadline counts from entering it); None: no deadline
# of its own (a parked body may ask for one; a closing answer gets a short grace).
DEADLINES: dict = {State.HANDSHAKE: "handshake_timeout", State.IDLE: "idle_timeout",
                   State.HEAD: "header_timeout", State.BODY: "body_timeout",
                   State.RESPONDING: "write_timeout", State.WAITING: None, State.CLOSING: None}
_DEFAULT = object()  # _expect(state): the deadline the table gives

__all__ = ["Settings", "Steward", "WSGISteward", "Server", "BareServer", "ServerDoer",
           "openServer"]


def resolve(spec: str) -> Callable:
    """`module:name` to the object it names. Optional parts (the WebSocket upgrade) are named,
    not imported, here, so the core never imports them; a server resolves them once."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class Steward:
    """Serves one connection: parses requests, answers them in order, enforces deadlines.

    Subclass and override `respond(request)` to answer with a responder; `BareServer` uses
    Stewards directly, `Server` uses `WSGISteward`.
    """

    def __init__(self, server: "BaseServer", sock: socket.socket, peer):
        self.server = server
        self.settings = server.settings
        self.requestant = Requestant(server.limits)
        self.responder: Optional[BaseResponder] = None
        self.deferred = None  # a request whose respond() said "not yet"
        self.ahead: deque = deque()  # (responder, started) of pipelined requests begun early
        self.unparsed = b""  # received bytes held back while max_pipeline requests wait
        self.started = 0.0  # when the current response began (for the access log)
        self.error: Optional[RequestError] = None  # answered after the requests before it
        self.refused = False  # an error response went out; the connection is closing
        self.eof = False  # the client sent EOF
        self.continued = None  # the request we sent "100 Continue" for
        self.deadline: Optional[float] = None
        self.state = State.IDLE
        self.protocol = None  # what the connection speaks after switch(), e.g. a WebSocket
        self.peer = peer  # the client: the socket's peer, or what a trusted proxy said
        # PROXY protocol is read only from trusted peers; from others the line is plain HTTP
        # garbage and gets a 400, so nobody can claim an address they do not have.
        self.proxy_header = (b"" if server.settings.proxy_protocol and server.trusts(peer)
                             else None)
        self.connection = Connection(sock, peer, server.poller, self)
        if self.connection.handshaking:
            self._expect(State.HANDSHAKE)
        else:
            self._expect(State.IDLE)

    # -- what subclasses provide --------------------------------------------------------------

    def respond(self, request) -> Optional[BaseResponder]:
        """Return the responder that answers `request`, typically a `CustomResponder`, or None
        for "not yet": it is asked again on each later pass, so an answer can wait for another
        doer. Runs once per request otherwise. The default calls the server's `handler`, or
        answers 404 when there is none."""
        handler = getattr(self.server, "handler", None)
        if handler is not None:
            return handler(request)
        return CustomResponder(404, [("Content-Type", "text/plain")], b"Not Found\n")

    def upgrade(self, request) -> Optional[BaseResponder]:
        """Answer a WebSocket handshake (`Upgrade: websocket`): switch to the server's endpoint
        for its path and return None, or return the responder that refuses it (404 when the
        path has no endpoint, 400 or 426 for a bad handshake)."""
        upgrade = self.server.websocket_upgrade
        if upgrade is None:  # the server has no WebSocket endpoints at all
            return CustomResponder(404, [("Content-Type", "text/plain; charset=utf-8")],
                                   b"no WebSocket endpoint at this path\n")
        return upgrade(self, request)

    def switch(self, protocol) -> None:
        """This connection now speaks another protocol (the 101 response has been queued).

        `protocol` takes the Steward's place: it gets the Connection's events (`received`,
        `drained`, `ended`, `closed`), stands in the server's stewards (the sweep reads its
        `deadline`, which it reports with `server.remind(deadline)`, and calls `expire(now)`;
        shutdown calls `wind_down()`; it must call `server.forget(protocol)` once closed), and
        `protocol.start(leftover)` is called with
        the bytes that followed the upgrade request's head.
        """
        server = self.server
        self.protocol = protocol
        server.waiting.discard(self)
        server.stewards.discard(self)
        server.stewards.add(protocol)
        self.connection.handler = protocol
        leftover, self.requestant.leftover = self.requestant.leftover, b""
        self.requestant.close()
        protocol.start(leftover)
        if self.eof and not self.connection.closed:
            protocol.ended()

    # -- Connection events --------------------------------------------------------------------

    def connected(self) -> None:
        self._expect(State.IDLE)

    def received(self, data: bytes) -> None:
        if self.refused:
            return  # an error was answered: nothing more is parsed on this connection
        metrics = self.server.metrics
        if metrics is not None:
            metrics.received += len(data)
        if self.proxy_header is not None:
            data = self._take_proxy_header(data)
            if not data:
                return
        self._parse(data)
        self.advance()

    def _parse(self, data: bytes) -> None:
        """Feed the parser, but stop once `max_pipeline` requests wait: the rest of the bytes
        wait unparsed (and reading pauses), so tiny pipelined requests cannot pile up as
        thousands of parsed objects. Bodies of known length go in one piece, for speed."""
        requestant = self.requestant
        offset, size = 0, len(data)
        try:
            if (size <= PARSE_SLICE and requestant.current is None
                    and len(requestant.requests) < self.settings.max_pipeline):
                requestant.feed(data)  # the usual few small requests: one feed
                offset = size
            while offset < size:
                if len(requestant.requests) >= self.settings.max_pipeline:
                    break
                current = requestant.current
                if current is not None and current.content_length is not None:
                    step = max(current.content_length - current.body_size, 1)
                else:
                    step = PARSE_SLICE
                requestant.feed(data if step >= size and not offset else
                                data[offset:offset + step])
                offset += step
        except RequestError as ex:
            self.error = ex
            offset = size
        except Exception:  # a parser bug must cost this connection only
            logger.exception("request parser failed")
            self.error = RequestError(400, "bad request")
            offset = size
        self.unparsed = data[offset:] if offset < size else b""

    def _take_proxy_header(self, data: bytes) -> bytes:
        """PROXY protocol (v1/v2) from a trusted proxy: learn the client's address first, then
        hand the rest to the HTTP parser. A malformed header closes the connection."""
        self.proxy_header += data
        try:
            parsed = parse_proxy_header(self.proxy_header)
        except ProxyProtocolError as ex:
            logger.info("bad PROXY protocol header from %s: %s", self.connection.peer, ex)
            self.refused = True
            self.connection.close()
            return b""
        if parsed is None:
            if self.state is not State.HEAD:
                self._expect(State.HEAD)
            return b""
        consumed, source, _ = parsed
        rest = self.proxy_header[consumed:]
        self.proxy_header = None
        if source is not None:
            self.peer = source
        return rest

    def drained(self) -> None:
        if self.responder is not None:
            self.advance()

    def ended(self) -> None:
        self.eof = True
        if self.state is State.WAITING and not (self.responder is not None
                                            and self.responder.working):
            # A client gone while its response waits for data (long-poll, event stream) would
            # otherwise only be noticed at the next write: free the connection now. (One an
            # app thread works on is finished: the client may only have shut its side.)
            self.connection.close()
            return
        self.advance()

    def closed(self) -> None:
        self.server.waiting.discard(self)
        if self.responder is not None:
            self.responder.close()
            self.responder = None
        while self.ahead:
            self.ahead.popleft()[0].close()
        self.requestant.close()
        self.server.forget(self)

    # -- the work -----------------------------------------------------------------------------

    def advance(self) -> None:
        """Make every step possible now: answer queued requests in order, then wait."""
        connection = self.connection
        stalls = self.server.stalls
        try:
            while not connection.closed:
                if self.responder is None and not self._begin_next():
                    break
                if stalls is None:
                    state = self.responder.pump()
                else:
                    previous = stalls.enter(self.responder)
                    try:
                        state = self.responder.pump()
                    finally:
                        stalls.leave(previous)
                if state is DONE:
                    if not self._finish_response():
                        return
                    continue
                if state is WAITING:
                    self._park()
                else:
                    self._expect(State.RESPONDING)
                break
            if self.responder is not None and self.responder.working:
                self._begin_ahead()
        except Exception:
            logger.exception("internal error serving %s", connection.peer)
            connection.close()
            return
        self._regulate_reading()

    def _park(self) -> None:
        """The body said "not yet": let it wake us if it can, else ask it on every pass."""
        self._expect(State.WAITING, None)  # first: a wake may come before park() even returns
        parked, seconds = self.responder.park(self._wake)
        if not parked:
            self.server.waiting.add(self)
        elif seconds is not None:
            self._expect(State.WAITING, seconds)

    def _wake(self) -> None:
        """A parked body has more, or an app thread got further (called from any thread):
        resume on the next pass."""
        if not self.connection.closed:
            self.server.nudge(self)

    def wind_down(self) -> None:
        """The server is draining. Every response from now on says Connection: close (unless
        its head is out already) and ends the connection. An idle connection stays open until
        the drain window ends, since a load balancer may be sending a request on it right now:
        closing it would lose that request. An event stream ends now (its client reconnects,
        to another process)."""
        for responder in (self.responder, *(early for early, _ in self.ahead)):
            if responder is not None and not responder.head_sent:
                responder.keep_alive = False
        if self.responder is None and self._idle():
            self._expect(State.IDLE, self.server.drain_left())
        elif self.state is State.WAITING and is_event_stream(self.responder):
            self.responder.end_now()
            self._finish_response()

    def _unread(self) -> bool:
        """Whether bytes from the client wait in the kernel, unread (a request on its way)."""
        return _unread_bytes(self.connection.sock) > 0

    def _idle(self) -> bool:
        requestant = self.requestant
        return (self.deferred is None and not requestant.requests and requestant.current is None
                and not requestant.busy and self.error is None and not self.unparsed
                and not self.ahead)

    def resume(self) -> None:
        """A later pass for a responder that said "not yet"."""
        self.server.waiting.discard(self)
        self.advance()

    def _begin_next(self) -> bool:
        """Start a responder for the oldest complete request, or answer an error; False: wait."""
        requestant = self.requestant
        if self.ahead:
            responder, started = self.ahead.popleft()
            self.responder = responder
            if self.server.timed:
                self.started = time.time()
            if not started:
                self._start(responder)
            return self.responder is not None
        if self.unparsed and not requestant.requests and self.error is None:
            self._parse(self.unparsed)
        if self.deferred is not None or requestant.requests:
            request = self.deferred or requestant.requests.popleft()
            if self.server.closing or request.upgrade is not None:
                # After an upgrade request llhttp reads no further HTTP/1: unless the protocol
                # switches, the connection closes after the answer.
                request.keep_alive = False
            responder = self._responder_for(request)
            if self.protocol is not None:  # switched: the connection is no longer ours
                return False
            if responder is None and self.connection.closed:  # gone while being answered
                return False
            if responder is None:  # "not yet": ask again on the next pass
                self.deferred = request
                self.server.waiting.add(self)
                self._expect(State.WAITING, None)
                return False
            self.deferred = None
            self.responder = responder
            if self.server.timed:
                self.started = time.time()
            self._start(responder)
            # Starting may already lose the client (a sendfile to a reset peer), which closes
            # the connection and releases the responder: then there is nothing to pump.
            return self.responder is not None
        if self.error is not None:
            self._answer_error(self.error.status, self.error.message)
            return False
        current = requestant.current
        server = self.server
        if self.eof or (server.closing and self._idle() and not server.drain_left()):
            # Nothing is left to answer, or the drain window is over: what is queued still goes.
            self.connection.close_when_drained()
        elif current is not None:
            if not self._check_expectation(current):
                return False
            self._expect(State.BODY)
        elif requestant.busy:
            if self.state is not State.HEAD:
                self._expect(State.HEAD)
        else:
            self._expect(State.IDLE, server.drain_left() if server.closing else _DEFAULT)
        return False

    def _begin_ahead(self) -> None:
        """While an app thread works on a request with a safe method, begin the pipelined
        requests after it that are safe too, on other threads (RFC 9112 §9.3.2): each collects
        its response (up to high_water) until its turn comes to be sent, in order."""
        pool = getattr(self.server, "pool", None)
        requests = self.requestant.requests
        if (pool is None or not requests or self.server.closing or self.error is not None
                or self.responder.request.method not in SAFE_METHODS):
            return
        while (requests and len(self.ahead) < pool.size and requests[0].upgrade is None
               and requests[0].method in SAFE_METHODS):
            request = requests.popleft()
            responder = self._responder_for(request)
            if responder is None:  # "not yet" (not from a WSGI steward): keep it in line
                requests.appendleft(request)
                return
            # Only a threaded responder may begin out of turn: it sends nothing until pumped.
            started = isinstance(responder, ThreadedResponder)
            if started:
                responder.start()
            self.ahead.append((responder, started))

    def _start(self, responder: BaseResponder) -> None:
        stalls = self.server.stalls
        if stalls is None:
            responder.start()
            return
        previous = stalls.enter(responder)
        try:
            responder.start()  # where an app on the loop runs
        finally:
            stalls.leave(previous)

    def _responder_for(self, request) -> Optional[BaseResponder]:
        try:
            if request.upgrade is not None and request.upgrade.strip().lower() == "websocket":
                responder = self.upgrade(request)
            else:
                responder = self.respond(request)
        except Exception:
            logger.exception("error in %s.respond for %s %s", type(self).__name__,
                             request.method, request.target)
            responder = CustomResponder(500, [("Content-Type", "text/plain")],
                                        b"Internal Server Error\n")
            request.keep_alive = False
        if responder is not None:
            if responder.connection is None:
                responder.attach(self.connection, request, self.server.server_header)
            responder.high_water = self.settings.high_water
            if self.settings.compress or responder.compress is not None:
                responder.use_compression(self.server.compression, self.settings.compress)
        return responder

    def _finish_response(self) -> bool:
        """Close out the finished responder; False if the connection closes after it."""
        responder, self.responder = self.responder, None
        if responder is None:  # the connection closed under it (a reset while writing)
            return False
        server = self.server
        server.waiting.discard(self)
        responder.close()
        server.served += 1
        if server.access is not None:
            server.access.log(self.connection.peer, responder, self.started)
        if server.metrics is not None:
            server.metrics.responded(responder, self.started)
        if responder.broken:
            self.connection.close()  # a truncated response must not look complete
            return False
        if not responder.keep_alive or server.closing:
            self.connection.close_when_drained()
            return False
        return True

    def _check_expectation(self, request) -> bool:
        """Expect: 100-continue gets "100 Continue" once its turn comes; anything else 417."""
        expect = request.header("expect")
        if expect is None or request is self.continued:
            return True
        if not request.expect_continue:
            self._answer_error(417, f"unsupported expectation {expect!r}")
            return False
        self.continued = request
        self.connection.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _answer_error(self, status: int, message: str) -> None:
        """Answer a request that cannot be served with `status`, then close (RFC 9112 §9.6)."""
        self.error = None
        self.refused = True
        self.requestant.close()
        request = self.requestant.current or _Unparsed()
        responder = BaseResponder(self.connection, request, self.server.server_header)
        responder.send_error(status, message)
        self.connection.close_when_drained()
        self._expect(State.RESPONDING)

    def _regulate_reading(self) -> None:
        """Backpressure on pipelining: stop reading while too many requests wait their turn."""
        connection = self.connection
        if connection.closed or self.eof or self.protocol is not None:
            return
        if self.unparsed or self.error or (
                len(self.requestant.requests) >= self.settings.max_pipeline) or (
                self.responder is not None and self.responder.queued):  # no thread free
            if connection.reading:
                connection.pause_reading()
        elif not connection.reading:
            connection.resume_reading()

    # -- deadlines ----------------------------------------------------------------------------

    def _expect(self, state: State, timeout: Any = _DEFAULT) -> None:
        """Enter `state`, with the deadline its setting gives (DEADLINES) unless `timeout`
        (seconds, or None for no deadline) says otherwise. Every state change comes here."""
        self.state = state
        if timeout is _DEFAULT:
            setting = DEADLINES[state]
            timeout = getattr(self.settings, setting) if setting is not None else None
        if timeout is None:
            self.deadline = None
        else:
            self.deadline = self.server.clock() + timeout
            self.server.remind(self.deadline)

    def expire(self, now: float) -> None:
        """The deadline passed: idle connections just close; a slow request gets 408; a parked
        body is asked again (it wanted to be, e.g. for a heartbeat)."""
        if self.state is State.WAITING:
            self.resume()
            return
        if self.state is State.IDLE and self._unread():
            # A request arrived as the deadline passed: closing now would lose it unanswered.
            self._expect(State.IDLE, self.server.sweep_interval)
            return
        logger.info("closing %s connection from %s: %s timeout", self.state.value,
                    self.connection.peer, self.state.value)
        if (self.state in (State.HEAD, State.BODY) and self.responder is None
                and not self.connection.pending):
            self._answer_error(408, "request timeout")
            self._expect(State.CLOSING, min(1.0, self.settings.write_timeout))
        else:
            self.connection.close()


def _unread_bytes(sock: socket.socket) -> int:
    """Bytes waiting in the socket's receive queue (FIONREAD), 0 if it cannot say."""
    try:
        buffer = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int.from_bytes(buffer, sys.byteorder)


def is_event_stream(responder: Optional[BaseResponder]) -> bool:
    """A response that is an open-ended event stream, its head out and its body parked."""
    if responder is None or not responder.head_sent or responder.working:
        return False
    for name, value in responder.headers:
        if name.lower() == "content-type":
            return value.lower().startswith("text/event-stream")
    return False


class _Unparsed:
    """Stands in for a request whose head never parsed, when answering an error."""

    method = "GET"
    version = "1.1"
    keep_alive = False
    target = "*"


class WSGISteward(Steward):
    """A Steward that answers with the server's WSGI application."""

    def __init__(self, server: "Server", sock: socket.socket, peer):
        super().__init__(server, sock, peer)
        self.environ_base: Optional[dict] = None  # made on the first request: after PROXY

    def respond(self, request) -> BaseResponder:
        if self.environ_base is None:
            self.environ_base = self.server.connection_environ(self.peer)
        environ = build_environ(self.environ_base, request, self.settings.root_path)
        if not environ.keys().isdisjoint(FORWARDING_KEYS):
            apply_forwarding(environ, self.server.trusted)
        pool = self.server.pool
        if pool is not None:
            return ThreadedResponder(self.connection, request, self.server.app, environ,
                                     pool=pool, wake=self._wake,
                                     server_header=self.server.server_header)
        return Responder(self.connection, request, self.server.app, environ,
                         server_header=self.server.server_header)


class BaseServer:
    """Listening sockets, the stewards of their connections, and the sweep of deadlines."""

    steward_class: type = Steward

    def __init__(self, poller: Optional[Poller] = None, clock: Optional[Callable] = None,
                 steward: Optional[type] = None, sockets: Optional[list] = None,
                 websockets: Optional[dict] = None, **settings):
        self.settings = Settings(**settings)
        # WebSocket endpoints: path -> handler class (or any factory of a WebSocketHandler)
        self.websockets: dict = dict(websockets or {})
        # The handshake is resolved once, and only when there are endpoints: the server knows
        # WebSockets only as this callable (and wsproto is not loaded without them).
        self.websocket_upgrade: Optional[Callable] = (resolve(WEBSOCKET_UPGRADE)
                                                      if self.websockets else None)
        self.limits = self.settings.limits()
        self.compression = self.settings.compression()  # applied when `compress` is on
        self.server_header = (f"Server: {self.settings.server_header}\r\n".encode("latin-1")
                              if self.settings.server_header else b"")
        if steward is not None:
            self.steward_class = steward
        self.poller = poller
        self.owns_poller = False
        self.clock = clock or time.monotonic
        self.acceptors: list = []
        self.sockets = list(sockets or [])  # listening sockets opened elsewhere (workers)
        self.stewards: set = set()
        self.waiting: set = set()
        self.stalls: Optional[StallWatch] = None  # told what the loop is doing, when set
        self.closing = False
        self.opened = False
        self.drain_until = math.inf  # on `clock`: idle connections close then, once draining
        self.served = 0  # responses finished
        self.access = (AccessLog(self.settings.access_log_format) if self.settings.access_log
                       else None)
        # Told of every finished response (`responded(responder, started)`) and of the bytes
        # received (added to `received`); see hio_http.metrics. Set before `open()`.
        self.metrics: Optional[TrafficObserver] = None
        self.timed = self.access is not None  # whether responses note when they began
        self.trusted = TrustedPeers(self.settings.forwarded_allow_ips)
        self._next_sweep = math.inf  # the earliest deadline not yet swept
        self._last_sweep = -math.inf
        # the least time between sweeps: the setting, or a quarter of the shortest timeout
        settings = self.settings
        shortest = min(settings.idle_timeout, settings.header_timeout, settings.body_timeout,
                       settings.write_timeout, settings.handshake_timeout,
                       settings.ws_ping_interval, settings.ws_ping_timeout)
        self.sweep_interval = max(0.001, min(settings.sweep_interval, shortest / 4))

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> "BaseServer":
        """Start listening; returns once every socket is bound and listening."""
        if self.opened:
            return self
        if self.poller is None:
            self.poller = Poller()
            self.owns_poller = True
        settings = self.settings
        self.timed = self.access is not None or self.metrics is not None
        try:
            for sock in self.sockets:
                self.acceptors.append(Acceptor(None, self.poller, self._accept, sock=sock))
            if not self.sockets:
                for address in self.bind_addresses():
                    self.acceptors.append(Acceptor(address, self.poller, self._accept,
                                                   backlog=settings.backlog,
                                                   reuse_port=settings.reuse_port))
        except BaseException:
            self._close_acceptors()
            raise
        self.opened = True
        self.closing = False
        return self

    def bind_addresses(self) -> list:
        settings = self.settings
        first = settings.unix if settings.unix else (settings.host, settings.port)
        return [first, *settings.binds]

    def shutdown(self) -> None:
        """Begin a graceful stop (draining): listen no more, answer every request still coming
        on open connections with Connection: close, end event streams and WebSockets (1001),
        and close connections left idle once `drain_window` has passed. `drained` turns True
        when the last one closes; `close()` ends the rest at once."""
        if self.closing:
            return
        for acceptor in self.acceptors:
            # Connections the kernel completed but nobody accepted would be reset by the
            # close below, after the client may have sent its request: take them first.
            acceptor.take_waiting()
        self.closing = True
        self.drain_until = self.clock() + self.settings.drain_window
        self._close_acceptors()
        for steward in list(self.stewards):
            steward.wind_down()

    def drain_left(self) -> float:
        """Seconds left of the drain window (0 when it is over, or not draining)."""
        return max(0.0, self.drain_until - self.clock()) if self.closing else 0.0

    @property
    def drained(self) -> bool:
        return self.closing and not self.stewards

    def close(self) -> None:
        """Stop listening and close every connection now."""
        self._close_acceptors()
        for steward in list(self.stewards):
            steward.connection.close()
        self.stewards.clear()
        self.waiting.clear()
        if self.owns_poller and self.poller is not None:
            self.poller.close()
            self.poller = None
            self.owns_poller = False
        self.opened = False

    def _close_acceptors(self) -> None:
        for acceptor in self.acceptors:
            acceptor.close()
        self.acceptors = []

    @property
    def acceptor(self) -> Optional[Acceptor]:
        """The first listening socket's acceptor (None when not listening)."""
        return self.acceptors[0] if self.acceptors else None

    @property
    def address(self):
        """The first bound address: (host, port) (IPv6: (host, port, flow, scope)) or a path."""
        return self.acceptors[0].address if self.acceptors else None

    @property
    def url(self) -> str:
        """The URL of the first listening socket."""
        if not self.acceptors:
            raise RuntimeError("the server is not open")
        return self.urls[0]

    @property
    def urls(self) -> list:
        scheme = "https" if self.settings.ssl_context else "http"
        urls = []
        for acceptor in self.acceptors:
            if acceptor.unix:
                urls.append(f"{scheme}+unix://{acceptor.address}")
            else:
                host, port = acceptor.address[:2]
                host = f"[{host}]" if ":" in host else host
                urls.append(f"{scheme}://{host}:{port}")
        return urls

    # -- the loop -----------------------------------------------------------------------------

    def service(self) -> None:
        """One turn: dispatch ready sockets (if the Poller is ours), resume waiting
        responders, and sweep deadlines when due. Call it every tick, or at least whenever
        `waiting` is not empty and once `sweep_due()` has come."""
        if self.owns_poller:
            self.poller.poll(0)
        if self.waiting:
            for steward in list(self.waiting):
                steward.resume()
        now = self.clock()
        if now >= self._next_sweep and now >= self._last_sweep + self.sweep_interval:
            self.sweep(now)

    def remind(self, deadline: float) -> None:
        """A steward's deadline is now `deadline`: sweep no later than that."""
        if deadline < self._next_sweep:
            self._next_sweep = deadline

    def sweep_due(self) -> float:
        """When, on `clock`, the next sweep is due (math.inf: no deadline is set)."""
        return max(self._next_sweep, self._last_sweep + self.sweep_interval)

    def nudge(self, steward) -> None:
        """Resume `steward` on the loop's next pass. Safe from any thread: it wakes the loop."""
        self.waiting.add(steward)
        if self.poller is not None:
            self.poller.wake()

    def sweep(self, now: float) -> None:
        """Expire every connection whose deadline has passed; note the earliest of the rest."""
        self._last_sweep = now
        expired = []
        earliest = math.inf
        for steward in self.stewards:
            deadline = steward.deadline
            if deadline is None:
                continue
            if deadline <= now:
                expired.append(steward)
            elif deadline < earliest:
                earliest = deadline
        self._next_sweep = earliest  # expire() may set new deadlines: they remind() in turn
        for steward in expired:
            try:
                steward.expire(now)
            except Exception:
                logger.exception("error expiring a connection")
                steward.connection.close()

    # -- connections --------------------------------------------------------------------------

    def _accept(self, sock: socket.socket, peer) -> None:
        context = self.settings.ssl_context
        try:
            if context is not None:
                sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            steward = self.steward_class(self, sock, peer)
        except Exception:
            logger.exception("could not set up a connection from %s", peer)
            sock.close()
            return
        if not steward.connection.closed:
            self.stewards.add(steward)
        if len(self.stewards) >= self.settings.max_connections:
            for acceptor in self.acceptors:
                acceptor.pause()

    def trusts(self, peer) -> bool:
        """Whether `peer` (a socket peer address) may speak for clients."""
        return (peer[0] if isinstance(peer, tuple) else "") in self.trusted

    def forget(self, steward: Steward) -> None:
        self.stewards.discard(steward)
        if not self.closing and len(self.stewards) < self.settings.max_connections:
            for acceptor in self.acceptors:
                acceptor.resume()


class BareServer(BaseServer):
    """Serves requests without WSGI: `BareServer(steward=MySteward)` with a Steward subclass
    overriding `respond(request)`, or `BareServer(handler=func)` where `func(request)` returns a
    `CustomResponder` (or None for "not yet"). `websockets={path: WebSocketHandler subclass}`
    serves WebSocket endpoints on the same port."""

    def __init__(self, handler: Optional[Callable] = None, **kwa):
        super().__init__(**kwa)
        self.handler = handler


class Server(BaseServer):
    """Hosts a WSGI application: `Server(app, host="127.0.0.1", port=0, **settings)`, with
    WebSocket endpoints beside it on the same port: `websockets={path: WebSocketHandler
    subclass}`. (The command line serves `hio_http.demo.app` when no app is named.)"""

    steward_class = WSGISteward

    def __init__(self, app: Callable, **kwa):
        if not callable(app):
            raise TypeError(f"Server needs a WSGI app (a callable), not {app!r}")
        super().__init__(**kwa)
        self.app = app
        self.errors = ErrorStream()
        self.pool: Optional[AppPool] = None  # app calls run here when `threads` is set

    def open(self) -> "Server":
        super().open()
        settings = self.settings
        if settings.threads and self.pool is None:
            self.pool = AppPool(settings.threads, settings.thread_queue,
                                slow_after=settings.timeout)
        address = self.address
        scheme = "https" if self.settings.ssl_context else "http"
        if self.acceptor.unix:
            name, port = "localhost", "80"
        else:
            name, port = address[0], str(address[1])
        self._environ = {
            "SERVER_NAME": name, "SERVER_PORT": port, "SCRIPT_NAME": "",
            "SERVER_SOFTWARE": self.settings.server_header or "hio_http",
            "wsgi.version": (1, 0), "wsgi.url_scheme": scheme, "wsgi.errors": self.errors,
            "wsgi.multithread": self.pool is not None, "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True, "wsgi.file_wrapper": FileWrapper,
            # set for each request; present here so that a request's copy never grows its table
            "REQUEST_METHOD": "", "PATH_INFO": "", "QUERY_STRING": "", "RAW_URI": "",
            "REQUEST_URI": "", "SERVER_PROTOCOL": "", "wsgi.input": None,
            "hio_http.trailers": None,
        }
        return self

    def close(self) -> None:
        super().close()
        if self.pool is not None:
            self.pool.close()  # threads end once idle; one stuck in an app does not hold us
            self.pool = None

    def connection_environ(self, peer) -> dict:
        environ = self._environ.copy()
        if isinstance(peer, tuple):
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = peer[0], str(peer[1])
        else:  # unix socket peers have no address (trust them with "unix" or "*")
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = "", ""
        return environ


class ServerDoer(Doer):
    """Runs a server in a Doist: opens it on enter, services it, closes it on exit.

    Under this package's Doist the server shares the Doist's Poller, so its sockets are
    serviced the moment they are ready, and the doer sleeps until the next deadline sweep
    unless a response waits on the app or a stop began (then it runs every `tock`, 0: every
    pass). Under a scheduler without a Poller (hio's Doist) the server polls its own Poller on
    each turn. `stop()` (safe from a signal handler or another thread) begins a graceful
    shutdown; the doer is done once the server drained or `graceful_timeout` passed.
    """

    MAX_NAP = 60.0  # the longest sleep, even with no deadline at all

    def __init__(self, server: BaseServer, **kwa):
        super().__init__(**kwa)
        self.server = server
        self.nested: Optional[Poller] = None
        self.own_stalls: Optional[StallWatch] = None
        self.stopping = False
        self.stop_deadline: Optional[float] = None
        self.pace = 0.0  # the tock asked for, kept while there is work every turn
        self.napping = False  # whether it may sleep between sweeps (a Poller wakes the Doist)
        self.wake_by = math.inf  # the sweep it sleeps until, on the server's clock

    @property
    def urgent(self) -> bool:
        """A response waits on the app, a stop began, or a new deadline comes before the
        sweep this doer sleeps until."""
        server = self.server
        return self.stopping or bool(server.waiting) or server.sweep_due() < self.wake_by

    def stop(self) -> None:
        self.stopping = True
        if self.server.poller is not None:
            self.server.poller.wake()

    def enter(self) -> None:
        self._watch_stalls()
        if not self.server.opened:
            self.server.clock = self.tymth  # deadlines follow the Doist's tyme
        self.nested = join_loop(self.server, self.tymth)
        self.pace = self.tock
        self.napping = poller_of(self.tymth) is not None

    def recur(self, tyme: float) -> bool:
        server = self.server
        server.service()
        if self.stopping:
            now = server.clock()
            if self.stop_deadline is None:
                self.stop_deadline = now + server.settings.graceful_timeout
                server.shutdown()
            if server.drained or now >= self.stop_deadline:
                return True
        if self.napping:
            self._plan_nap()
        return False

    def _plan_nap(self) -> None:
        server = self.server
        if self.stopping or server.waiting:
            self.tock, self.wake_by = self.pace, math.inf
        else:
            self.wake_by = server.sweep_due()
            self.tock = max(self.pace, min(self.MAX_NAP, self.wake_by - server.clock()))

    def _watch_stalls(self) -> None:
        """Tell the Doist's StallWatch (or one of our own) what the server's loop does."""
        stalls = stall_watch_of(self.tymth)
        threshold = self.server.settings.stall_warning
        if stalls is None and threshold > 0:
            stalls = self.own_stalls = StallWatch(threshold)
            stalls.bind()
        self.server.stalls = stalls

    def exit(self) -> None:
        leave_loop(self.nested, self.tymth)
        self.nested = None
        self.server.close()
        self.server.stalls = None
        if self.own_stalls is not None:
            self.own_stalls.stop()
            self.own_stalls = None


@contextlib.contextmanager
def openServer(cls: type = Server, **kwa) -> Iterator[BaseServer]:
    """Open a server for the with-block and always close it, even when the block raises."""
    server = cls(**kwa)
    try:
        server.open()
        yield server
    finally:
        server.close()
