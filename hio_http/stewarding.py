"""One connection of a server: a `Steward` parses its requests with a Requestant, answers them
in order with responders, keeps its deadline (a `State` and the DEADLINES table), and serves
keep-alive and pipelining; `WSGISteward` answers with the server's WSGI app. Nothing here
blocks, and one connection's failure (bad bytes, an app exception, a reset) touches no other.
"""

# Theory of operation
# -------------------
# All socket work happens in Poller callbacks: Acceptor -> the server's _accept -> Steward;
# Connection -> Steward.received/drained/ended/closed. A Steward is in one `State` at a time
# (the Enum below says what each means), each bounded by the setting the DEADLINES table names;
# every change of state goes through `Steward._expect`, which sets the deadline from that table.
# A WAITING steward (the app said "not yet", b"") is resumed on every pass of the server; or,
# for a body that can wake the server itself (responder.park), only when it does so or its own
# deadline comes (an SSE heartbeat); an app thread's response wakes it when the thread is done.
# An upgrade request ends the HTTP/1 stream: it is answered and the connection closes, unless it
# is a WebSocket handshake for one of the server's `websockets` endpoints; then `switch()` hands
# the connection to a protocol object (websocket.WebSocketSession) that takes the Steward's place
# both as the Connection's handler and in the server's stewards (deadline, sweep, shutdown).
# Draining (shutdown): every response says Connection: close and ends its connection; an idle
# connection's deadline becomes the end of `drain_window` (a proxy may be sending on it until
# it has marked this server down), and an idle deadline never closes a connection with unread
# bytes: they are a request, to be answered.

from __future__ import annotations

import enum
import fcntl
import logging
import socket
import sys
import termios
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Optional, TypeGuard, cast

from mypy_extensions import mypyc_attr

from .hosting import (Answer, BareHandler, ServerState, Switched, TrafficObserver, Upgrade,
                      WSGIHost)
from .net import Connection
from .forwarding import FORWARDING_KEYS, apply_forwarding
from .proxy_protocol import ProxyProtocolError, parse_proxy_header
from .framing import DONE, WAITING, BaseResponder, wall_time
from .requesting import Request, RequestError, Requestant
from .responding import BareResponder, CustomResponder, Responder
from .threaded import ThreadedResponder
from .wsgi import StartResponse, WSGIApp, build_environ

if TYPE_CHECKING:
    from .settings import Settings


logger: Final = logging.getLogger("hio_http.server")

__all__ = ["Steward", "WSGISteward", "State", "DEADLINES", "BareHandler", "WSGIApp",
           "StartResponse", "Upgrade", "TrafficObserver", "is_event_stream",
           "ServerState", "WSGIHost", "Switched"]  # hosting's, named here too

NOT_FOUND: Final = CustomResponder(404, [("Content-Type", "text/plain")], b"Not Found\n")
SERVER_ERROR: Final = CustomResponder(500, [("Content-Type", "text/plain")],
                                      b"Internal Server Error\n")
NO_WEBSOCKETS: Final = CustomResponder(404, [("Content-Type", "text/plain; charset=utf-8")],
                                       b"no WebSocket endpoint at this path\n")

PARSE_SLICE: Final = 4096  # bytes parsed at a time while requests may be small and pipelined
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # RFC 9110 §9.2.1


class State(enum.Enum):
    """Where a connection stands; DEADLINES says which setting bounds each state."""

    HANDSHAKE = "handshake"    # TLS handshake not done
    IDLE = "idle"              # nothing of a next request yet
    HEAD = "head"              # some bytes of a request, head incomplete (slowloris)
    BODY = "body"              # head done, body arriving (per progress)
    RESPONDING = "responding"  # a responder is writing; deadline only while blocked (per drain)
    WAITING = "waiting"        # the app said "not yet", or an app thread works on the request
    CLOSING = "closing"        # an error answer is going out; then the connection closes

    # Members are unique, so identity hashes them: Enum's own hash is a Python call, and the
    # server's timeouts (made from DEADLINES) are looked up on nearly every request.
    __hash__ = object.__hash__


# The setting that bounds each state (its deadline counts from entering it); None: no deadline
# of its own (a parked body may ask for one; a closing answer gets a short grace).
DEADLINES: Final[dict[State, Optional[str]]] = {
    State.HANDSHAKE: "handshake_timeout", State.IDLE: "idle_timeout",
    State.HEAD: "header_timeout", State.BODY: "body_timeout",
    State.RESPONDING: "write_timeout", State.WAITING: None, State.CLOSING: None}
_DEFAULT: Final[Any] = object()  # _expect(state): the deadline the table gives (Any: a sentinel)
_FORWARDING_KEYS: Final = FORWARDING_KEYS  # a static of the compiled module, not a look-up


@mypyc_attr(allow_interpreted_subclasses=True)
class Steward:
    """Serves one connection: parses requests, answers them in order, enforces deadlines.

    Subclass and override `respond(request)` to answer with a responder; `BareServer` uses
    Stewards directly, `Server` uses `WSGISteward`.
    """

    server: ServerState  # the serving.BaseServer that accepted the connection
    unstarted = False  # self.responder is yet to be started (advance() does it)

    def __init__(self, server: ServerState, sock: socket.socket, peer: object):
        self.server = server
        self.settings: Settings = server.settings
        self.requestant = Requestant(server.limits)
        self.responder: Optional[BaseResponder] = None
        self.deferred: Optional[Request] = None  # a request whose respond() said "not yet"
        # (responder, started) of pipelined requests begun early
        self.ahead: deque[tuple[BaseResponder, bool]] = deque()
        self.unparsed = b""  # received bytes held back while max_pipeline requests wait
        self.started = 0.0  # when the current response began (for the access log)
        self.error: Optional[RequestError] = None  # answered after the requests before it
        self.refused = False  # an error response went out; the connection is closing
        self.eof = False  # the client sent EOF
        self.continued: Optional[Request] = None  # the request we sent "100 Continue" for
        self.deadline: Optional[float] = None
        self.state = State.IDLE
        # what the connection speaks after switch(), e.g. a WebSocket
        self.protocol: Optional[Switched] = None
        self.peer = peer  # the client: the socket's peer, or what a trusted proxy said
        # PROXY protocol is read only from trusted peers; from others the line is plain HTTP
        # garbage and gets a 400, so nobody can claim an address they do not have.
        self.proxy_header: Optional[bytes] = (
            b"" if server.settings.proxy_protocol and server.trusts(peer) else None)
        poller = server.poller
        assert poller is not None  # a server accepts only while open
        # Watched from read_first(), which the server calls once it has counted the steward.
        self.connection = Connection(sock, peer, poller, self, watch=False)
        # Answers made while the Poller dispatches go out together at its end (see
        # Connection._batch); under TLS each send stays a record of its own, at once.
        self.connection.batch_sends = not self.connection.tls
        if self.connection.handshaking:
            self._expect(State.HANDSHAKE)
        else:
            self._expect(State.IDLE)

    # -- what subclasses provide --------------------------------------------------------------

    def respond(self, request: Request) -> Optional[Answer]:
        """Return the answer to `request`, typically a `CustomResponder` (or a responder made
        for it on `self.connection`), or None for "not yet": it is asked again on each later
        pass, so an answer can wait for another doer. Runs once per request otherwise. The
        default calls the server's `handler`, or answers 404 when there is none."""
        handler = self.server.handler
        if handler is not None:
            return handler(request)
        return NOT_FOUND

    def upgrade(self, request: Request) -> Optional[Answer]:
        """Answer a WebSocket handshake (`Upgrade: websocket`): switch to the server's endpoint
        for its path and return None, or return the responder that refuses it (404 when the
        path has no endpoint, 400 or 426 for a bad handshake)."""
        upgrade = self.server.websocket_upgrade
        if upgrade is None:  # the server has no WebSocket endpoints at all
            return NO_WEBSOCKETS
        return upgrade(self, request)

    def switch(self, protocol: Switched) -> None:
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
                    and len(requestant.requests) < self.server.max_pipeline):
                requestant.feed(data)  # the usual few small requests: one feed
                self.unparsed = b""
                return
            while offset < size:
                if len(requestant.requests) >= self.server.max_pipeline:
                    break
                current = requestant.current
                if current is not None and current.content_length is not None:
                    step = max(current.content_length - current.body_size, 1)
                else:  # a head, or a chunked body: a slice beyond the chunk data under way
                    step = PARSE_SLICE + requestant.chunk_data_left()
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
        assert self.proxy_header is not None  # only called while it is being read
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
                # A responder is set now (_begin_next returned True), which mypy cannot follow.
                responder: BaseResponder = self.responder  # type: ignore[assignment]
                # The app's call and the first pull of its body are one activity to the stall
                # watch (it names the responder either way): two calls fewer per request.
                previous = stalls.enter(responder) if stalls is not None else None
                try:
                    if self.unstarted:
                        self.unstarted = False
                        responder.start()  # where an app on the loop runs
                        if self.responder is None:
                            # Starting lost the client (a sendfile to a reset peer), which
                            # closed the connection and released the responder.
                            return
                        if not responder.keep_alive and not responder.working:
                            # The connection's last response, answered on the loop: its tail
                            # may go out with the close's FIN (uncorked below if the body
                            # has to wait instead).
                            connection.cork()
                    state = responder.pump()
                finally:
                    if stalls is not None:
                        stalls.leave(previous)
                if state is DONE:
                    if not self._finish_response():
                        return
                    continue
                connection.uncork()  # what waits for the rest of the body is sent now
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
        # The usual end, everything answered and reading on, leaves nothing to regulate: the
        # call is saved then (see _regulate_reading for what it weighs).
        if (self.responder is not None or self.unparsed or self.error is not None
                or self.requestant.requests or not connection.reading):
            self._regulate_reading()

    def _park(self) -> None:
        """The body said "not yet": let it wake us if it can, else ask it on every pass."""
        self._expect(State.WAITING, None)  # first: a wake may come before park() even returns
        parked, seconds = self.responder.park(self._wake)  # type: ignore[union-attr]  # pumped
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
        """Take up a responder for the oldest complete request (advance() starts it, if it was
        not begun ahead), or answer an error; False: wait."""
        requestant = self.requestant
        responder: Optional[BaseResponder]
        if self.ahead:
            responder, started = self.ahead.popleft()
            self.responder = responder
            if self.server.timed:
                self.started = wall_time()
            self.unstarted = not started  # advance() starts it
            return True
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
                self.started = wall_time()
            self.unstarted = True  # advance() starts it
            return True
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
        pool = self.server.pool
        requests = self.requestant.requests
        # (advance() calls this while self.responder works; its request is set by then)
        if (pool is None or not requests or self.server.closing or self.error is not None
                or self.responder.request.method  # type: ignore[union-attr]
                not in SAFE_METHODS):
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

    def _responder_for(self, request: Request) -> Optional[BaseResponder]:
        """The responder for `request` (None: "not yet"); an answer is made into one here."""
        try:
            if request.upgrade is not None and request.upgrade.strip().lower() == "websocket":
                answer = self.upgrade(request)
            else:
                answer = self.respond(request)
            if isinstance(answer, BaseResponder) or answer is None:
                return answer
            if isinstance(answer, CustomResponder):
                return BareResponder(self.connection, request, self.server.response_settings,
                                     answer)
            raise TypeError(f"an answer must be a CustomResponder, a responder or None, not "
                            f"{type(answer).__name__}")
        except Exception:
            logger.exception("error in %s.respond for %s %s", type(self).__name__,
                             request.method, request.target)
            request.keep_alive = False
            return BareResponder(self.connection, request, self.server.response_settings,
                                 SERVER_ERROR)

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
        metrics = server.metrics
        if metrics is not None:  # += rather than extend(): no method to look up and call
            metrics.noted += (wall_time() - self.started, responder.request.method,
                              responder.status, responder.sent)
        if responder.broken:
            self.connection.close()  # a truncated response must not look complete
            return False
        if not responder.keep_alive or server.closing:
            self.connection.close_when_drained()
            return False
        return True

    def _check_expectation(self, request: Request) -> bool:
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
        # a request whose head never parsed: answered as a GET of "*" that ends the connection
        request = self.requestant.current or Request(target="*", keep_alive=False)
        responder = BaseResponder(self.connection, request, self.server.response_settings)
        responder.send_error(status, message)
        self.connection.close_when_drained()
        self._expect(State.RESPONDING)

    def _regulate_reading(self) -> None:
        """Backpressure on pipelining: stop reading while too many requests wait their turn."""
        connection = self.connection
        if connection.closed or self.eof or self.protocol is not None:
            return
        if self.unparsed or self.error or (
                len(self.requestant.requests) >= self.server.max_pipeline) or (
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
            timeout = self.server.timeouts[state]  # as DEADLINES says, read from settings once
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


def is_event_stream(responder: Optional[BaseResponder]) -> TypeGuard[BaseResponder]:
    """A response that is an open-ended event stream, its head out and its body parked."""
    if responder is None or not responder.head_sent or responder.working:
        return False
    for name, value in responder.headers:
        if name.lower() == "content-type":
            return bool(value.lower().startswith("text/event-stream"))
    return False


@mypyc_attr(allow_interpreted_subclasses=True)
class WSGISteward(Steward):
    """A Steward that answers with the server's WSGI application."""

    def __init__(self, server: ServerState, sock: socket.socket, peer: object):
        super().__init__(server, sock, peer)
        # the same server, seen with its WSGI side: a serving.Server, the one server that
        # makes WSGIStewards (tests/test_types.py checks that it is a WSGIHost)
        self.wsgi_host = cast(WSGIHost, server)
        # read once here: the compiled build reads a Protocol's members (and Settings') by name
        self.app = self.wsgi_host.app
        self.root_path = self.settings.root_path
        # made on the first request: after PROXY
        self.environ_base: Optional[dict[str, Any]] = None

    def respond(self, request: Request) -> BaseResponder:
        if self.environ_base is None:
            self.environ_base = self.wsgi_host.connection_environ(self.peer)
        environ = build_environ(self.environ_base, request, self.root_path)
        if any(key in environ for key in _FORWARDING_KEYS):
            apply_forwarding(environ, self.wsgi_host.trusted)
        pool = self.server.pool
        settings = self.server.response_settings
        if pool is not None:
            return ThreadedResponder(self.connection, request, settings, self.app, environ,
                                     pool=pool, wake=self._wake)
        return Responder(self.connection, request, settings, self.app, environ)
