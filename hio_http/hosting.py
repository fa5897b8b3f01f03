"""What a server and the keepers of its connections (a `Steward`, a WebSocket session) use of
each other, as Protocols: the server knows its connections only as `Hosted`, and a keeper
knows its server only as `Host`. Types only: nothing here runs on the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Protocol

if TYPE_CHECKING:
    from .net import Connection
    from .settings import Settings

__all__ = ["Hosted", "Host"]


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
