"""What the parts of the client use of the client that owns them, as Protocols: a `Session`
knows its client only as a `SessionClient`, and an event stream or a WebSocket as a
`StreamClient` (clienting.Client is both). Types only: nothing here runs on the loop.
"""

from __future__ import annotations

import ssl
from typing import Any, Optional, Protocol, Union

from .client_bodies import RequestBody
from .client_exchange import Exchange
from .client_parsing import Head
from .polling import Poller

__all__ = ["SessionClient", "StreamClient"]


class SessionClient(Protocol):
    """What a Session uses of the client that owns it (clienting.Client, a layer above)."""

    connections_opened: int  # counted here, as each connection begins

    @property
    def poller(self) -> Optional[Poller]: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def origin(self) -> str: ...
    @property
    def server_name(self) -> str: ...
    @property
    def tls_context(self) -> Optional[ssl.SSLContext]: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def continue_timeout(self) -> float: ...
    @property
    def max_header_bytes(self) -> int: ...
    @property
    def max_header_count(self) -> int: ...
    @property
    def max_pipeline(self) -> int: ...
    @property
    def max_body(self) -> int: ...
    @property
    def high_water(self) -> int: ...
    @property
    def decompress(self) -> bool: ...

    def clock(self) -> float: ...

    def follows(self, exchange: Exchange, head: Head) -> bool:
        """Whether the client will follow the redirect `head` answers `exchange` with."""


class StreamClient(SessionClient, Protocol):
    """What a stream of the client (client_events.EventStream, websocket_client's
    WebSocketClient: layers above) uses of the client that made it, its session's needs
    included."""

    @property
    def streams(self) -> list[Any]:
        """The client's streams, which it starts, services and closes (Any: they are
        of several kinds, all of them strangers to this module)."""
    @property
    def default_headers(self) -> list[tuple[str, str]]: ...
    @property
    def timeout(self) -> Optional[float]: ...

    def request_target(self, path: str) -> str: ...

    def request_fields(self, fields: list[tuple[str, str]], method: str,
                       body: Union[RequestBody, bytes]) -> list[tuple[str, str]]:
        """The fields a request goes out with: the client's rules applied to `fields`."""
