"""hio_http: a cooperative, nonblocking WSGI HTTP/1.1 server on a doer scheduler."""

from .client_parsing import ClientError
from .clienting import Client, ClientDoer, EventStream, Response
from .doing import DoDoer, Doer, Doist, doify, doize
from .polling import Poller, poller_of
from .requesting import Limits, Request, RequestError, Requestant
from .responding import CustomResponder, Responder
from .serving import BareServer, Server, ServerDoer, Settings, Steward, openServer
from .sse import Broadcaster, format_event
from .static import StaticSink
from .timing import Tymee, Tymer, Tymist

__version__ = "0.1.0"

__all__ = [
    "Client", "ClientDoer", "ClientError", "EventStream", "Response",
    "DoDoer", "Doer", "Doist", "doify", "doize",
    "Poller", "poller_of",
    "Limits", "Request", "RequestError", "Requestant",
    "CustomResponder", "Responder",
    "BareServer", "Server", "ServerDoer", "Settings", "Steward", "openServer",
    "Broadcaster", "format_event", "StaticSink",
    "Tymee", "Tymer", "Tymist",
]
