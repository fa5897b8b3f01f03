"""WebSockets (RFC 6455) from the client side, on the doer loop: `client.websocket("/ws/chat")`
opens a connection of its own through a `Client`, does the opening handshake with wsproto and
then carries whole messages both ways. Nothing here blocks, and no failure is raised into the
loop: each lands on `ws.error` as a ClientError.
"""

# Theory of operation
# -------------------
# The client's `Session` makes the connection (resolution off the loop, nonblocking connect,
# TLS, the connect timeout). Once it is up the WebSocketClient takes the link over
# (`link.handler = self`), as the server's session does after its 101, and speaks wsproto on it:
#   connecting  TCP and TLS [connect timeout], then our upgrade request and the wait for its
#               101 [the client's response timeout, counted from the start]
#   open        messages both ways; what was sent before the 101 goes out first
#   closing     a Close frame went out or came in: waiting for the other side's and for the
#               server to close TCP, which it does first (RFC 6455 §7.1.1)    [close_timeout]
#   closed      the TCP connection is closed: close_code, close_reason and error tell how
# Received bytes reach wsproto in slices of INFLATE_SLICE while the handshake is under way and,
# with permessage-deflate, afterwards, so a compressed "bomb" never inflates far past
# `max_message` before the running size of the message is checked.
# Everything runs on the loop's thread: in Poller callbacks (bytes in) and in `_service`, called
# by `Client.service()` every turn (deadlines). Like requests, it is not thread-safe.

from __future__ import annotations

import collections
import logging
from typing import Callable, Optional, Protocol, Sequence, Union

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Event, Ping, Pong,
                            RejectConnection, RejectData, Request, TextMessage)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import RemoteProtocolError

from .client_exchange import Headers, header_list
from .client_parsing import ClientError, ClientTimeout, ConnectionLost, ProtocolError
from .client_protocols import StreamClient
from .client_session import Link, Session
from .grammar import is_token
from .websocket_frames import INFLATE_SLICE, SENDABLE, Reassembly


__all__ = ["WebSocketClient", "HandshakeError"]

logger = logging.getLogger("hio_http.client")

Message = Union[str, bytes]

CONNECTING, OPEN, CLOSING, CLOSED = "connecting", "open", "closing", "closed"

MAX_REFUSAL_BODY = 64 * 1024  # bytes of a refusal's body kept on the HandshakeError
MAX_CONTROL_PAYLOAD = 125  # RFC 6455 §5.5: control frames carry at most 125 bytes
MAX_CLOSE_REASON = 123  # ... of which the close code takes two

# Fields the handshake sets itself: a caller's value would go out twice or contradict it.
HANDSHAKE_FIELDS = frozenset(("upgrade", "connection", "sec-websocket-key",
                              "sec-websocket-version", "sec-websocket-protocol",
                              "sec-websocket-extensions"))


class HandshakeError(ClientError):
    """The server did not open the WebSocket. `status` is its answer (404, 403, 426...), with
    its `headers` and the start of its `body`; None when the answer was no valid handshake."""

    def __init__(self, message: str, status: Optional[int] = None, headers: Sequence = (),
                 body: bytes = b""):
        super().__init__(message)
        self.status = status
        self.headers = list(headers)
        self.body = body


class UpgradingClient(StreamClient, Protocol):
    """What a WebSocketClient uses of the client that opens it (clienting.Client, which imports
    this module)."""

    @property
    def scheme(self) -> str: ...
    @property
    def authority(self) -> str: ...
    @property
    def opened(self) -> bool: ...
    @property
    def closed(self) -> bool: ...


class WebSocketClient:
    """A WebSocket on a connection of its own, opened through `client` (its origin, TLS
    settings, default headers, timeouts and Poller): `client.websocket(path)` or
    `WebSocketClient(client, path)`. It connects once the client is open and serviced.

    `send()`, `ping()` and `close()` queue and return at once; before the handshake is done they
    wait for it. Whole messages (str for text, bytes for binary) go to `on_message(message)`
    when given, else collect in `messages` (a deque: pop them as you go). `on_open()` and
    `on_close(code, reason)` are called once each; a callback that raises is logged (and an
    on_message failure closes the WebSocket with 1011).

    subprotocols: offered in order; `subprotocol` is the server's choice (None if it chose none).
    compression: offer permessage-deflate (RFC 7692); `compressed` tells if the server took it.
    max_message: the largest message accepted, reassembled; a bigger one closes with 1009.
    close_timeout: seconds to wait for the server's side of the closing handshake.
    Timeouts come from the client: its connect timeout for TCP and TLS, its response timeout
    for the whole opening handshake (counted from the start), both on the client's clock.
    Everything runs on the loop's thread; like the rest of the client it is not thread-safe.
    """

    def __init__(self, client: UpgradingClient, path: str, subprotocols: Sequence[str] = (),
                 headers: Headers = None, compression: bool = True,
                 max_message: int = 1024 * 1024,
                 on_message: Optional[Callable[[Message], None]] = None,
                 on_close: Optional[Callable[[int, str], None]] = None,
                 on_open: Optional[Callable[[], None]] = None, close_timeout: float = 10.0):
        if isinstance(subprotocols, str):
            subprotocols = [subprotocols]
        for name in subprotocols:
            if not is_token(name):
                raise ValueError(f"invalid subprotocol {name!r}")
        fields = client.request_fields(client.default_headers + header_list(headers), "GET", b"")
        for name, _ in fields:
            if name.lower() in HANDSHAKE_FIELDS:
                raise ValueError(f"{name} is set by the WebSocket handshake")
        (_, host), *fields = fields  # Host comes first: the caller's, or the client's authority
        target = client.request_target(path)
        self._request = Request(
            host=host, target=target, subprotocols=list(subprotocols),
            extensions=[PerMessageDeflate()] if compression else [],
            extra_headers=[(name.encode("latin-1"), value.encode("latin-1"))
                           for name, value in fields])
        self.client = client
        self.path = path
        self.url = f"{'wss' if client.scheme == 'https' else 'ws'}://{client.authority}{target}"
        self.max_message = max_message
        self.close_timeout = close_timeout
        self.on_message, self.on_close, self.on_open = on_message, on_close, on_open
        self.state = CONNECTING
        self.subprotocol: Optional[str] = None
        self.compressed = False
        self.headers: list = []  # of the 101 response, as (name, value) strings
        self.messages: collections.deque = collections.deque()
        self.pongs: collections.deque = collections.deque(maxlen=64)  # their payloads
        self.close_code: Optional[int] = None  # of the first Close frame received, else 1006
        self.close_reason = ""
        self.error: Optional[ClientError] = None
        self._protocol: Optional[WSConnection] = None
        self._session: Optional[Session] = None
        self._link: Optional[Link] = None  # taken over from the session once it is up
        self._wiring = _Wiring(self)
        self._outbox: collections.deque = collections.deque()  # events sent before the 101
        self._close_asked = False  # close() came before the 101: nothing more is queued
        self._deadline: Optional[float] = None
        self._reading = True  # False once wsproto has nothing more to parse
        self._slice = INFLATE_SLICE  # until the handshake tells whether frames are compressed
        self._incoming = Reassembly(max_message)
        self._refusal: Optional[HandshakeError] = None  # a non-101 answer, its body arriving
        if client.closed:
            self._finish(ConnectionLost("the client is closed"))
            return
        client.streams.append(self)  # the client starts, services and closes its streams
        if client.opened:
            self._start()

    def __repr__(self) -> str:
        return f"<WebSocketClient {self.url} {self.state}>"

    # -- state --------------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """True while messages can go both ways (the handshake is done, no Close yet)."""
        return self.state == OPEN

    @property
    def closed(self) -> bool:
        """True once the connection is gone (or never came): `close_code` and `error` are set
        and `on_close` has been called."""
        return self.state == CLOSED

    @property
    def _ws_connection(self) -> WSConnection:
        """wsproto's side of the connection, made by _start() before any byte goes out."""
        assert self._protocol is not None
        return self._protocol

    @property
    def buffered(self) -> int:
        """Bytes waiting to be sent (a producer may hold back while this is high)."""
        link = self._link
        return link.pending if link is not None and not link.closed else 0

    # -- what the application calls -----------------------------------------------------------

    def send(self, message: Message) -> bool:
        """Queue a text (str) or binary (bytes) message; False once closing or closed."""
        if isinstance(message, (bytearray, memoryview)):
            message = bytes(message)
        elif not isinstance(message, (str, bytes)):
            raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")
        return self._put(TextMessage(message) if isinstance(message, str)
                         else BytesMessage(message))

    def ping(self, payload: bytes = b"") -> bool:
        """Queue a Ping; the server's Pong payload shows in `pongs`. False once closing."""
        payload = bytes(payload)
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"a ping carries at most {MAX_CONTROL_PAYLOAD} bytes")
        return self._put(Ping(payload))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Begin the closing handshake (after the opening one, if that is still under way);
        `on_close` follows once the server has answered and closed the connection."""
        if code not in SENDABLE and not 3000 <= code <= 4999:
            raise ValueError(f"{code} is not a close code an endpoint may send")
        if len(reason.encode("utf-8")) > MAX_CLOSE_REASON:
            raise ValueError(f"a close reason is at most {MAX_CLOSE_REASON} bytes of UTF-8")
        if self.client.closed:
            # Client.close() closes its streams: the loop stops servicing this one, so there
            # is no time for a handshake. Say goodbye (1001) and hang up.
            self._abort()
        elif self.state == CONNECTING:
            if not self._close_asked:
                self._close_asked = True
                self._outbox.append(CloseConnection(code, reason))
        elif self.state == OPEN:
            self._close_now(code, reason)

    # -- driven by the client -----------------------------------------------------------------

    def _start(self) -> None:
        if self.state != CONNECTING or self._protocol is not None:
            return
        client = self.client
        self._protocol = WSConnection(ConnectionType.CLIENT)
        if client.timeout is not None:
            self._deadline = client.clock() + client.timeout
        self._session = Session(client, self._wiring)
        self._session.start()  # may fail at once: _connect_failed() comes back here

    def _service(self, now: float) -> None:
        """Once a turn: the connecting session's work, then the deadline of the state."""
        if self._session is not None:
            self._session.service(now)
        if self._deadline is None or now < self._deadline or self.state == CLOSED:
            return
        if self.state == CONNECTING:
            self._finish(ClientTimeout(f"{self.url}: no WebSocket handshake within "
                                       f"{self.client.timeout} s"))
        elif self.close_code is None:
            self._finish(ClientTimeout(f"{self.url}: no Close frame from the server within "
                                       f"{self.close_timeout} s"))
        else:  # the handshake is over but the server keeps the connection: close it ourselves
            self._finish(None)

    # -- the session's news, through _Wiring: the connection comes up, or does not ------------

    def _connected(self, session: Session) -> None:
        """TCP (and TLS) is up: take the link over and send the upgrade request."""
        if session is not self._session:
            return
        self._session = None
        link = session.link
        assert link is not None  # a session is ready once its Link is up
        self._link = link
        link.handler = self._wiring
        self._write(self._ws_connection.send(self._request))

    def _connect_failed(self, session: Session, error: ClientError) -> None:
        if session is self._session:
            self._session = None
            self._finish(error)

    # -- net.Connection events, through _Wiring -------------------------------------------------

    def _received(self, data: bytes) -> None:
        step = self._slice or len(data)
        for start in range(0, len(data), step):
            if not self._reading or self.state == CLOSED:
                return
            piece = data[start:start + step] if step < len(data) else data
            try:
                self._ws_connection.receive_data(piece)
            except RemoteProtocolError as ex:  # only the handshake raises: the 101 was wrong
                self._finish(HandshakeError(f"{self.url}: bad WebSocket handshake: {ex}"))
                return
            self._handle_events()

    def _ended(self) -> None:
        """EOF from the server. In the handshake it may end a refusal's body; in the closing
        handshake it is expected; otherwise the connection was lost (1006)."""
        if self.state == CONNECTING and self._reading:
            try:
                self._ws_connection.receive_data(None)
            except RemoteProtocolError:
                pass  # _lost() tells what happened
            self._handle_events()
        if self._link is not None and not self._link.closed:
            self._link.close()  # -> _lost()

    def _lost(self) -> None:
        """The TCP connection is closed, by either side: the WebSocket is closed."""
        if self.state == CLOSED:
            return
        if self.state == CONNECTING and self._refusal is not None:
            self._finish(self._refusal)  # its body ended with the connection
            return
        if self.state == CONNECTING:
            lost = "the connection closed during the WebSocket handshake"
        elif self.close_code is None:
            lost = "the connection closed without a Close frame"
        else:
            self._finish(None)
            return
        cause = self._link.error if self._link is not None else None
        error = ConnectionLost(f"{self.url}: {lost}" + (f": {cause}" if cause else ""))
        error.__cause__ = cause
        self._finish(error)

    # -- frames in ------------------------------------------------------------------------------

    def _handle_events(self) -> None:
        for event in self._ws_connection.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                self._piece(event)
            elif isinstance(event, Ping):
                if self._ws_connection.state is ConnectionState.OPEN:
                    self._write(self._ws_connection.send(event.response()))
            elif isinstance(event, Pong):
                self.pongs.append(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                self._close_frame(event)
            elif isinstance(event, AcceptConnection):
                self._accepted(event)
            elif isinstance(event, RejectConnection):
                self._rejected(event)
            elif isinstance(event, RejectData):
                self._refusal_data(event)
            if self.state == CLOSED:
                return

    def _accepted(self, event: AcceptConnection) -> None:
        self.state = OPEN
        self._deadline = None
        self.subprotocol = event.subprotocol
        self.compressed = any(extension.name == PerMessageDeflate.name
                              for extension in event.extensions)
        self._slice = INFLATE_SLICE if self.compressed else 0
        self.headers = [(name.decode("latin-1"), value.decode("latin-1"))
                        for name, value in event.extra_headers]
        outbox, self._outbox = self._outbox, collections.deque()
        for queued in outbox:  # in order: the messages, then a close() that came after them
            if isinstance(queued, CloseConnection):
                self._close_now(queued.code, queued.reason or "")
            else:
                self._write(self._ws_connection.send(queued))
        if self.on_open is not None:
            self._call(self.on_open)

    def _rejected(self, event: RejectConnection) -> None:
        headers = [(name.decode("latin-1"), value.decode("latin-1"))
                   for name, value in event.headers]
        self._refusal = HandshakeError(
            f"{self.url}: the server answered {event.status_code} instead of 101 Switching "
            f"Protocols", status=event.status_code, headers=headers)
        if not event.has_body:
            self._finish(self._refusal)

    def _refusal_data(self, event: RejectData) -> None:
        refusal = self._refusal
        assert refusal is not None  # wsproto gives RejectConnection before its RejectData
        if len(refusal.body) < MAX_REFUSAL_BODY:
            refusal.body = (refusal.body + bytes(event.data))[:MAX_REFUSAL_BODY]
        if event.body_finished:
            self._finish(refusal)

    def _piece(self, event) -> None:
        if self.state != OPEN:
            return  # closing: what the server still sends is dropped unread
        if not self._incoming.add(event.data):
            # Failed rather than closed: waiting for the server's Close would mean inflating
            # the rest of this message first.
            self._fail_connection(1009, f"message too big (limit {self.max_message})",
                                  ProtocolError(f"{self.url}: a message larger than "
                                                f"max_message ({self.max_message} bytes)"))
            return
        if not event.message_finished:
            return
        message: Message = self._incoming.take()
        if self.on_message is None:
            self.messages.append(message)
        else:
            self._call(self.on_message, message)

    def _close_frame(self, event: CloseConnection) -> None:
        state = self._ws_connection.state
        code, reason = int(event.code), event.reason or ""
        if state is ConnectionState.REMOTE_CLOSING:  # the server closes: answer in kind
            self._record_close(code, reason)
            self._write(self._ws_connection.send(event.response()))
            self._closing()
        elif state is ConnectionState.OPEN:  # wsproto found a violation (1002, 1007...)
            self._fail_connection(code, reason, ProtocolError(f"{self.url}: {reason} ({code})"))
        elif state is ConnectionState.CLOSED:  # the server answered our Close
            self._record_close(code, reason)
            self._reading = False
        else:  # LOCAL_CLOSING: the server's bytes failed to parse after our Close
            self._finish(ProtocolError(f"{self.url}: {reason} ({code})"))

    def _record_close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason

    # -- frames out -----------------------------------------------------------------------------

    def _put(self, event: Event) -> bool:
        if self.state == CONNECTING and not self._close_asked:
            self._outbox.append(event)
            return True
        if self.state != OPEN:
            return False
        self._write(self._ws_connection.send(event))
        return True

    def _close_now(self, code: int, reason: str) -> None:
        if self.state != OPEN:
            return
        self._incoming.clear()
        self._write(self._ws_connection.send(CloseConnection(code, reason)))
        self._closing()

    def _fail_connection(self, code: int, reason: str, error: ClientError) -> None:
        """RFC 6455 §7.1.7: say why in a Close frame, read nothing more, and hang up as soon as
        it is sent (within close_timeout)."""
        if self.error is None:
            self.error = error
        self._record_close(code, reason)
        self._incoming.clear()
        self._write(self._ws_connection.send(CloseConnection(code, reason)))
        self._closing()
        self._reading = False
        assert self._link is not None  # frames come and go only over the link
        self._link.close_when_drained()

    def _closing(self) -> None:
        """A Close frame went out: the server closes TCP next, within close_timeout."""
        self.state = CLOSING
        self._deadline = self.client.clock() + self.close_timeout
        if self._ws_connection.state is ConnectionState.CLOSED:
            self._reading = False

    def _write(self, data: bytes) -> None:
        link = self._link
        if link is not None and not link.closed:
            link.send(data)

    # -- the end --------------------------------------------------------------------------------

    def _abort(self) -> None:
        """The client closes: a Close (1001, going away) if the WebSocket is open, then the
        connection closes at once."""
        if self.state == CLOSED:
            return
        if self.state == OPEN:
            self._write(self._ws_connection.send(CloseConnection(1001, "client closing")))
            self._finish(None)
        else:
            self._finish(ConnectionLost("the client was closed") if self.state == CONNECTING
                         else None)

    def _finish(self, error: Optional[ClientError]) -> None:
        """The WebSocket is closed: record why, drop the connection, call on_close once."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self._reading = False
        if self.error is None:
            self.error = error
        self._record_close(1006, "")  # no Close frame came: an abnormal closure
        self._deadline = None
        self._outbox.clear()
        self._incoming.clear()
        session, self._session = self._session, None
        if session is not None:
            session.close()  # still connecting: its _connect_failed() comes back ignored
        link = self._link
        if link is not None and not link.closed:
            link.close()  # its _lost() comes back ignored
        if self in self.client.streams:
            self.client.streams.remove(self)
        if self.on_close is not None:
            self._call(self.on_close, self.close_code, self.close_reason)

    def _call(self, callback: Callable, *args) -> None:
        """Application callbacks must never raise into the loop."""
        try:
            callback(*args)
        except Exception:
            name = getattr(callback, "__name__", repr(callback))
            logger.exception("error in %s, a callback of WebSocket %s", name, self.url)
            if self.state == OPEN:
                self._close_now(1011, "internal error")


class _Wiring:
    """What a WebSocketClient's Session (as its owner) and then its connection (as its handler)
    call back: a separate object, so that the WebSocketClient keeps `closed` for its state and
    shows no callbacks among its public names. (The session's other two owner calls are about
    requests, and the link is taken over before it could make them.)"""

    __slots__ = ("websocket",)

    def __init__(self, websocket: WebSocketClient):
        self.websocket = websocket

    def session_ready(self, session: Session) -> None:
        self.websocket._connected(session)

    def connect_failed(self, session: Session, error: ClientError) -> None:
        self.websocket._connect_failed(session, error)

    def received(self, data: bytes) -> None:
        self.websocket._received(data)

    def ended(self) -> None:
        self.websocket._ended()

    def connected(self) -> None:
        pass  # the link's TLS handshake was over before the WebSocket took it

    def drained(self) -> None:
        pass

    def closed(self) -> None:
        self.websocket._lost()
