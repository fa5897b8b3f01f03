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
# The pieces: `Response` (client_response.py) fills in as bytes arrive; `Session` and its
# `Link` (client_session.py) are one connection; `EventStream` (client_events.py) follows an
# event stream; this module holds the `Client` that queues exchanges, and its doer.
#
# A Client keeps a queue of exchanges (a request and its Response) and one `Session`, its
# keep-alive connection. A session is (client_session.SessionState, with its tables)
#   connecting  resolve, nonblocking connect, TLS handshake                   [connect timeout]
#   ready       sends queued exchanges; each waits in `in_flight` for its response, in order
#   closing     sends nothing more (a `Connection: close` either way, a body cut short);
#               closes after the responses in flight
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
import json as json_codec
import logging
import ssl
import time
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence, Union
from urllib.parse import urljoin, urlsplit

from .client_bodies import BodyError, FileTarget, RequestBody, ResponseStream, Source
from .client_events import EventStream
from .client_exchange import Exchange, Headers, due, header_list
from .client_parsing import (ClientError, ClientTimeout, ConnectError, ConnectionLost,
                             ConnectTimeout, Data, End, Event, EventParser, Head, Interim,
                             ProtocolError, ResponseParser, TooManyRedirects)
from .client_response import Response
from .client_session import Session, SessionState
from .doing import Doer
from .grammar import check_field, is_token
from .polling import Poller, join_loop, leave_loop

if TYPE_CHECKING:
    from .websocket_client import WebSocketClient

logger = logging.getLogger("hio_http.client")

__all__ = ["Client", "ClientDoer", "Response", "EventStream", "Event", "ResponseParser",
           "EventParser", "Interim", "Head", "Data", "End", "ClientError", "ConnectError",
           "ClientTimeout", "ConnectTimeout", "ProtocolError", "ConnectionLost",
           "TooManyRedirects", "BodyError"]

REDIRECTS = frozenset((301, 302, 303, 307, 308))
MAX_ATTEMPTS = 3  # sends of one idempotent request across connections that closed under it
CONTINUE_WAIT = 1.0  # seconds to wait for 100 Continue before sending the body anyway
CONTINUE_THRESHOLD = 1024 * 1024  # larger bodies (and those of unknown length) ask first
DEFAULT_PORTS = {"http": 80, "https": 443}
# A streamed gzip or deflate body stops here: well past any text answer, and a bomb's ratio of
# a thousand to one keeps its sender's cost at a megabyte.
MAX_DECODED = 1024 * 1024 * 1024

Timeout = Union[float, tuple[Optional[float], Optional[float]], None]


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
    max_decoded: the most bytes a streamed body in gzip or deflate may inflate to (None: no
        limit), so a compression bomb stops with a ProtocolError; plain streamed bodies have
        no limit (each byte of them crossed the network).
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
                 max_decoded: Optional[int] = MAX_DECODED,
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
            connect_timeout, self.timeout = timeout
        else:
            connect_timeout = self.timeout = timeout
        self.connect_timeout: float = float("inf") if connect_timeout is None else connect_timeout
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
        if max_decoded is not None and max_decoded < 0:
            raise ValueError("max_decoded must not be negative")
        self.max_decoded = max_decoded
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
            if self._session.deadline is not None:
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
                body: Source = b"", *, json: Any = None, timeout: Union[float, None, EllipsisType] = ...,
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
            response._stream = ResponseStream(self.high_water, on_data, self.max_decoded)
        limit = self.timeout if timeout is ... else timeout
        exchange = Exchange(method, target, self.request_fields(fields, method, content), content,
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
        if self.owns_poller and self.poller is not None:
            self.poller.poll(0)
        now = self.clock()
        if self.queue:
            for exchange in [e for e in self.queue if due(e, now)]:
                self.queue.remove(exchange)
                exchange.response._fail(self._timeout_error(exchange))
        session = self._session
        if session is not None:
            session.service(now)
            for exchange in [e for e in session.in_flight if due(e, now)]:
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

    def exchange_ended(self, session: Session, exchange: Exchange, end: End) -> None:
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

    def follows(self, exchange: Exchange, head: Head) -> bool:
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
                if session is None or session.state is SessionState.CLOSED:
                    self._session = Session(self, self)
                    self._session.start()
                    continue  # it may have connected (or failed) at once
                if session.state is SessionState.CLOSING and not session.in_flight:
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

    def _redirect(self, exchange: Exchange, location: str) -> bool:
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
        follow = Exchange(method, target, fields, body, response, exchange.deadline)
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

    def _timeout_error(self, exchange: Exchange) -> ClientTimeout:
        return ClientTimeout(f"{exchange.method} {exchange.target}: no complete response "
                             f"within the timeout")


def _becomes_get(status: Optional[int], method: str) -> bool:
    """RFC 9110 §15.4: 303 is fetched with GET; a POST moved by 301/302 becomes GET too, as
    every browser does. 307 and 308 repeat the method and body."""
    return (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST")


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
        assert self.tymth is not None  # a Doist winds its doers before it enters them
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
