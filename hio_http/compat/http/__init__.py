"""`hio.core.http`'s names on hio_http: `from hio_http.compat import http` in place of
`from hio.core import http` is the whole port for code using its public API (see the README,
"Coming from hio"). Thin adapters over the native server and client, nothing more.
"""

from . import clienting, serving
from .clienting import Client, ClientDoer, Requester, Response, openClient
from .serving import (BareServer, CustomResponder, Server, ServerDoer, StaticSink, Steward,
                      WsgiServer, openServer)

__all__ = ["clienting", "serving", "Client", "ClientDoer", "Requester", "Response", "openClient",
           "BareServer", "CustomResponder", "Server", "ServerDoer", "StaticSink", "Steward",
           "WsgiServer", "openServer"]
