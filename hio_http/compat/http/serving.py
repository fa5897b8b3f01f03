"""hio's `hio.core.http.serving` names on the native server: `Server` (alias `WsgiServer`),
`BareServer`, `Steward`, `CustomResponder`, `ServerDoer`, `openServer`, `StaticSink`.

Each is a thin translation of hio's keywords and calls onto `hio_http.serving`; no HTTP is
framed or parsed here. hio's internals (`reqs`, `reps`, `servant.ixes`) do not exist: tests that
looked inside the server should use `hio_http.testing` instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import ssl
from typing import Any, Callable, Iterator, Optional, Protocol
from urllib.parse import unquote

import falcon

from ... import serving as native
from ...responding import CustomResponder as NativeResponder
from ...settings import Settings
from ...static import StaticSink as NativeStaticSink
from .adapting import Hict, external_host, listen_host, server_context, warn_ignored

logger = logging.getLogger("hio_http.compat")

__all__ = ["Server", "WsgiServer", "BareServer", "Steward", "CustomResponder", "ServerDoer",
           "openServer", "StaticSink", "Servant"]

# hio keywords that tune hio's own socket layer; the native server has settings of its own.
IGNORED = frozenset({"bufsize", "wl", "reqs", "reps", "stewards", "bs", "bl", "uid"})
TLS_KEYWORDS = ("context", "version", "certify", "keypath", "certpath", "cafilepath")
# native keywords that may be given beside hio's
NATIVE = frozenset(Settings.__dataclass_fields__) | {"poller", "websockets", "sockets"}


class _Listening(Protocol):
    """What a Servant reads of its server."""

    @property
    def opened(self) -> bool: ...

    @property
    def address(self) -> Any: ...


class Servant:
    """What hio code reads of `server.servant`: `ha` (the bound address once open, with the
    real port when 0 asked for any), `eha` (where a local client reaches it), `opened`,
    `context` (TLS) and `tymeout`."""

    def __init__(self, server: _Listening, host: str, port: int,
                 eha: Optional[tuple] = None, context: Optional[ssl.SSLContext] = None,
                 tymeout: float = 0.0):
        self._server = server
        self._host, self._port = host, port
        self._eha = eha
        self.context = context
        self.tymeout = tymeout

    @property
    def opened(self) -> bool:
        return bool(self._server.opened)

    @property
    def ha(self) -> tuple:
        address = self._server.address
        return tuple(address[:2]) if address else (self._host, self._port)

    @property
    def eha(self) -> tuple:
        if self._eha:
            return tuple(self._eha)
        host, port = self.ha
        return (external_host(host), port)


class _NativeServer(_Listening, Protocol):
    """What hio's lifecycle words use of the native server they are mixed into."""

    servant: Servant
    _servant_args: tuple

    @property
    def waiting(self) -> set: ...

    @property
    def stewards(self) -> set: ...

    def open(self) -> object: ...

    def close(self) -> None: ...


class _HioServer:
    """hio's lifecycle words on a native server: reopen() -> bool, wind(tymth), idle()."""

    Tymeout = 5.0
    servant: Servant

    def _settle(self, kwa: dict, servant: Any, ha: Optional[tuple], host: str,
                port: Optional[int], eha: Optional[tuple], scheme: str,
                tymeout: Optional[float], tymth: Optional[Callable]) -> dict:
        """Native settings from hio's keywords (warning once about those that mean nothing)."""
        warn_ignored(type(self).__name__, [k for k in kwa if k in IGNORED], depth=2)
        tls = {k: kwa.pop(k) for k in TLS_KEYWORDS if k in kwa}
        for key in [k for k in kwa if k in IGNORED]:
            del kwa[key]
        unknown = [k for k in kwa if k not in NATIVE]
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword(s) "
                            f"{', '.join(sorted(unknown))}")
        if servant is not None:  # hio's tcp.Server / tcp.ServerTls: its address and context
            ha = ha or tuple(servant.ha)
            context = getattr(servant, "context", None)
            if scheme and scheme != ("https" if context else "http"):
                raise ValueError(f"scheme {scheme!r} does not match the servant")
            eha = eha or getattr(servant, "eha", None)
            tymeout = tymeout if tymeout is not None else getattr(servant, "tymeout", None)
        elif scheme == "https" or tls.get("context") is not None:
            context = server_context(**tls)
        else:
            context = None
        host, given = ha if ha else (host, port)
        # None: the scheme's default port; 0: any free port (hio turned 0 into 80)
        port = given if given is not None else (443 if context else 80)
        tymeout = self.Tymeout if tymeout is None else float(tymeout)
        self.scheme = "https" if context else "http"
        self.secured = context is not None
        self.tymeout = tymeout
        self._servant_args = (listen_host(host), int(port), eha, context, tymeout)
        settings = dict(kwa, host=listen_host(host), port=int(port), ssl_context=context)
        if tymeout > 0:  # hio's 0 meant "never"; the native idle deadline stays then
            settings.setdefault("idle_timeout", tymeout)
        if tymth is not None:
            settings["clock"] = tymth
        return settings

    def _make_servant(self: _NativeServer) -> None:
        self.servant = Servant(self, *self._servant_args)

    def reopen(self: _NativeServer) -> bool:
        """(Re)open the listening socket: True once listening, False (logged) if it failed."""
        if self.opened:
            self.close()
        try:
            self.open()
        except OSError as ex:
            logger.error("could not listen on %s:%s: %s", *self._servant_args[:2], ex)
            return False
        return True

    def wind(self, tymth: Callable[[], float]) -> None:
        """Keep deadlines on this tymth from now on."""
        self.clock = tymth

    def idle(self: _NativeServer) -> bool:
        """True when no connection has a request in progress."""
        if self.waiting:
            return False
        return all(getattr(steward, "responder", None) is None
                   and getattr(steward, "state", "idle") in ("idle", "handshake")
                   for steward in self.stewards)


def _no_app(environ: dict, start_response: Callable) -> list:
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"Not Found\n"]


class Server(_HioServer, native.Server):
    """hio's WSGI `Server(name, app, reqs, reps, servant, bufsize, wl, ha, host, port, eha,
    scheme, tymeout, tymth, ...)` on the native server. TLS comes from a hio `tcp.ServerTls`
    servant (its context and address) or from `scheme="https"` with `keypath`, `certpath`,
    `cafilepath`, `certify`, `context`; host "" is every interface; port 0 any free port.
    Native settings (`max_body=...`) may be given too."""

    def __init__(self, name: str = "hio.wsgi.server", app: Optional[Callable] = None,
                 servant: Any = None, ha: Optional[tuple] = None, host: str = "",
                 port: Optional[int] = None, eha: Optional[tuple] = None, scheme: str = "",
                 tymeout: Optional[float] = None, tymth: Optional[Callable] = None, **kwa: Any):
        self.name = name
        settings = self._settle(kwa, servant, ha, host, port, eha, scheme, tymeout, tymth)
        native.Server.__init__(self, app if app is not None else _no_app, **settings)
        self._make_servant()


WsgiServer = Server


class ServerDoer(native.ServerDoer):
    """hio's `ServerDoer(server=..., tymth=..., tock=...)`: opens the server on enter,
    services it every turn, closes it on exit, under hio's Doist or this package's."""

    def __init__(self, server: native.BaseServer, **kwa: Any):
        super().__init__(server=server, **kwa)
        if kwa.get("tymth") is not None and hasattr(server, "wind"):
            server.wind(kwa["tymth"])

    def wind(self, tymth: Callable[[], float]) -> None:
        super().wind(tymth)
        server = getattr(self, "server", None)
        if server is not None and not server.opened and hasattr(server, "wind"):
            server.wind(tymth)


@contextlib.contextmanager
def openServer(cls: Optional[type] = None, **kwa: Any) -> Iterator[native.BaseServer]:
    """hio's openServer: make `cls` (default Server) with `kwa`, reopen() it, close it after."""
    server = (cls or Server)(**kwa)
    try:
        server.reopen()
        yield server
    finally:
        server.close()


# -- bare (non-WSGI) servers --------------------------------------------------------------------

class Requestant:
    """What a hio Steward reads of a request: method, url, path, query, version, headers,
    body and data (its JSON, when dictable or sent as JSON)."""

    def __init__(self, request: Any, dictable: bool = False):
        self.method = request.method
        self.url = unquote(request.target)
        self.path = request.path
        self.query = request.query
        self.fragment = ""
        self.version = tuple(int(part) for part in request.version.split("."))
        self.headers = Hict(request.headers)
        self.body = bytearray(request.body.read())
        self.data = None
        self.ended = True
        jsoned = "application/json" in (request.header("content-type") or "")
        if (dictable or jsoned) and self.body:
            try:
                self.data = json.loads(self.body.decode("utf-8"))
            except ValueError:
                self.data = None


class CustomResponder:
    """hio's CustomResponder(steward, status, headers, body, data): a Steward builds it with
    `build(status, headers, body, data)`; the server then sends it through the native
    CustomResponder (headers may hold str, bytes-like or int values)."""

    def __init__(self, steward: Optional["Steward"] = None, status: int = 200,
                 headers: Any = None, body: Any = b"", data: Any = None):
        self.steward = steward
        self.status = status
        self.headers = Hict(headers)
        self.body = body.encode("iso-8859-1") if isinstance(body, str) else body or b""
        self.data = data
        self.ended = False

    def build(self, status: Optional[int] = None, headers: Any = None, body: Any = None,
              data: Any = None) -> bytes:
        """Settle the response (what is None keeps its value; body and data are replaced);
        returns the body it will send."""
        if status is not None:
            self.status = status
        if headers is not None:
            self.headers = Hict(headers)
        self.body = body.encode("iso-8859-1") if isinstance(body, str) else body or b""
        self.data = data
        self.ended = True
        if data is not None:
            return json.dumps(data, separators=(",", ":")).encode("utf-8")
        return bytes(self.body)

    def native(self) -> NativeResponder:
        headers = self.headers.pairs()
        if self.data is not None and "content-type" not in self.headers:
            headers.append(("Content-Type", "application/json; charset=utf-8"))
        return NativeResponder(self.status, headers, self.body, self.data)


class _Remoter:
    """Stands in for hio's connection object: `tx()` is accepted and ignored, because the
    built responder is what goes out (framed by the server)."""

    def __init__(self, peer: Any):
        self.ca = peer

    def tx(self, data: bytes) -> None:
        pass

    def refresh(self) -> None:
        pass


class Steward:
    """hio's Steward: one per connection of a BareServer; override `respond()`, which reads
    `self.requestant` and builds `self.responder` (a CustomResponder). The default echoes the
    request as JSON, as hio's does. A respond() that builds nothing (or returns None) is asked
    again on the next pass, so an answer may wait for another doer."""

    def __init__(self, remoter: Any = None, requestant: Any = None, responder: Any = None,
                 dictable: bool = False):
        self.remoter = remoter
        self.requestant = requestant
        self.responder = responder if responder is not None else CustomResponder(steward=self)
        self.dictable = dictable
        self.waited = False

    def respond(self) -> Any:
        request = self.requestant
        data = {"version": "HTTP/{0}.{1}".format(*request.version), "method": request.method,
                "path": unquote(request.path), "qargs": _qargs(request.query),
                "fragment": request.fragment,
                "headers": [[name, value] for name, value in request.headers.pairs()],
                "body": request.body.decode("utf-8", errors="replace"), "data": request.data}
        self.remoter.tx(self.responder.build(status=200, data=data))


class _BareSteward(native.Steward):
    """The native Steward that runs a hio Steward for its connection."""

    def respond(self, request: Any) -> Optional[NativeResponder]:
        server = self.server
        assert isinstance(server, BareServer)  # the only server that makes these Stewards
        hio = getattr(self, "hio", None)
        if hio is None:
            hio = self.hio = server.hio_steward(remoter=_Remoter(self.peer),
                                                dictable=server.dictable)
        if hio.requestant is None or getattr(hio, "_request", None) is not request:
            hio.requestant = Requestant(request, server.dictable)
            hio.responder = CustomResponder(steward=hio)
            hio._request = request
        answer = hio.respond()
        if isinstance(answer, NativeResponder):
            return answer
        if isinstance(answer, CustomResponder) and not answer.ended:
            answer.ended = True
        if isinstance(answer, CustomResponder):
            return answer.native()
        if hio.responder.ended:
            hio.requestant = None
            return hio.responder.native()
        return None  # not yet


def _qargs(query: str) -> dict:
    qargs = {}
    for part in query.replace(";", "&").split("&"):
        if part:
            key, sep, value = part.partition("=")
            qargs[key] = unquote(value.replace("+", " ")) if sep else "true"
    return qargs


class BareServer(_HioServer, native.BareServer):
    """hio's `BareServer(servant, stewards, name, bufsize, wl, ha, host, port, eha, scheme,
    dictable, timeout, ...)`: each connection gets a Steward (pass `steward=` a subclass whose
    `respond()` answers)."""

    Timeout = 5.0

    def __init__(self, servant: Any = None, name: str = "", ha: Optional[tuple] = None,
                 host: str = "", port: Optional[int] = None, eha: Optional[tuple] = None,
                 scheme: str = "", dictable: bool = False, timeout: Optional[float] = None,
                 steward: type = Steward, tymth: Optional[Callable] = None, **kwa: Any):
        self.name = name
        self.dictable = bool(dictable)
        self.hio_steward = steward
        settings = self._settle(kwa, servant, ha, host, port, eha, scheme,
                                kwa.pop("tymeout", timeout), tymth)
        native.BareServer.__init__(self, steward=_BareSteward, **settings)
        self._make_servant()


# -- static files -------------------------------------------------------------------------------

class StaticSink(NativeStaticSink):
    """hio's StaticSink(staticDirPath): a Falcon sink mapping request paths as hio does (a
    leading `/static` segment dropped, the rest relative to the directory, index.html for the
    directory itself), wherever it is mounted, through the native sink's checks: GET and HEAD
    only, nothing outside the directory. A directory that does not exist is a warning, and
    404s until it does."""

    StaticSinkBasePath = "/static"
    DefaultStaticSinkBasePath = "/"

    def __init__(self, staticDirPath: Optional[str] = None):
        if staticDirPath is None:  # hio's default: "static" beside the serving module
            staticDirPath = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         self.StaticSinkBasePath[1:])
        self.staticDirPath = staticDirPath
        self.ready = self._open()
        if not self.ready:
            logger.warning("static directory %r does not exist: its paths answer 404",
                           staticDirPath)

    def _open(self) -> bool:
        try:
            super().__init__(self.staticDirPath, prefix="/")
        except NotADirectoryError:
            return False
        return True

    def relative(self, path: str) -> Optional[str]:
        base = self.StaticSinkBasePath
        if path == base or path.startswith(base + "/"):
            path = path[len(base):]
        return path or "/"  # the directory itself: its index, without a redirect

    def __call__(self, req: falcon.Request, resp: falcon.Response, **kwargs: Any) -> None:
        if not self.ready and not self._open():
            raise falcon.HTTPNotFound()
        self.ready = True
        super().__call__(req, resp, **kwargs)
