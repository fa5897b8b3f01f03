"""What a server and the keepers of its connections (a `Steward`, a WebSocket session) use of
each other: the server knows its connections only as `Hosted`, and a keeper knows its server
only as `Host`; a Steward knows its server as a `ServerState` (the class serving.BaseServer
derives from; `WSGIHost` adds a WSGI server's side), and what the server is given for its
Stewards to call: a `BareHandler`, the WebSocket `Upgrade`, a `TrafficObserver`; what an
upgrade switches a connection to is `Switched`. Types only: nothing here runs on the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Union

from mypy_extensions import mypyc_attr

from .framing import BaseResponder, ResponseSettings
from .net import ConnectionHandler
from .polling import Poller
from .request import Limits
from .responding import CustomResponder
from .stalls import StallWatch

if TYPE_CHECKING:
    from .accesslog import AccessLog
    from .forwarding import TrustedPeers
    from .net import Connection
    from .pool import AppPool
    from .request import Request
    from .settings import Settings
    from .wsgi import WSGIApp

__all__ = ["Hosted", "Host", "Answer", "BareHandler", "Upgrade", "Switchable", "Switched",
           "TrafficObserver", "ServerState", "WSGIHost"]

# What `respond()` and `upgrade()` may return: a responder made for the request on this
# connection, or an answer the Steward writes with a BareResponder.
Answer = Union[BaseResponder, CustomResponder]


class Hosted(Protocol):
    """What a server keeps for each open connection: its Steward, or what took the Steward's
    place once the connection switched protocols (stewarding.Steward.switch)."""

    @property
    def connection(self) -> Connection: ...

    @property
    def deadline(self) -> Optional[float]:
        """When, on the server's clock, `expire` is due; None: no deadline now."""

    def expire(self, now: float) -> None:
        """The deadline passed (the server's sweep)."""

    def resume(self) -> None:
        """A pass of the server, for a keeper in its `waiting` set."""

    def wind_down(self) -> None:
        """The server began a graceful stop."""


class Host(Protocol):
    """What every keeper of a connection uses of its server (serving.BaseServer)."""

    waiting: set[Hosted]  # resumed on the server's next pass

    @property
    def settings(self) -> Settings: ...

    @property
    def closing(self) -> bool:
        """Draining: a graceful stop began."""

    def clock(self) -> float:
        """Now, on the clock deadlines are set on."""

    def remind(self, deadline: float) -> None:
        """A keeper's deadline is now `deadline`: sweep no later than that."""

    def nudge(self, keeper: Hosted) -> None:
        """Resume `keeper` on the next pass; safe from any thread."""

    def forget(self, keeper: Hosted) -> None:
        """The keeper's connection closed."""


class BareHandler(Protocol):
    """A bare handler (`BareServer(handler=...)`): called once per request on the loop, it
    returns the answer (typically a CustomResponder, or a responder made for the request), or
    None for "not yet" (it is called again on a later pass)."""

    def __call__(self, request: Request, /) -> Optional[Answer]: ...


class Upgrade(Protocol):
    """The WebSocket handshake a server resolves once when given `websockets=` (it is
    websocket.upgrade): switch the steward's connection (Steward.switch) and return None, or
    return the answer that refuses the request."""

    def __call__(self, steward: Switchable, request: Request, /) -> Optional[Answer]: ...


class Switchable(Protocol):
    """What an `Upgrade` uses of the Steward that met the upgrade request
    (stewarding.Steward)."""

    @property
    def server(self) -> ServerState: ...
    @property
    def connection(self) -> Connection: ...

    def switch(self, protocol: Switched) -> None:
        """The connection speaks `protocol` now (the 101 response has been queued)."""


class Switched(Hosted, ConnectionHandler, Protocol):
    """What a connection speaks after `Steward.switch`: its events come there, it stands in the
    server's stewards, and `start(leftover)` hands it the bytes after the upgrade request."""

    def start(self, leftover: bytes) -> None: ...


class TrafficObserver(Protocol):
    """What a server tells of its traffic, when given one (hio_http.metrics.Metrics is)."""

    received: int  # bytes read from clients, added to as they come
    # Four items per finished response: its duration in seconds, the request's method, the
    # status line ("" when none was set) and the body bytes sent. A list the Steward extends,
    # rather than a method it calls: a call would cost a request more than the rest together.
    noted: list[object]
    due: float  # when, on the server's clock, `refresh` wants its next call

    def refresh(self, now: float) -> None:
        """Publish what was counted (the ServerDoer calls it on its turns once `due`)."""


@mypyc_attr(allow_interpreted_subclasses=True)
class ServerState:
    """What a Steward uses of its server, declared on a class the server derives from
    (serving.BaseServer) rather than as a Protocol: the compiled build then reads these on
    every request as fields of a known layout, not by name. Also a `Host`, whose members it
    declares again: mypyc lets no class that takes interpreted subclasses derive from a
    Protocol."""

    settings: Settings
    limits: Limits
    response_settings: ResponseSettings
    poller: Optional[Poller]
    clock: Callable[[], float]  # now, on the clock deadlines are set on
    stewards: set[Hosted]  # a keeper per open connection
    waiting: set[Hosted]  # resumed on the server's next pass
    closing: bool  # draining: a graceful stop began
    timed: bool  # whether responses note when they began (access log, metrics)
    served: int  # responses finished, counted by the Stewards
    sweep_interval: float
    # Settings a Steward reads on every request, copied out of Settings (read by name)
    max_pipeline: int
    timeouts: dict[Any, Optional[float]]  # seconds each stewarding.State allows (DEADLINES)
    stalls: Optional[StallWatch]
    access: Optional[AccessLog]
    metrics: Optional[TrafficObserver]
    websocket_upgrade: Optional[Upgrade]
    # What the upgrade reads of the server: the endpoints (Any: their handlers are
    # websocket's, a module this one never names)
    websockets: dict[str, Callable[[], Any]]
    handler: Optional[BareHandler] = None  # called for each request when set (BareServer)
    pool: Optional[AppPool] = None  # where app calls run when `threads` is set (Server)

    def remind(self, deadline: float) -> None:
        """A keeper's deadline is now `deadline`: sweep no later than that."""
        raise NotImplementedError

    def nudge(self, keeper: Hosted) -> None:
        """Resume `keeper` on the next pass; safe from any thread."""
        raise NotImplementedError

    def forget(self, keeper: Hosted) -> None:
        """The keeper's connection closed."""
        raise NotImplementedError

    def trusts(self, peer: object) -> bool:
        """Whether `peer` (a socket peer address) may speak for clients."""
        raise NotImplementedError

    def drain_left(self) -> float:
        """Seconds left of the drain window (0 when it is over, or not draining)."""
        raise NotImplementedError


class WSGIHost(Protocol):
    """What a WSGISteward uses of its server besides its ServerState (serving.Server)."""

    @property
    def app(self) -> WSGIApp: ...
    @property
    def trusted(self) -> TrustedPeers: ...

    def connection_environ(self, peer: object) -> dict[str, Any]: ...
