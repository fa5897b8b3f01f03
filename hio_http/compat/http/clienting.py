"""hio's `hio.core.http.clienting` names on the native client: `Client`, `ClientDoer`,
`openClient`, `Requester`, `Response`.

Requests are dicts queued on `client.requests`; answers are dicts appended to
`client.responses`, and Server-Sent Events (from any text/event-stream response) to
`client.events`. The native Client does the HTTP; nothing here raises a network failure into
the loop: it lands in the response dict as `errored` and `error`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import secrets
from typing import Any, Callable, Iterator, Optional
from urllib.parse import quote, unquote_plus, urlencode, urlsplit

from ...client_parsing import EventParser
from ...clienting import Client as NativeClient
from ...doing import Doer
from ...grammar import header_text
from ...polling import Poller, join_loop, leave_loop
from .adapting import Hict, client_context, warn_ignored

logger = logging.getLogger("hio_http.compat")

__all__ = ["Client", "ClientDoer", "openClient", "Requester", "Response"]

Response = collections.namedtuple(
    "Response", "version status reason headers body data request errored error")

IGNORED = frozenset({"connector", "respondent", "name", "uid", "bufsize", "wl", "msg"})
TLS_KEYWORDS = ("context", "version", "certify", "hostify", "keypath", "certpath",
                "cafilepath")
CONNECT_TIMEOUT = 30.0  # seconds; a response itself may take as long as it takes, as in hio
DEFAULT_PORTS = {"http": 80, "https": 443}


class Requester:
    """The client's default request and its destination: `hostname`, `port`, `scheme`,
    `method`, `path`, `qargs`, `fragment`, `headers`, `body`, `data`, `fargs`."""

    def __init__(self, hostname: str = "127.0.0.1", port: int = 80, scheme: str = "http",
                 method: str = "GET", path: str = "/", qargs: Optional[dict] = None,
                 fragment: str = "", headers: Any = None, body: Any = b"", data: Any = None,
                 fargs: Optional[dict] = None, portOptional: bool = False):
        self.hostname, self.port, self.scheme = hostname, port, scheme
        self.method = (method or "GET").upper()
        self.path = path or "/"
        self.qargs = dict(qargs or {})
        self.fragment = fragment
        self.headers = Hict(headers)
        self.body = _body_bytes(body)
        self.data = data
        self.fargs = fargs
        self.portOptional = bool(portOptional)


class Client:
    """hio's `Client(hostname, port, scheme, method, path, headers, qargs, fragment, body,
    data, fargs, requests, events, responses, redirectable, portOptional, reconnectable,
    tymth, ...)`, over one native Client. `path` may be a whole URL. TLS: `scheme="https"` with
    `certedhost`, `keypath`, `certpath`, `cafilepath`, `certify`, `hostify`, `context`."""

    def __init__(self, hostname: str = "127.0.0.1", port: Optional[int] = None,
                 scheme: str = "", method: str = "GET", path: str = "/", headers: Any = None,
                 qargs: Optional[dict] = None, fragment: str = "", body: Any = b"",
                 data: Any = None, fargs: Optional[dict] = None,
                 requests: Optional[collections.deque] = None, dictable: Optional[bool] = None,
                 events: Optional[collections.deque] = None, redirectable: bool = True,
                 redirects: Optional[list] = None,
                 responses: Optional[collections.deque] = None, portOptional: bool = False,
                 reconnectable: bool = False, tymth: Optional[Callable[[], float]] = None,
                 tymeout: Optional[float] = None, certedhost: str = "",
                 requester: Optional[Requester] = None, **kwa: Any):
        warn_ignored("Client", [k for k in kwa if k in IGNORED])
        tls = {k: kwa.pop(k) for k in TLS_KEYWORDS if k in kwa}
        unknown = [k for k in kwa if k not in IGNORED]
        if unknown:
            raise TypeError(f"Client() got unexpected keyword(s) {', '.join(sorted(unknown))}")
        self.requests = requests if requests is not None else collections.deque()
        self.responses = responses if responses is not None else collections.deque()
        self.events = events if events is not None else collections.deque()
        self.redirects = redirects if redirects is not None else []
        self.dictable = bool(dictable)
        self.reconnectable = bool(reconnectable)
        splits = urlsplit(path)
        scheme = (splits.scheme or scheme or "http").lower()
        scheme = "https" if scheme == "https" else "http"
        hostname, port = _host_port(splits.hostname or hostname,
                                    splits.port if splits.port is not None else port, scheme)
        query = dict(qargs or {})
        query.update(_parse_query(splits.query))
        self.requester = requester or Requester(
            hostname=hostname, port=port, scheme=scheme, method=method, path=splits.path or "/",
            qargs=query, fragment=splits.fragment or fragment, headers=headers, body=body,
            data=data, fargs=fargs, portOptional=portOptional)
        context = client_context(**tls) if scheme == "https" else None
        self.native = NativeClient(
            host=hostname, port=port, scheme=scheme, timeout=(tymeout or CONNECT_TIMEOUT, None),
            max_redirects=5 if redirectable else 0, tls_context=context,
            server_name=certedhost or None, clock=tymth, user_agent=None)
        self._pending: collections.deque = collections.deque()  # [request, Response, parser]

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def secured(self) -> bool:
        return self.requester.scheme == "https"

    def wind(self, tymth: Callable[[], float]) -> None:
        """Keep deadlines on this tymth from now on."""
        self.native.set_clock(tymth)

    def reopen(self) -> bool:
        """Ready to send: connections open as requests need them."""
        self.native.closed = False
        self.native.open()
        return True

    def close(self) -> None:
        self.native.close()
        self._collect()

    # -- requests -----------------------------------------------------------------------------

    def request(self, method: Optional[str] = None, path: Optional[str] = None,
                qargs: Optional[dict] = None, fragment: Optional[str] = None,
                headers: Any = None, body: Any = None, data: Any = None,
                fargs: Optional[dict] = None, reply: Any = None, **kwa: Any) -> None:
        """Queue a request dict on `.requests`; what is not given comes from `.requester`
        (body, data and fargs excepted). Header values are str, bytes-like or int: anything
        else is a TypeError, here."""
        requester = self.requester
        request = {
            "method": (method or requester.method).upper(),
            "path": path if path is not None else requester.path,
            "qargs": dict(qargs) if qargs is not None else dict(requester.qargs),
            "fragment": fragment if fragment is not None else requester.fragment,
            "headers": Hict(headers) if headers is not None else requester.headers.copy(),
            "body": _body_bytes(body), "data": data, "fargs": fargs}
        for name, value in request["headers"].pairs():
            header_text(name, value)  # raises TypeError now, not later in the loop
        if reply is not None:
            request["reply"] = reply
        request.update((key, value) for key, value in kwa.items() if value is not None)
        self.requests.append(request)

    def transmit(self, **kwa: Any) -> None:
        """Send the requester's request (updated with `kwa`) ahead of any queued."""
        requester = self.requester
        for key, value in kwa.items():
            if value is not None and hasattr(requester, key):
                setattr(requester, key, Hict(value) if key == "headers" else value)
        self.request(body=requester.body, data=requester.data, fargs=requester.fargs)
        self.requests.appendleft(self.requests.pop())

    def respond(self) -> Optional[Response]:
        """The oldest response as a namedtuple (removed from `.responses`), or None."""
        if self.responses:
            response = self.responses.popleft()
            return Response(**{field: response.get(field) for field in Response._fields})
        return None

    # -- the loop -----------------------------------------------------------------------------

    def service(self) -> None:
        """One turn: send what is queued, let the native client work, collect answers."""
        while self.requests:
            self._send(self.requests.popleft())
        self.native.service()
        self._collect()

    def _send(self, request: dict) -> None:
        request = dict(request)
        try:
            method, target, headers, body = self._build(request)
            response = self.native.request(method, target, headers, body)
        except (TypeError, ValueError) as ex:  # a request that cannot be sent: its answer
            self.responses.append(_answer(request, None, f"invalid request: {ex}"))
            return
        self._pending.append([request, response, None])

    def _build(self, request: dict) -> tuple:
        requester = self.requester
        method = (request.get("method") or requester.method).upper()
        splits = urlsplit(request.get("path") or requester.path)
        if splits.scheme and splits.scheme != requester.scheme or (
                splits.hostname and splits.hostname != requester.hostname) or (
                splits.port and splits.port != requester.port):
            raise ValueError(f"{request.get('path')!r} is not on this client's server")
        qargs = dict(request.get("qargs") or {})
        qargs.update(_parse_query(splits.query))
        target = quote(splits.path or "/", safe="/%:@!$&'()*+,;=~")
        if qargs:
            target += "?" + "&".join(f"{quote(str(key), safe='')}={quote(str(value), safe='')}"
                                     for key, value in qargs.items())
        headers = Hict(request.get("headers") if request.get("headers") is not None
                       else requester.headers)
        body = b"" if method == "GET" else self._body(request, headers)
        if "host" not in headers:
            headers["Host"] = _host_header(requester)
        if "accept-encoding" not in headers:
            headers["Accept-Encoding"] = "identity"
        request.update(host=requester.hostname, port=requester.port, scheme=requester.scheme,
                       method=method, path=unquote_plus(splits.path or "/"), qargs=qargs,
                       headers=headers)
        return method, target, headers.pairs(), body

    def _body(self, request: dict, headers: Hict) -> bytes:
        """The body from data (JSON), fargs (a form) or body, as hio chooses between them; a
        Content-Length of the caller's is dropped when the body is made here."""
        data, fargs = request.get("data"), request.get("fargs")
        if data is None and fargs is None:
            return _body_bytes(request.get("body"))
        headers.pop("content-length", None)
        if data is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
            return json.dumps(data, separators=(",", ":")).encode("utf-8")
        assert fargs is not None  # data or fargs was given
        if str(headers.get("content-type", "")).startswith("multipart/form-data"):
            boundary = "hio-http-" + secrets.token_hex(12)
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
            return _multipart(fargs, boundary)
        headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
        return urlencode({str(k): str(v) for k, v in fargs.items()}).encode("utf-8")

    def _collect(self) -> None:
        """Events from event streams as they arrive; finished responses, in order."""
        for entry in self._pending:
            request, response, parser = entry
            if parser is None and _is_event_stream(response):
                entry[2] = parser = [EventParser(), 0]
            if parser is not None:
                self._take_events(response, parser)
        while self._pending and self._pending[0][1].done:
            request, response, parser = self._pending.popleft()
            if parser is None:  # an event stream fed .events instead, as in hio
                self.responses.append(_answer(request, response, None, self.dictable))

    def _take_events(self, response: Any, parser: list) -> None:
        body = response.body
        fresh, parser[1] = body[parser[1]:], len(body)
        if not fresh or parser[0] is None:
            return
        try:
            events = parser[0].feed(fresh)
        except Exception as ex:  # a malformed stream ends its events, never the loop
            logger.warning("bad event stream from %s: %s", response.url, ex)
            parser[0] = None
            return
        for event in events:
            data: Any = event.data
            if self.dictable:
                try:
                    data = json.loads(data)
                except ValueError:
                    pass
            self.events.append({"id": event.id or None,
                                "name": "" if event.event == "message" else event.event,
                                "data": data, "retry": event.retry})


class ClientDoer(Doer):
    """hio's `ClientDoer(client=..., tymth=..., tock=...)`: opens the client on enter,
    services it every turn, closes it on exit; under hio's Doist or this package's."""

    def __init__(self, client: Client, **kwa: Any):
        super().__init__(**kwa)
        self.client = client
        self.nested: Optional[Poller] = None
        if kwa.get("tymth") is not None:
            client.wind(kwa["tymth"])

    def wind(self, tymth: Callable[[], float]) -> None:
        super().wind(tymth)
        client = getattr(self, "client", None)
        if client is not None:
            client.wind(tymth)

    def enter(self) -> None:
        self.client.native.closed = False
        self.nested = join_loop(self.client.native, self.tymth)

    def recur(self, tyme: float) -> bool:
        try:
            self.client.service()
        except Exception:
            logger.exception("error servicing a hio-style client")
        return False

    def exit(self) -> None:
        leave_loop(self.nested, self.tymth)
        self.nested = None
        self.client.close()


@contextlib.contextmanager
def openClient(cls: Optional[type] = None, **kwa: Any) -> Iterator[Client]:
    """hio's openClient: make `cls` (default Client) with `kwa`, reopen() it, close it after."""
    client = (cls or Client)(**kwa)
    try:
        client.reopen()
        yield client
    finally:
        client.close()


# -- helpers ------------------------------------------------------------------------------------

def _answer(request: dict, response: Any, error: Optional[str],
            dictable: bool = False) -> dict:
    """hio's response dict for a native Response (or for a request that never went out)."""
    status = getattr(response, "status", None)
    if response is not None and response.error is not None:
        error = str(response.error)
    headers = Hict(response.headers if status is not None else None)
    body = bytearray(response.body) if status is not None else bytearray()
    data = None
    if body and (dictable or "json" in str(headers.get("content-type", ""))):
        try:
            data = json.loads(body.decode("utf-8"))
        except ValueError:
            data = None
    version = tuple(int(x) for x in response.version.split(".")) if status is not None else None
    return {"version": version, "status": status,
            "reason": response.reason if status is not None else None, "headers": headers,
            "body": body, "data": data, "request": request, "errored": error is not None,
            "error": error}


def _is_event_stream(response: Any) -> bool:
    if response.status is None:
        return False
    kind = response.header("content-type") or ""
    return kind.split(";")[0].strip().lower() == "text/event-stream"


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):  # RFC 2616 §3.7.1's default charset, as hio sends text
        return body.encode("iso-8859-1")
    return bytes(body)


def _multipart(fargs: dict, boundary: str) -> bytes:
    """multipart/form-data (RFC 7578) with one text part per field."""
    parts = []
    for key, value in fargs.items():
        name = str(key).replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
        value = value if isinstance(value, (bytes, bytearray)) else str(value).encode("utf-8")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
                     f"Content-Type: text/plain; charset=utf-8\r\n\r\n".encode("utf-8")
                     + bytes(value) + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(parts)


def _parse_query(query: str) -> dict:
    qargs = {}
    for part in query.replace(";", "&").split("&"):
        if part:
            key, sep, value = part.partition("=")
            qargs[key] = unquote_plus(value) if sep else "true"
    return qargs


def _host_port(hostname: str, port: Optional[int], scheme: str) -> tuple:
    """hio's host rules: "host:port" in the hostname wins; brackets come off IPv6; no port
    means the scheme's default (an explicit 0 stays 0)."""
    if hostname.startswith("[") and "]" in hostname:
        inside, _, rest = hostname[1:].partition("]")
        hostname = inside
        if rest.startswith(":") and rest[1:]:
            port = int(rest[1:])
    elif hostname.count(":") == 1:
        hostname, _, given = hostname.partition(":")
        if given:
            port = int(given)
    return hostname, DEFAULT_PORTS[scheme] if port is None else int(port)


def _host_header(requester: Requester) -> str:
    host = f"[{requester.hostname}]" if ":" in requester.hostname else requester.hostname
    if requester.portOptional and DEFAULT_PORTS[requester.scheme] == requester.port:
        return host
    return f"{host}:{requester.port}"
