"""What a server and the keepers of its connections (a `Steward`, a WebSocket session) use of
each other, as Protocols: the server knows its connections only as `Hosted`, and a keeper
knows its server only as `Host`; a Steward knows its server as a `StewardHost` (`WSGIHost`
for a WSGI server), and what the server is given for its Stewards to call: a `BareHandler`,
the WebSocket `Upgrade`, a `TrafficObserver`; what an upgrade switches a connection to is
`Switched`. Types only: nothing here runs on the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol, Union

from .framing import BaseResponder
from .net import ConnectionHandler
from .responding import CustomResponder

if TYPE_CHECKING:
    from .accesslog import AccessLog
    from .forwarding import TrustedPeers
    from .framing import ResponseSettings
    from .net import Connection
    from .polling import Poller
    from .pool import AppPool
    from .request import Limits, Request
    from .settings import Settings
    from .stalls import StallWatch
    from .wsgi import WSGIApp

__all__ = ["Hosted", "Host", "Answer", "BareHandler", "Upgrade", "Switchable", "Switched",
           "TrafficObserver", "StewardHost", "WSGIHost"]

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
    def server(self) -> StewardHost: ...
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


class StewardHost(Host, Protocol):
    """What a Steward uses of its server (serving.BaseServer, a layer above the Steward)."""

    served: int  # responses finished, counted here
    stewards: set[Hosted]

    @property
    def limits(self) -> Limits: ...
    @property
    def poller(self) -> Optional[Poller]: ...
    @property
    def response_settings(self) -> ResponseSettings: ...
    @property
    def handler(self) -> Optional[BareHandler]: ...
    @property
    def websocket_upgrade(self) -> Optional[Upgrade]: ...
    @property
    def websockets(self) -> Mapping[str, Callable[[], Any]]:
        """What the upgrade reads of the server this Steward hands it: the endpoints (Any:
        their handlers are websocket's, a module this one never names)."""
    @property
    def pool(self) -> Optional[AppPool]: ...
    @property
    def stalls(self) -> Optional[StallWatch]: ...
    @property
    def access(self) -> Optional[AccessLog]: ...
    @property
    def metrics(self) -> Optional[TrafficObserver]: ...
    @property
    def timed(self) -> bool: ...
    @property
    def sweep_interval(self) -> float: ...

    def trusts(self, peer: object) -> bool: ...

    def drain_left(self) -> float: ...


class WSGIHost(StewardHost, Protocol):
    """What a WSGISteward uses of its server besides (serving.Server)."""

    @property
    def app(self) -> WSGIApp: ...
    @property
    def trusted(self) -> TrustedPeers: ...

    def connection_environ(self, peer: object) -> dict[str, Any]: ...
