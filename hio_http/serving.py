"""Servers on the doer loop: `Server` hosts a WSGI app, `BareServer` bare `Steward` handlers;
`ServerDoer` runs either in a Doist; `openServer` opens one for the length of a with-block.

One `Steward` per connection owns its Requestant and its current responder, answers pipelined
requests in order, and keeps the connection's deadline. Nothing here blocks, and one
connection's failure (bad bytes, an app exception, a reset) never touches another.
"""

# Theory of operation
# -------------------
# A server owns its listening sockets and the stewards (stewarding.py) of their connections.
# Deadlines are checked by a sweep once the earliest of them is due (every new deadline is
# reported to the server with `remind`), and at most every `sweep_interval`; never per tick, so
# idle connections cost nothing between sweeps. Only WAITING stewards are touched on every pass.
# Under this package's Doist the ServerDoer sleeps until the next sweep unless a steward waits
# (its `urgent` wakes it for the next pass), so an idle server does not wake at all.

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import socket
import time
from typing import Any, Callable, Iterator, Optional

from mypy_extensions import mypyc_attr

from .accesslog import AccessLog
from .doing import Doer
from .framing import ResponseSettings
from .hosting import Hosted, ServerState
from .net import Acceptor, Address
from .polling import Poller, join_loop, leave_loop, poller_of
from .pool import AppPool
from .forwarding import TrustedPeers
from .settings import Settings
from .stalls import StallWatch, stall_watch_of
# Steward, WSGISteward and is_event_stream are the connection's side (stewarding.py); their
# names are also given here, where users of the servers have always found them, with the
# Protocols of what a server calls: a bare handler, a WSGI app, the WebSocket upgrade.
from .stewarding import (DEADLINES, BareHandler, StartResponse, Steward, TrafficObserver,
                         Upgrade, WSGIApp, WSGISteward, is_event_stream)
from .wsgi import ErrorStream, FileWrapper

logger = logging.getLogger("hio_http.server")

__all__ = ["Settings", "Steward", "WSGISteward", "BaseServer", "Server", "BareServer",
           "ServerDoer", "openServer", "is_event_stream", "BareHandler", "WSGIApp",
           "StartResponse", "Upgrade", "TrafficObserver"]

WEBSOCKET_UPGRADE = "hio_http.websocket:upgrade"  # the handshake, resolved by name (see below)


def resolve(spec: str) -> Any:
    """`module:name` to the object it names. Optional parts (the WebSocket upgrade) are named,
    not imported, here, so the core never imports them; a server resolves them once. (Any:
    what a name stands for is known only where it is used.)"""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


@mypyc_attr(allow_interpreted_subclasses=True)
class BaseServer(ServerState):
    """Listening sockets, the stewards of their connections, and the sweep of deadlines."""

    def __init__(self, poller: Optional[Poller] = None,
                 clock: Optional[Callable[[], float]] = None,
                 steward: Optional[type[Steward]] = None,
                 sockets: Optional[list[socket.socket]] = None,
                 websockets: Optional[dict[str, Callable[[], Any]]] = None, **settings: Any):
        self.settings = Settings(**settings)
        # WebSocket endpoints: path -> handler class (or any factory of a WebSocketHandler;
        # Any: that class lives in a module above this one)
        self.websockets: dict[str, Callable[[], Any]] = dict(websockets or {})
        # The handshake is resolved once, and only when there are endpoints: the server knows
        # WebSockets only as this callable (and wsproto is not loaded without them).
        self.websocket_upgrade: Optional[Upgrade] = (resolve(WEBSOCKET_UPGRADE)
                                                     if self.websockets else None)
        self.limits = self.settings.limits()
        product = self.settings.server_header
        self.response_settings = ResponseSettings(  # what every response shares (see framing)
            server_header=f"Server: {product}\r\n".encode("latin-1") if product else b"",
            high_water=self.settings.high_water, compression=self.settings.compression(),
            compress=self.settings.compress)
        # a class default would not compile (mypyc keeps only literal defaults)
        self.steward_class: type[Steward] = steward if steward is not None else Steward
        self.poller = poller
        self.owns_poller = False
        self.clock: Callable[[], float] = clock or time.monotonic
        self.acceptors: list[Acceptor] = []
        self.sockets = list(sockets or [])  # listening sockets opened elsewhere (workers)
        # a Steward per connection, or what took its place (Steward.switch)
        self.stewards: set[Hosted] = set()
        self.waiting: set[Hosted] = set()
        self.stalls: Optional[StallWatch] = None  # told what the loop is doing, when set
        self.closing = False
        self.opened = False
        self.full = False  # max_connections reached: accepting paused until one closes
        self.drain_until = math.inf  # on `clock`: idle connections close then, once draining
        self.served = 0  # responses finished
        self.access = (AccessLog(self.settings.access_log_format) if self.settings.access_log
                       else None)
        # Told of every finished response (in `noted`) and of the bytes received (added to
        # `received`); refreshed on the ServerDoer's turns. See hio_http.metrics. Set before
        # `open()`.
        self.metrics: Optional[TrafficObserver] = None
        self.timed = self.access is not None  # whether responses note when they began
        self.trusted = TrustedPeers(self.settings.forwarded_allow_ips)
        self._next_sweep = math.inf  # the earliest deadline not yet swept
        self._last_sweep = -math.inf
        # the least time between sweeps: the setting, or a quarter of the shortest timeout
        made = self.settings
        shortest = min(made.idle_timeout, made.header_timeout, made.body_timeout,
                       made.write_timeout, made.handshake_timeout,
                       made.ws_ping_interval, made.ws_ping_timeout)
        self.sweep_interval: float = max(0.001, min(made.sweep_interval, shortest / 4))
        self.max_pipeline = made.max_pipeline
        self.timeouts = {state: None if name is None else getattr(made, name)
                         for state, name in DEADLINES.items()}

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

    def bind_addresses(self) -> list[Address]:
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
        # Draining first: a connection taken below may be answered as it is accepted.
        self.closing = True
        self.drain_until = self.clock() + self.settings.drain_window
        for acceptor in self.acceptors:
            # Connections the kernel completed but nobody accepted would be reset by the
            # close below, after the client may have sent its request: take them first.
            acceptor.take_waiting()
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
    def address(self) -> Any:
        """The first bound address: (host, port) (IPv6: (host, port, flow, scope)) or a path.
        (Any: what getsockname() returns, which depends on the socket's family.)"""
        return self.acceptors[0].address if self.acceptors else None

    @property
    def url(self) -> str:
        """The URL of the first listening socket."""
        if not self.acceptors:
            raise RuntimeError("the server is not open")
        return self.urls[0]

    @property
    def urls(self) -> list[str]:
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
            self.poller.poll(0)  # type: ignore[union-attr]  # one it owns is set until close()
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

    def nudge(self, steward: Hosted) -> None:
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

    def _accept(self, sock: socket.socket, peer: object) -> None:
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
            self.full = True
            for acceptor in self.acceptors:
                acceptor.pause()
        steward.connection.read_first()

    def trusts(self, peer: object) -> bool:
        """Whether `peer` (a socket peer address) may speak for clients."""
        return (peer[0] if isinstance(peer, tuple) else "") in self.trusted

    def forget(self, steward: Hosted) -> None:
        self.stewards.discard(steward)
        if (self.full and not self.closing
                and len(self.stewards) < self.settings.max_connections):
            self.full = False
            for acceptor in self.acceptors:
                acceptor.resume()


@mypyc_attr(allow_interpreted_subclasses=True)
class BareServer(BaseServer):
    """Serves requests without WSGI: `BareServer(steward=MySteward)` with a Steward subclass
    overriding `respond(request)`, or `BareServer(handler=func)` where `func(request)` (a
    `BareHandler`) returns a `CustomResponder` (or None for "not yet").
    `websockets={path: WebSocketHandler subclass}` serves WebSocket endpoints on the same
    port."""

    def __init__(self, handler: Optional[BareHandler] = None, poller: Optional[Poller] = None,
                 clock: Optional[Callable[[], float]] = None,
                 steward: Optional[type[Steward]] = None,
                 sockets: Optional[list[socket.socket]] = None,
                 websockets: Optional[dict[str, Callable[[], Any]]] = None, **settings: Any):
        # named, not `**kwa`: mypyc hands a bare `**kwa` to the base class as its `poller`
        super().__init__(poller, clock, steward, sockets, websockets, **settings)
        self.handler = handler


@mypyc_attr(allow_interpreted_subclasses=True)
class Server(BaseServer):
    """Hosts a WSGI application: `Server(app, host="127.0.0.1", port=0, **settings)`, with
    WebSocket endpoints beside it on the same port: `websockets={path: WebSocketHandler
    subclass}`. (The command line serves `hio_http.demo.app` when no app is named.)"""

    def __init__(self, app: WSGIApp, poller: Optional[Poller] = None,
                 clock: Optional[Callable[[], float]] = None,
                 steward: Optional[type[Steward]] = None,
                 sockets: Optional[list[socket.socket]] = None,
                 websockets: Optional[dict[str, Callable[[], Any]]] = None, **settings: Any):
        if not callable(app):
            raise TypeError(f"Server needs a WSGI app (a callable), not {app!r}")
        # named, not `**kwa`: mypyc hands a bare `**kwa` to the base class as its `poller`
        super().__init__(poller, clock, steward if steward is not None else WSGISteward,
                         sockets, websockets, **settings)
        self.app = app
        self.errors = ErrorStream()

    def open(self) -> "Server":
        super().open()
        settings = self.settings
        if settings.threads and self.pool is None:
            self.pool = AppPool(settings.threads, settings.thread_queue,
                                slow_after=settings.timeout)
        address = self.address
        scheme = "https" if self.settings.ssl_context else "http"
        if self.acceptors[0].unix:
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
        if settings.compress:  # so an app's 304 can carry the Vary and ETag of its 200; only
            # then, as one more key grows every request's copy of this table
            self._environ["hio_http.compression"] = self.response_settings.compression
        return self

    def close(self) -> None:
        super().close()
        if self.pool is not None:
            self.pool.close()  # threads end once idle; one stuck in an app does not hold us
            self.pool = None

    def connection_environ(self, peer: object) -> dict[str, Any]:
        environ = self._environ.copy()
        if isinstance(peer, tuple):
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = peer[0], str(peer[1])
        else:  # unix socket peers have no address (trust them with "unix" or "*")
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = "", ""
        return environ


@mypyc_attr(allow_interpreted_subclasses=True)
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

    def __init__(self, server: BaseServer, **kwa: Any):
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
    def urgent(self) -> bool:  # type: ignore[override]  # computed; a plain flag elsewhere
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
            self.server.clock = self._wound()  # deadlines follow the Doist's tyme
        self.nested = join_loop(self.server, self.tymth)
        self.pace = self.tock
        self.napping = poller_of(self.tymth) is not None

    def recur(self, tyme: float) -> bool:
        server = self.server
        server.service()
        metrics = server.metrics
        if metrics is not None:
            now = server.clock()
            if now >= metrics.due:
                metrics.refresh(now)
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
            if server.metrics is not None:  # the metrics' next refresh wakes it too
                self.wake_by = min(self.wake_by, server.metrics.due)
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
def openServer(cls: type[BaseServer] = Server, **kwa: Any) -> Iterator[BaseServer]:
    """Open a server for the with-block and always close it, even when the block raises."""
    server = cls(**kwa)
    try:
        server.open()
        yield server
    finally:
        server.close()
