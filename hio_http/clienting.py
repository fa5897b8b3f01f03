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
# The pieces: `Response` (client_response.py) fills in as bytes arrive; an `Exchange`
# (client_exchange.py) is a request on its way; `Session` and its `Link` (client_session.py)
# are one connection; `EventStream` (client_events.py) follows an event stream; `ClientCore`
# (client_core.py) queues exchanges and keeps the session that sends them; this module holds
# the `Client`, whose request API builds on that core, and its doer.
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

import json as json_codec
import logging
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence, Union

from .client_bodies import BodyError, FileTarget, RequestBody, ResponseStream, Source
from .client_core import ClientCore
from .client_events import EventStream
from .client_exchange import Exchange, Headers, header_list
from .client_parsing import (ClientError, ClientTimeout, ConnectError, ConnectionLost,
                             ConnectTimeout, Data, End, Event, EventParser, Head, Interim,
                             ProtocolError, ResponseParser, TooManyRedirects)
from .client_response import Response
from .doing import Doer
from .grammar import is_token
from .polling import Poller, join_loop, leave_loop

if TYPE_CHECKING:
    from .websocket_client import WebSocketClient

logger = logging.getLogger("hio_http.client")

__all__ = ["Client", "ClientDoer", "Response", "EventStream", "Event", "ResponseParser",
           "EventParser", "Interim", "Head", "Data", "End", "ClientError", "ConnectError",
           "ClientTimeout", "ConnectTimeout", "ProtocolError", "ConnectionLost",
           "TooManyRedirects", "BodyError"]


class Client(ClientCore):
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
