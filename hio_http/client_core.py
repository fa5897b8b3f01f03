"""What a `Client` is built on, below its request API: its settings, its queue of exchanges and
the `Session` that sends them (pipelined when the connection allows, resent when that is safe,
redirected on the same origin, failed at their deadlines), what the session calls back, its
lifecycle and the turn that services it all.
"""

from __future__ import annotations

import collections
import ssl
import time
from typing import Callable, Optional, TypeVar, Union
from urllib.parse import urljoin, urlsplit

from .client_bodies import RequestBody
from .client_exchange import Exchange, Headers, due, header_list
from .client_parsing import (ClientError, ClientTimeout, ConnectionLost, End, Head,
                             ProtocolError, TooManyRedirects)
from .client_response import Response
from .client_session import Session, SessionState
from .grammar import check_field, first_field
from .polling import Poller

__all__ = ["ClientCore", "Timeout"]

REDIRECTS = frozenset((301, 302, 303, 307, 308))
MAX_ATTEMPTS = 3  # sends of one idempotent request across connections that closed under it
CONTINUE_WAIT = 1.0  # seconds to wait for 100 Continue before sending the body anyway
CONTINUE_THRESHOLD = 1024 * 1024  # larger bodies (and those of unknown length) ask first
DEFAULT_PORTS = {"http": 80, "https": 443}
# A streamed gzip or deflate body stops here: well past any text answer, and a bomb's ratio of
# a thousand to one keeps its sender's cost at a megabyte.
MAX_DECODED = 1024 * 1024 * 1024

Timeout = Union[float, tuple[Optional[float], Optional[float]], None]

ClientSelf = TypeVar("ClientSelf", bound="ClientCore")  # open() gives back the Client itself


class ClientCore:
    """The queue of exchanges, the session that sends them and the turn that services both:
    everything of a `Client` but its request API (see `Client` for the settings)."""

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

    def open(self: ClientSelf) -> ClientSelf:
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

    def __enter__(self: ClientSelf) -> ClientSelf:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the loop -----------------------------------------------------------------------------

    def service(self, wait: float = 0.0) -> None:
        """One turn: dispatch ready sockets (if the Poller is ours, waiting up to `wait`
        seconds for one), enforce deadlines, start connections and send what waits. Call it
        every tick; ClientDoer does."""
        if not self.opened:
            if self.closed:
                return
            self.open()
        if self.owns_poller and self.poller is not None:
            self.poller.poll(wait)
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
            wait = min(0.01, remaining)
            if self.poller is not None and not self.owns_poller:
                self.poller.poll(wait)
                wait = 0.0
            self.service(wait)  # a Poller of its own waits there: one poll a turn

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
        location = first_field(head.headers, "location")
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
