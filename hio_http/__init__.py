"""hio_http: a cooperative, nonblocking WSGI HTTP/1.1 server on a doer scheduler.

`import hio_http` loads neither Falcon nor wsproto: the names that need them are imported on
first use (PEP 562).
"""

from typing import Any

from .client_parsing import ClientError
from .clienting import Client, ClientDoer, EventStream, Response
from .doing import DoDoer, Doer, Doist, doify, doize
from .polling import Poller, poller_of
from .requesting import Limits, Request, RequestError, Requestant
from .responding import CustomResponder, Responder
from .serving import (BareHandler, BareServer, Server, ServerDoer, Settings, StartResponse,
                      Steward, WSGIApp, openServer)
from .sse import Broadcaster, format_event
from .timing import Tymee, Tymer, Tymist

from .version import __version__  # noqa: F401  (re-exported)

_LAZY = {"StaticSink": "static"}  # name -> module, imported when the name is first used


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hio_http' has no attribute {name!r}")
    from importlib import import_module
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "Client", "ClientDoer", "ClientError", "EventStream", "Response",
    "DoDoer", "Doer", "Doist", "doify", "doize",
    "Poller", "poller_of",
    "Limits", "Request", "RequestError", "Requestant",
    "CustomResponder", "Responder",
    "BareServer", "Server", "ServerDoer", "Settings", "Steward", "openServer",
    "BareHandler", "WSGIApp", "StartResponse",
    "Broadcaster", "format_event", "StaticSink",
    "Tymee", "Tymer", "Tymist",
]
