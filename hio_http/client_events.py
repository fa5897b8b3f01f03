"""Server-Sent Events from the client: an `EventStream` follows one `text/event-stream`
response on a session of its own, collects parsed events, and reconnects after the server's
`retry` with Last-Event-ID. Nothing here blocks; failures land on `stream.error`.
"""

from __future__ import annotations

import collections
import logging
from typing import Optional

from .client_exchange import Exchange, Headers, due, header_list
from .client_parsing import ClientError, ClientTimeout, End, EventParser, Head, ProtocolError
from .client_protocols import StreamClient
from .client_response import Response
from .client_session import Session, SessionState

logger = logging.getLogger("hio_http.client")

__all__ = ["EventStream"]


class EventStream:
    """A Server-Sent Events stream, followed on a connection of its own.

    Parsed `Event`s collect in `events` (a deque: pop them as you go). When the stream ends or
    the connection drops, it reconnects after `retry` ms (the server may change it) sending
    `Last-Event-ID`; a 204 answer ends it for good, as does any other non-200 answer or a
    Content-Type other than text/event-stream (then `error` tells why), or `close()`.
    """

    def __init__(self, client: StreamClient, path: str, last_event_id: Optional[str] = None,
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
        self._exchange: Optional[Exchange] = None
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
        deadline = None if client.timeout is None else client.clock() + client.timeout
        exchange = Exchange("GET", target, fields, b"", response, deadline)
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
            if exchange is not None and due(exchange, now) and exchange in session.in_flight:
                session.abandon(exchange, ClientTimeout(
                    f"event stream {self.path}: nothing received within the timeout"))
        elif self._reconnect_at is not None and now >= self._reconnect_at:
            self._start()

    def session_ready(self, session: Session) -> None:
        if session is self._session and not session.in_flight and self._exchange is not None:
            session.send(self._exchange)

    def _head(self, head: Head) -> None:
        # _start made the exchange calling back here, together with its response.
        assert self.response is not None and self._exchange is not None
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

    def exchange_ended(self, session: Session, exchange: Exchange, end: End) -> None:
        exchange.response._finish(end.trailers)
        session.close_after_responses()
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
            assert self._exchange is not None  # _start made it with the session
            self._exchange.response._fail(error)
            self._lost(error)

    def _lost(self, error: Optional[ClientError]) -> None:
        """This connection is over: reconnect after `retry` ms (EventSource "reestablish")."""
        session, self._session = self._session, None
        self.connected = False
        if error is not None:
            self.error = error
        if session is not None and session.state is not SessionState.CLOSED:
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
