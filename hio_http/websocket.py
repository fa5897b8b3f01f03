"""WebSockets (RFC 6455) on the doer loop: a `WebSocketHandler` class per endpoint, served beside
a WSGI app on the same port (`Server(app, websockets={"/ws/chat": ChatHandler})`).

Handshake and framing are wsproto's (sans-IO); this module only moves bytes and keeps limits.
Nothing here blocks: `send()` queues and returns, from the loop or from any other thread.
"""

# Theory of operation
# -------------------
# A Steward that meets an `Upgrade: websocket` request calls `upgrade(steward, request)`. It
# finds the endpoint for the path (else 404), lets wsproto validate the parsed handshake (400, or
# 426 for a wrong version), sends the 101, and hands the connection over with
# `steward.switch(session)`: from then on the `WebSocketSession` receives the Connection's
# callbacks and stands in the server's set of stewards, so the server's sweep keeps its deadline
# and shutdown reaches it. A session is in one of these states:
#   open      messages both ways; deadline: ping after `ws_ping_interval` without hearing from
#             the client, then close if nothing comes within `ws_ping_timeout`
#   closing   our Close frame went out; waiting for the client's     [ws_ping_timeout]
#   closed    the closing handshake is over (or failed): the socket closes once our last bytes
#             are sent                                               [ws_ping_timeout]
# Bounds: a message is reassembled up to `ws_max_message` (else close 1009); reading from the
# client pauses while more than `high_water` bytes wait to be sent to it, and `send()` refuses
# (closing 1008) once `ws_max_queue` bytes wait. With permessage-deflate, input is handed to
# wsproto in small slices so a compressed "bomb" never inflates far past the message limit.
# Threads: a `send()` or `close()` from another thread goes through a locked outbox that the
# server flushes on its next pass (`server.nudge` wakes the loop for it); wsproto's state is
# only ever touched on the loop's thread.

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections import deque
from typing import Callable, Iterator, Mapping, Optional, Protocol, Sequence, Union

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection as FrameConnection, ConnectionState
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping, Pong,
                            Request as Offer, TextMessage)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.utilities import ProtocolError, RemoteProtocolError

from .hosting import Host
from .net import Connection
from .request import Request
from .responding import CustomResponder
from .websocket_frames import INFLATE_SLICE, SENDABLE, Reassembly

__all__ = ["WebSocketHandler", "WebSocketSession", "Room", "upgrade"]

logger = logging.getLogger("hio_http.websocket")

Message = Union[str, bytes]

OPEN, CLOSING, CLOSED = "open", "closing", "closed"

class WebSocketHandler:
    """One WebSocket connection's application logic. Subclass it and register the class for a
    path: `Server(app, websockets={"/ws/chat": ChatHandler})`; the server makes one instance per
    connection (any callable returning a handler will do, e.g. a functools.partial).

    `subprotocols`: the ones this endpoint speaks; the first the client offers is chosen and
    shows as `self.subprotocol` (None when none matched: the handshake still succeeds).
    Callbacks run on the server's loop and must not block. An exception in one is logged and
    closes this connection with 1011.
    """

    subprotocols: Sequence[str] = ()
    request: Optional[Request] = None  # the upgrade request: path, query, headers
    subprotocol: Optional[str] = None
    _session: Optional["WebSocketSession"] = None

    # -- what subclasses override -----------------------------------------------------------------

    def on_connect(self, request: Request) -> bool:
        """Before the handshake: return False to refuse it with 403 (check an Origin or a token
        here). The default accepts every client."""
        return True

    def on_open(self, request: Request) -> None:
        """The handshake is done: the connection is open."""

    def on_message(self, message: Message) -> None:
        """A whole message: str for text, bytes for binary (fragments are reassembled)."""

    def on_close(self, code: int, reason: str) -> None:
        """The connection closed: the code and reason of the client's Close frame, or 1006 when
        it went away without one. Called once; `send()` returns False from here on."""

    # -- what handlers call -----------------------------------------------------------------------

    def send(self, message: Message) -> bool:
        """Queue a text (str) or binary (bytes) message and return at once, from the loop or any
        thread. False when it was not queued: the connection is closing, or its client reads so
        slowly that `ws_max_queue` bytes already wait (it is then closed with 1008)."""
        session = self._session
        return session.send(message) if session is not None else False

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Begin the closing handshake (from the loop or any thread); `on_close` follows."""
        session = self._session
        if session is not None:
            session.close(code, reason)

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed (no more messages go out)."""
        session = self._session
        return session is None or session.state != OPEN

    @property
    def buffered(self) -> int:
        """Bytes waiting to be sent to this client (a handler may skip updates while high)."""
        session = self._session
        return session.buffered if session is not None else 0


class Room:
    """Handlers that hear the same broadcasts: a chat room, a topic. Safe to use from any
    thread; a member leaves by itself when its connection closes."""

    def __init__(self) -> None:
        self._members: set = set()
        self._lock = threading.Lock()

    def join(self, handler: WebSocketHandler) -> None:
        with self._lock:
            self._members.add(handler)
            handler.__dict__.setdefault("_rooms", set()).add(self)

    def leave(self, handler: WebSocketHandler) -> None:
        with self._lock:
            self._members.discard(handler)
            handler.__dict__.get("_rooms", set()).discard(self)

    def broadcast(self, message: Message,
                  exclude: Optional[WebSocketHandler] = None) -> int:
        """Send `message` to every member but `exclude`; returns how many queued it."""
        with self._lock:
            members = list(self._members)
        return sum(1 for member in members if member is not exclude and member.send(message))

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[WebSocketHandler]:
        with self._lock:
            return iter(list(self._members))


class UpgradeHost(Host, Protocol):
    """What the handshake uses of the server (serving.BaseServer, a layer above, which hands
    the handshake to this module by name: serving.WEBSOCKET_UPGRADE)."""

    @property
    def websockets(self) -> Mapping[str, Callable[[], WebSocketHandler]]:
        """The endpoints: path -> a factory of handlers (typically the handler class)."""


class UpgradingSteward(Protocol):
    """What the handshake uses of the Steward that met the upgrade request (stewarding.Steward,
    which calls `upgrade` as its hosting.Upgrade)."""

    @property
    def server(self) -> UpgradeHost: ...

    @property
    def connection(self) -> Connection: ...

    def switch(self, protocol: WebSocketSession) -> None:
        """The connection speaks WebSocket now: `protocol` takes the Steward's place."""


def upgrade(steward: UpgradingSteward, request: Request) -> Optional[CustomResponder]:
    """Answer a WebSocket upgrade request: switch `steward`'s connection to a session of the
    endpoint for the path and return None, or return the answer that refuses it."""
    server = steward.server
    factory = server.websockets.get(request.path)
    if factory is None:
        return _refuse(404, "no WebSocket endpoint at this path")
    if server.closing:  # shutting down: no new sessions that would hold the shutdown up
        return _refuse(503, "server shutting down")
    # RFC 6455 §4.1: the opening handshake is an HTTP/1.1 (or later) GET.
    if request.method != "GET" or request.version != "1.1":
        return _refuse(400, "a WebSocket handshake must be an HTTP/1.1 GET")
    if not _valid_key(request.header("sec-websocket-key")):
        return _refuse(400, "Sec-WebSocket-Key must be 16 bytes in base64")
    handshake = WSConnection(ConnectionType.SERVER)
    try:
        handshake.initiate_upgrade_connection(
            [(name.encode("latin-1"), value.encode("latin-1")) for name, value in request.headers],
            request.target)
        offer = next(event for event in handshake.events() if isinstance(event, Offer))
    except RemoteProtocolError as ex:  # wsproto's verdict: 400, or 426 for a wrong version
        hint = ex.event_hint
        headers = [(name.decode("latin-1"), value.decode("latin-1"))
                   for name, value in getattr(hint, "headers", ())
                   if name.lower() != b"content-length"]
        return _refuse(getattr(hint, "status_code", 400), f"bad WebSocket handshake: {ex}",
                       headers)
    except (ProtocolError, h11.ProtocolError, UnicodeError, StopIteration):
        return _refuse(400, "bad WebSocket handshake")
    handler = factory()
    if not handler.on_connect(request):
        return _refuse(403, "WebSocket connection refused")
    subprotocol = next((name for name in offer.subprotocols if name in handler.subprotocols),
                       None)
    settings = server.settings
    offered = {str(item).split(";", 1)[0].strip().lower() for item in offer.extensions}
    extensions: list[Extension] = ([PerMessageDeflate()] if settings.ws_compression
                  and "permessage-deflate" in offered else [])
    extra = ([(b"Server", settings.server_header.encode("latin-1"))]
             if settings.server_header else [])
    try:
        accepted = handshake.send(AcceptConnection(subprotocol=subprotocol,
                                                   extensions=extensions, extra_headers=extra))
    except ValueError:  # a malformed permessage-deflate parameter, e.g. "window_bits=x"
        return _refuse(400, "bad Sec-WebSocket-Extensions offer")
    connection = steward.connection
    connection.send(accepted)
    if connection.closed:  # the client left during the handshake
        return None
    compressed = any(extension.enabled() for extension in extensions)
    assert handshake.connection is not None  # wsproto makes it when it accepts
    session = WebSocketSession(server, connection, handshake.connection, handler, request,
                               compressed)
    handler.request, handler.subprotocol = request, subprotocol
    steward.switch(session)
    return None


class WebSocketSession:
    """Serves one open WebSocket: wsproto frames in and out on a Connection, reassembly, limits,
    keep-alive pings and the closing handshake, for one `WebSocketHandler`.

    To the server it is a steward like any other (`deadline`, `expire()`, `wind_down()`,
    `connection`); to the Connection it is the handler of its events.
    """

    def __init__(self, server: Host, connection: Connection, protocol: FrameConnection,
                 handler: WebSocketHandler, request: Request, compressed: bool = False):
        self.server = server
        self.settings = server.settings
        self.connection = connection
        self.protocol = protocol
        self.handler = handler
        self.request = request
        self.state = OPEN
        self.deadline: Optional[float] = None
        self.pinged = False  # a ping is out and nothing was heard since
        self.eof = False
        self.parsing = True  # False once wsproto's parser failed or the closing handshake ended
        self.notified = False  # on_close was called
        self.incoming = Reassembly(self.settings.ws_max_message)
        self.slice = INFLATE_SLICE if compressed else 0
        self.loop_thread = threading.get_ident()
        self.outbox: deque = deque()  # hand-offs from other threads: ("send", m) / ("close", c, r)
        self.outbox_bytes = 0
        self.lock = threading.Lock()

    # -- the hand-over ----------------------------------------------------------------------------

    def start(self, leftover: bytes) -> None:
        """The 101 went out: the handler opens, then reads what followed the handshake."""
        handler = self.handler
        handler._session = self
        self._heard()
        self._call(handler.on_open, self.request)
        if leftover and not self.connection.closed:
            self.received(leftover)

    # -- Connection events ------------------------------------------------------------------------

    def connected(self) -> None:
        """Only a TLS handshake ends in this event, and it ended before the upgrade request."""

    def received(self, data: bytes) -> None:
        if not self.parsing:
            return  # after a failure or the closing handshake nothing more is read
        self._heard()
        step = self.slice or len(data) or 1
        for start in range(0, len(data), step):
            self.protocol.receive_data(data[start:start + step] if self.slice else data)
            self._handle_events()
            if not self.parsing or self.connection.closed:
                break
        self._regulate()

    def drained(self) -> None:
        self._regulate()

    def ended(self) -> None:
        """The client sent EOF: without a Close frame that is an abnormal closure (1006)."""
        self.eof = True
        self.parsing = False
        self._finish(1006, "")

    def closed(self) -> None:
        self.state = CLOSED
        self.parsing = False
        self._notify(1006, "")
        with self.lock:
            self.outbox.clear()
            self.outbox_bytes = 0
        self.server.waiting.discard(self)
        self.server.forget(self)

    # -- the server's side ------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """The deadline passed: ping an idle client, or give up on a silent one."""
        connection = self.connection
        if self.state == OPEN and not self.pinged:
            self.pinged = True
            self._due_in(self.settings.ws_ping_timeout, now)
            self._write(self.protocol.send(Ping(b"hio")))
            return
        if self.state == OPEN:  # the ping went unanswered: fail the connection
            logger.info("closing WebSocket from %s: no pong within %.1f s", connection.peer,
                        self.settings.ws_ping_timeout)
            self._write(self.protocol.send(CloseConnection(1011, "keepalive ping timeout")))
            self._notify(1011, "keepalive ping timeout")
        else:
            logger.info("closing WebSocket from %s: closing handshake timed out",
                        connection.peer)
            self._notify(1006, "")
        connection.close()

    def wind_down(self) -> None:
        """The server is shutting down: close with 1001 (going away)."""
        self.close(1001, "server shutting down")

    def resume(self) -> None:
        """A later pass of the server: carry out what other threads handed over."""
        self.server.waiting.discard(self)
        with self.lock:
            jobs, self.outbox = list(self.outbox), deque()
            self.outbox_bytes = 0
        for job in jobs:
            if job[0] == "send":
                self._send_now(job[1])
            else:
                self._close_now(job[1], job[2])

    @property
    def buffered(self) -> int:
        return self.connection.pending + self.outbox_bytes

    # -- sending ----------------------------------------------------------------------------------

    def send(self, message: Message) -> bool:
        if isinstance(message, (bytearray, memoryview)):
            message = bytes(message)
        elif not isinstance(message, (str, bytes)):
            raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")
        if self.state != OPEN:
            return False
        if threading.get_ident() != self.loop_thread:
            return self._hand_over(message)
        if self.outbox:
            self.resume()  # what other threads queued goes first
        return self._send_now(message)

    def _send_now(self, message: Message) -> bool:
        if self.state != OPEN:
            return False
        waiting = self.connection.pending
        if waiting and waiting + len(message) > self.settings.ws_max_queue:
            self._overflow()
            return False
        frame = TextMessage(message) if isinstance(message, str) else BytesMessage(message)
        self._write(self.protocol.send(frame))
        self._regulate()
        return True

    def _hand_over(self, message: Message) -> bool:
        """send() from another thread: queue for the loop's next pass."""
        with self.lock:
            waiting = self.connection.pending + self.outbox_bytes
            full = bool(waiting) and waiting + len(message) > self.settings.ws_max_queue
            if full:
                self.outbox.append(("close", 1008, "send queue full: the client reads too slowly"))
            else:
                self.outbox.append(("send", message))
                self.outbox_bytes += len(message)
        self.server.nudge(self)
        return not full

    def _overflow(self) -> None:
        logger.info("closing WebSocket from %s: more than %d bytes wait unsent",
                    self.connection.peer, self.settings.ws_max_queue)
        self._close_now(1008, "send queue full: the client reads too slowly")

    def close(self, code: int = 1000, reason: str = "") -> None:
        if code not in SENDABLE and not 3000 <= code <= 4999:
            raise ValueError(f"{code} is not a close code an endpoint may send")
        if threading.get_ident() != self.loop_thread:
            with self.lock:
                self.outbox.append(("close", code, reason))
            self.server.nudge(self)
            return
        self._close_now(code, reason)

    def _close_now(self, code: int, reason: str) -> None:
        """Send our Close frame and wait (until `ws_ping_timeout`) for the client's."""
        if self.state != OPEN or self.connection.closed:
            return
        self.state = CLOSING
        self.incoming.clear()
        self._write(self.protocol.send(CloseConnection(code, reason)))
        self._due_in(self.settings.ws_ping_timeout)

    def _write(self, data: bytes) -> None:
        self.connection.send(data)

    # -- receiving --------------------------------------------------------------------------------

    def _handle_events(self) -> None:
        for event in self.protocol.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                self._piece(event)
            elif isinstance(event, Ping):
                if self.protocol.state is ConnectionState.OPEN:
                    self._write(self.protocol.send(event.response()))
            elif isinstance(event, Pong):
                pass  # hearing anything at all already cleared the ping (see _heard)
            elif isinstance(event, CloseConnection):
                self._close_frame(event)
            if self.connection.closed:
                return

    def _piece(self, event) -> None:
        if self.state != OPEN:
            return  # closing: the rest of the client's messages are dropped unread
        if not self.incoming.add(event.data):
            logger.info("closing WebSocket from %s: message over %d bytes", self.connection.peer,
                        self.settings.ws_max_message)
            self._close_now(1009, f"message too big (limit {self.settings.ws_max_message})")
            return
        if event.message_finished:
            self._call(self.handler.on_message, self.incoming.take())

    def _close_frame(self, event: CloseConnection) -> None:
        state = self.protocol.state
        code, reason = event.code, event.reason or ""
        if state is ConnectionState.REMOTE_CLOSING:  # the client closes: answer in kind
            self._write(self.protocol.send(event.response()))
        elif state is ConnectionState.OPEN:
            # wsproto found a protocol violation (1002, 1007...): fail the WebSocket
            # connection (RFC 6455 §7.1.7): say why, then close without waiting for an answer.
            logger.info("WebSocket protocol error from %s: %s (%d)", self.connection.peer,
                        reason, code)
            self._write(self.protocol.send(CloseConnection(code, reason)))
        # else CLOSED: the client answered our Close frame; or LOCAL_CLOSING: its bytes failed
        # to parse after we closed. Either way the handshake is over.
        self.parsing = False
        self._finish(code, reason)

    def _finish(self, code: int, reason: str) -> None:
        """The WebSocket is closed: tell the handler; the socket closes once our bytes are out
        (the server closes TCP first, RFC 6455 §7.1.1), or at the deadline."""
        self.state = CLOSED
        self._due_in(self.settings.ws_ping_timeout)
        self._notify(code, reason)
        self.connection.close_when_drained()

    # -- helpers ----------------------------------------------------------------------------------

    def _heard(self) -> None:
        """Something came from the client: it is alive; the next ping is due an interval on."""
        if self.state == OPEN:
            self.pinged = False
            self._due_in(self.settings.ws_ping_interval)

    def _due_in(self, seconds: float, now: Optional[float] = None) -> None:
        """Set the deadline `seconds` from now, and tell the server's sweep."""
        self.deadline = (self.server.clock() if now is None else now) + seconds
        self.server.remind(self.deadline)

    def _regulate(self) -> None:
        """Backpressure: read nothing more from a client that does not read what it is sent."""
        connection = self.connection
        if connection.closed or not self.parsing or self.eof:
            return
        if connection.pending > self.settings.high_water:
            if connection.reading:
                connection.pause_reading()
        elif not connection.reading:
            connection.resume_reading()

    def _call(self, callback: Callable, *args) -> None:
        try:
            callback(*args)
        except Exception:
            logger.exception("error in %s.%s for WebSocket %s", type(self.handler).__name__,
                             callback.__name__, self.request.path)
            self._close_now(1011, "internal error")

    def _notify(self, code: int, reason: str) -> None:
        if self.notified:
            return
        self.notified = True
        handler = self.handler
        for room in list(handler.__dict__.get("_rooms", ())):
            room.leave(handler)
        try:
            handler.on_close(code, reason)
        except Exception:
            logger.exception("error in %s.on_close for WebSocket %s", type(handler).__name__,
                             self.request.path)


def _valid_key(key: Optional[str]) -> bool:
    """RFC 6455 §4.1: the key is a random 16-byte value, base64-encoded (wsproto only checks
    that it is present)."""
    if key is None:
        return True  # missing: wsproto refuses it with its own message
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _refuse(status: int, message: str, headers: Optional[list] = None) -> CustomResponder:
    """A plain-text refusal of the handshake; the connection closes after it."""
    return CustomResponder(status, [("Content-Type", "text/plain; charset=utf-8"),
                                    *(headers or [])], message.encode("utf-8") + b"\n")
