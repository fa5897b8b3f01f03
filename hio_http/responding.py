"""Writers of responses: `Responder` runs a WSGI app (PEP 3333); a `CustomResponder` is a bare
status, headers and body, which a `BareResponder` writes. A writer is made with its connection,
its request and the server's `ResponseSettings`, frames its body with `framing.BaseResponder`
and pulls it only while the connection's send buffer is under its high-water mark.

A responder never blocks and never reads the socket; an app's item of b"" means "not yet".
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Callable, Final, Iterable, Iterator, Optional, Union

from mypy_extensions import mypyc_attr

from .framing import (BLOCKED, DONE, WAITING, BaseResponder, Header, ResponseSettings,
                      body_bytes, check_headers, check_status, clean_statuses, clean_heads,
                      drop_hop_by_hop, reason_of)
from .grammar import BYTES_LIKE, header_text
from .net import Outlet
from .request import Request
from .wsgi import Environ, ExcInfo, FileWrapper, WSGIApp, regular_file_span

__all__ = ["Responder", "CustomResponder", "BareResponder"]

logger: Final = logging.getLogger("hio_http.server")

_TAKEN: Final[Iterator[object]] = iter(())  # the one item is taken (exhausted, it stays exhausted)


@mypyc_attr(allow_interpreted_subclasses=True)
class Responder(BaseResponder):
    """Runs a WSGI application for one request (PEP 3333)."""

    result: Optional[Iterable[object]] = None  # what the app returned
    pending_head = False  # start_response was called; head not yet sent

    def __init__(self, connection: Outlet, request: Request, settings: ResponseSettings,
                 app: WSGIApp, environ: Environ):
        super().__init__(connection, request, settings)
        self.app = app
        self.environ = environ

    def start_response(self, status: str, headers: list[Header],
                       exc_info: Optional[ExcInfo] = None) -> Callable[[bytes], None]:
        if exc_info and exc_info[1] is not None:  # (None, None, None): no exception at hand
            try:
                if self.head_sent:  # too late to change anything: let it propagate (PEP 3333)
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status:
            raise AssertionError("start_response called a second time without exc_info")
        # A head sent before was checked, with nothing to drop: skip it all, and keep its
        # encoding for send_head.
        head = None
        if type(status) is str and type(headers) is list:
            try:
                head = clean_heads.get((status, *headers))
            except TypeError:  # an unhashable field, which check_headers names
                pass
        if head is None:
            if type(status) is not str or status not in clean_statuses:  # else known valid
                check_status(status)
            if not check_headers(headers):  # some field is new: maybe hop-by-hop
                headers, close = drop_hop_by_hop(headers)
                if close:
                    self.keep_alive = False
        self.status, self.headers = status, headers
        self.head = head
        self.pending_head = True
        return self.write

    def write(self, data: Union[bytes, bytearray, memoryview]) -> None:
        """The legacy write() callable: sends at once (the buffer may pass its high-water mark)."""
        if not self.status:
            raise AssertionError("write() called before start_response()")
        self._out(body_bytes(data, "write() was given"))

    def _out(self, data: bytes, last: bool = False) -> None:
        if not self.head_sent:
            self.pending_head = False
            self.send_head(data, last=last)
        else:
            self.send_body(data)

    def start(self) -> None:
        try:
            self.result = self.app(self.environ, self.start_response)
            if type(self.result) is FileWrapper and self._send_whole_file():
                return
            self.iterator = iter(self.result)
        except Exception:
            self.fail()

    def _send_whole_file(self) -> bool:
        """A wsgi.file_wrapper of a regular file on plain TCP goes out by os.sendfile, straight
        from the page cache; under TLS (or for other file-likes) it is read in blocks."""
        result = self.result
        if (type(result) is not FileWrapper or self.connection.tls or not self.status
                or self.pending_head is False):
            return False
        fd, offset, size = regular_file_span(result.filelike)
        if fd is None or self.compresses(size):  # gzip needs the bytes: read them in blocks
            return False
        if self.length_header() is None:
            self.headers.append(("Content-Length", str(size)))
            self.head = None
        self.send_head(b"")
        count = min(size, self.length) if self.length is not None else size
        if not self.bodiless:
            self.connection.sendfile(fd, offset, count)
            self.sent = count
        self.iterator = iter(())
        self.finish()
        return True

    def length_header(self) -> Optional[str]:
        for name, value in self.headers:
            if name.lower() == "content-length":
                return value
        return None

    def pump(self) -> str:
        iterator = self.iterator
        if iterator is None:  # the app failed
            return DONE
        result = self.result
        try:
            if (type(result) is list and len(result) == 1 and type(result[0]) is bytes
                    and not self.head_sent and self.status
                    and self.connection.pending < self.high_water
                    and not self.connection.closed):
                # The common answer, a one-item list: head and body in one send, without
                # iterating (and here, not in a method of its own: a call saved per request).
                self.iterator = _TAKEN
                self.pending_head = False
                self.send_head(result[0], last=True)
                if self.bodiless or self.connection.pending < self.high_water:
                    # A whole body is neither chunked nor gzipped as a stream: finish() has
                    # something to do only for one short of its Content-Length.
                    if self.sent != self.length:
                        self.finish()
                    return DONE
                return BLOCKED  # finished on the pump after the drain, as the loop would
            return self._pull(iterator)
        except Exception:
            self.fail()
            return DONE

    def _pull(self, iterator: Iterator[object]) -> str:
        connection = self.connection
        result = self.result
        sized = isinstance(result, (list, tuple))
        # A one-item list is the whole body: send it with a Content-Length, in one write.
        single = isinstance(result, (list, tuple)) and len(result) == 1
        while connection.pending < self.high_water:
            if connection.closed:
                return DONE
            try:
                chunk = next(iterator)
            except StopIteration:
                if not self.status:
                    raise AssertionError("the app returned without calling start_response()")
                if not self.head_sent:
                    self._out(b"", last=True)
                self.finish()
                return DONE
            if type(chunk) is not bytes:
                chunk = body_bytes(chunk, "the app yielded")
            if not chunk:
                if sized:
                    continue
                return WAITING
            if not self.status:
                raise AssertionError("the app yielded body bytes before start_response()")
            self._out(chunk, last=single)
            if self.bodiless:  # HEAD, 204, 304: the rest of the body would be discarded anyway
                self.finish()
                return DONE
        return BLOCKED

    def fail(self) -> None:
        """The app raised: log it; answer 500 if nothing went out yet, else break the response."""
        logger.error("error in WSGI app for %s %s", self.request.method, self.request.target,
                     exc_info=sys.exc_info())
        self.iterator = None
        if self.head_sent:
            self.broken = True
            self.keep_alive = False
        else:
            self.send_error(500)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        result = self.result
        # A list (the usual result) has no close(); asking would raise and discard an
        # AttributeError, which the compiled build pays for in full.
        close = getattr(result, "close", None) if type(result) is not list else None
        if close is not None:
            try:
                close()
            except Exception:
                logger.exception("error closing the WSGI app's iterable")


class CustomResponder:
    """A bare answer for a Steward to return: `status` (code or "200 OK"), `headers` (list of
    pairs or a dict; values str, bytes-like or int), and either `body` (bytes-like, or an
    iterable of bytes-like items where b"" means "not yet", for streaming) or `data` (sent as
    JSON). `Connection: close` ends the connection after this response. `compress=True` gzips
    it whenever the client accepts gzip and the type is text-like (event streams included),
    `False` never; by default the server's `compress` setting decides.

    It is checked when made and holds no connection: the Steward writes it with a
    `BareResponder` made for the request it answers. An answer with a bytes body may be
    returned for any number of requests; an iterator body is used up by the first."""

    def __init__(self, status: Union[int, str] = 200,
                 headers: Union[Mapping[str, object], Iterable[tuple[str, object]], None] = None,
                 body: Union[bytes, bytearray, memoryview, Iterable[object]] = b"",
                 data: object = None, compress: Optional[bool] = None):
        self.compress = compress
        code = int(str(status)[:3])
        self.status = str(status) if " " in str(status) else f"{code} {reason_of(code)}"
        pairs = headers.items() if isinstance(headers, Mapping) else headers or []
        self.headers = [(name, header_text(name, value)) for name, value in pairs]
        if data is not None:
            body = json.dumps(data, separators=(",", ":")).encode("utf-8")
            if not any(name.lower() == "content-type" for name, _ in self.headers):
                self.headers.append(("Content-Type", "application/json"))
        check_status(self.status)
        check_headers(self.headers)
        self.headers, self.close_asked = drop_hop_by_hop(self.headers)
        self.body: Union[bytes, Iterable[object]]  # the whole body, or its items to stream
        if isinstance(body, BYTES_LIKE):
            self.body = bytes(body)
        elif isinstance(body, str) or not hasattr(body, "__iter__"):
            raise TypeError(f"CustomResponder body must be bytes-like or an iterable of "
                            f"bytes-like items, not {type(body).__name__}")
        else:
            self.body = body


class BareResponder(BaseResponder):
    """Writes a `CustomResponder`'s answer to one request on its connection."""

    def __init__(self, connection: Outlet, request: Request, settings: ResponseSettings,
                 answer: CustomResponder):
        super().__init__(connection, request, settings)
        self.status = answer.status
        self.headers = answer.headers  # shared with the answer: framing replaces, never edits it
        self.body = body = answer.body
        self.whole: Optional[bytes]  # the body when it is known whole, else None: streamed
        if isinstance(body, bytes):
            self.whole = body
            self.iterator = iter((body,))
        else:
            self.whole = None
            self.iterator = iter(body)
        if answer.close_asked:
            self.keep_alive = False
        if answer.compress is not None:
            self.compression = settings.compression_asked if answer.compress else None

    def start(self) -> None:
        pass

    def pump(self) -> str:
        whole, iterator = self.whole, self.iterator
        if self.bodiless and not self.head_sent:  # HEAD: the head alone, without the body
            self.send_head(whole if whole is not None else b"", last=whole is not None)
            self.finish()
            return DONE
        if iterator is None:  # failed
            return DONE
        try:
            while self.connection.pending < self.high_water:
                if self.connection.closed:
                    return DONE
                try:
                    chunk = next(iterator)
                except StopIteration:
                    if not self.head_sent:
                        self.send_head(b"", last=True)
                    self.finish()
                    return DONE
                if type(chunk) is not bytes:
                    chunk = body_bytes(chunk, "the response body yielded")
                if not chunk:
                    if whole is None:
                        return WAITING
                    continue
                if self.head_sent:
                    self.send_body(chunk)
                else:
                    self.send_head(chunk, last=whole is not None)
                if self.bodiless:  # HEAD, 204, 304: the rest would be discarded anyway
                    self.finish()
                    return DONE
            return BLOCKED
        except Exception:
            logger.exception("error in response body for %s", self.request.target)
            if self.head_sent:
                self.broken, self.keep_alive = True, False
            else:
                self.send_error(500)
            return DONE

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            close = getattr(self.body, "close", None)
            if close is not None and self.whole is None:
                close()

