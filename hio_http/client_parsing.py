"""The client's protocol core, with no sockets and no clock: its errors, `ResponseParser`
(bytes of HTTP/1.x responses in, `Interim` / `Head` / `Data` / `End` events out, on llhttp) and
`EventParser` (a text/event-stream, per the WHATWG rules). `clienting` drives them over sockets.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import re
from typing import Optional, Sequence, Union

import httptools

from .grammar import field_values, list_members

# -- errors -----------------------------------------------------------------------------------

class ClientError(Exception):
    """Why a response failed. Set on `Response.error`, never raised into the loop."""


class ConnectError(ClientError):
    """No connection: refused, unreachable, unresolvable, or the TLS handshake failed."""


class ClientTimeout(ClientError):
    """A deadline passed: connecting, or the whole response within the request's timeout."""


class ConnectTimeout(ConnectError, ClientTimeout):
    """The connection (TCP and TLS handshake) was not up within the connect timeout."""


class ProtocolError(ClientError):
    """The server's bytes are not valid HTTP/1.1, or exceed one of the client's limits."""


class ConnectionLost(ClientError):
    """The connection closed or was reset before the response was complete, or before a
    request that cannot be retried safely was answered."""


class TooManyRedirects(ClientError):
    """More redirects than `max_redirects`; the response holds the last one."""


# -- the response parser: bytes in, events out -------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Interim:
    """A 1xx response before the final one (100 Continue, 103 Early Hints...)."""

    status: int
    reason: str
    headers: list


@dataclasses.dataclass(frozen=True)
class Head:
    """The status line and header section of a final response."""

    status: int
    reason: str
    version: str
    headers: list


@dataclasses.dataclass(frozen=True)
class Data:
    """A piece of the response body (de-chunked)."""

    data: bytes


@dataclasses.dataclass(frozen=True)
class End:
    """The response is complete; `keep_alive` tells whether the connection may carry more."""

    trailers: list
    keep_alive: bool


_IDLE, _HEAD, _BODY, _CHUNK = range(4)  # _CHUNK: a chunk-size line read, no data after it yet
_BODILESS = frozenset((204, 304))  # plus every 1xx; RFC 9112 §6.3 rule 1
_HEAD_END = b"\r\n\r\n"


class ResponseParser:
    """Incremental HTTP/1.x response parser for one connection (RFC 9112 §6.3 framing).

    Call `expect(method)` as each request goes out, `feed(data)` as bytes arrive and
    `feed_eof()` when the peer closes; then take events with `next_event()` until it returns
    None. Bad bytes make `next_event()` raise ProtocolError once the events before them are
    taken; EOF inside a response makes it raise ConnectionLost. Nothing else is raised.
    """

    def __init__(self, max_header_bytes: int = 65536, max_header_count: int = 100):
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self._methods: collections.deque = collections.deque()  # of the responses to come
        self._events: collections.deque = collections.deque()
        self._failure: Optional[ClientError] = None
        self._finished = False  # a response ended the connection: later bytes are ignored
        self._tail = b""  # the last bytes fed, to find a head end split across feeds
        self._new_parser()

    # -- public -------------------------------------------------------------------------------

    def expect(self, method: str) -> None:
        """A request with `method` went out: its response comes after those expected before."""
        self._methods.append(method.upper())

    @property
    def expected(self) -> int:
        """How many responses are still awaited."""
        return len(self._methods)

    @property
    def in_progress(self) -> bool:
        """True while a response has begun and not ended."""
        return self._phase != _IDLE

    def feed(self, data) -> None:
        """Parse more bytes; never raises (a failure waits in `next_event`)."""
        if self._failure is not None or self._finished or not data:
            return
        data = bytes(data)
        try:
            while data and not self._finished:
                if self._direct:
                    data = self._take_direct(data)
                    continue
                step = self._step(data)
                if step >= len(data):  # the usual case: no copies of a large body
                    self._execute(data)
                    data = b""
                else:
                    self._execute(data[:step])
                    data = data[step:]
                if self._head_method and self._phase in (_BODY, _CHUNK):
                    self._end_bodiless()  # a HEAD response: its head is all of it
        except ClientError as ex:
            self._failure = ex

    def take_body(self, data: bytes) -> bool:
        """Count `data` as body bytes of a known length, as they are, when all of it belongs to
        the body and leaves some still to come, and no event waits: the usual receive of a
        large download, which the caller then hands on itself. False: `feed` it instead."""
        if len(data) >= self._direct or self._events or self._failure is not None:
            return False
        self._direct -= len(data)
        self._progress += 1
        return True

    def feed_eof(self) -> None:
        """The server closed the connection: a close-delimited body ends here; any other
        response in progress was cut short."""
        if self._failure is not None or self._finished:
            return
        if self._phase == _BODY and self._close_delimited:
            self._message_ended(keep_alive=False)
            self._finished = True
        elif self._phase != _IDLE:
            self._failure = ConnectionLost("the connection closed in the middle of a response")
        self._finished = True

    def next_event(self) -> Union[Interim, Head, Data, End, None]:
        """The next event, or None when more bytes are needed."""
        if self._events:
            return self._events.popleft()
        if self._failure is not None:
            raise self._failure
        return None

    # -- driving llhttp -----------------------------------------------------------------------

    def _new_parser(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._phase = _IDLE
        self._status = 0
        self._reason = b""
        self._headers: list = []
        self._trailers: list = []
        self._field_bytes = 0  # status line and complete fields of the open section, as reported
        self._carried = 0  # bytes of the open section fed in calls that did not complete it
        self._progress = 0  # events that open or close a section; unchanged: still the same
        self._close_delimited = False
        self._head_method = False
        self._direct = 0  # body bytes still to take without llhttp
        self._head_cut = False  # the bytes being fed end where a head ends

    def _execute(self, data: bytes) -> None:
        continuing = self._phase in (_HEAD, _CHUNK)
        progress = self._progress
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise ProtocolError(f"{self._status} Switching Protocols: the client does not "
                                f"upgrade connections") from None
        except httptools.HttpParserCallbackError as ex:
            cause = ex.__context__
            if isinstance(cause, ClientError):
                raise cause from None
            raise ProtocolError(f"malformed response: {ex}") from None
        except httptools.HttpParserError as ex:
            if self._finished:
                return  # bytes after a response that ended the connection: ignored
            raise ProtocolError(f"malformed response: {ex}") from None
        finally:
            self._tail = (self._tail + data[-3:])[-3:]
        if continuing and self._progress == progress and self._phase in (_HEAD, _CHUNK):
            # The whole of this feed belongs to a head (or trailer) section that is still
            # open: llhttp keeps a field line in its buffer until it ends, so count it here.
            self._carried += len(data)
            self._check_section()

    def _step(self, data: bytes) -> int:
        """How many bytes to hand llhttp at once. A head is fed alone, up to its blank line:
        httptools cannot tell llhttp that a response answers HEAD (llhttp would read the body
        its Content-Length announces), so such a head is then ended by us; and a body of known
        length is then taken without llhttp (`_take_direct`), which saves copying every byte.
        While a HEAD response waits behind others, bytes go one at a time so that none of it
        is fed along with the end of the response before (the Client never pipelines behind
        HEAD, so it never takes this slow path)."""
        methods = self._methods
        self._head_cut = False
        if "HEAD" in methods and methods[0] != "HEAD":
            return 1
        if self._phase not in (_IDLE, _HEAD):
            return len(data)
        found = self._head_end(data)
        if found < 0:
            return len(data)
        self._head_cut = True  # what llhttp gets now ends with the head: no body bytes
        return found

    def _head_end(self, data: bytes) -> int:
        """The bytes of `data` up to the end of the open head's blank line, or -1. Before a
        head begins, the last bytes fed belong to the response before and are not looked at."""
        tail = self._tail if self._phase == _HEAD else b""
        if tail:
            found = (tail + data[:3]).find(_HEAD_END)
            if found >= 0:
                return found + len(_HEAD_END) - len(tail)
        found = data.find(_HEAD_END)
        return -1 if found < 0 else found + len(_HEAD_END)

    def _take_direct(self, data: bytes) -> bytes:
        """Body bytes of a Content-Length response, as they are; the rest of `data`."""
        size = len(data)
        take = min(self._direct, size)
        self._events.append(Data(data if take == size else data[:take]))
        self._direct -= take
        self._progress += 1
        if not self._direct:
            self._end_bodiless()
        return data[take:] if take < size else b""

    def _end_bodiless(self) -> None:
        """End a response here (a HEAD response at its head, another after the body taken
        directly); a fresh llhttp takes the next response."""
        version = self._parser.get_http_version()
        connection = list_members(_field(self._headers, "connection"))
        if version == "1.1":
            keep_alive = "close" not in connection
        else:
            keep_alive = "keep-alive" in connection
        self._message_ended(keep_alive)
        if not self._finished:
            self._new_parser()

    # -- llhttp callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self._methods:
            raise ProtocolError("a response arrived with no request waiting for it")
        self._progress += 1
        self._phase = _HEAD
        self._head_method = False
        self._status = 0
        self._reason = b""
        self._headers, self._trailers = [], []
        self._field_bytes = self._carried = 0

    def on_status(self, reason: bytes) -> None:
        self._reason += reason
        self._field_bytes += len(reason) + 15  # "HTTP/1.1 200 " and CRLF
        self._check_section()

    def on_header(self, name: bytes, value: bytes) -> None:
        fields = self._headers if self._phase == _HEAD else self._trailers
        if len(fields) >= self.max_header_count:
            raise ProtocolError(f"more than {self.max_header_count} header fields")
        self._field_bytes += len(name) + len(value) + 4
        self._check_section()
        fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._status = status
        self._progress += 1
        headers = self._headers
        reason = self._reason.decode("latin-1")
        self._field_bytes = self._carried = 0
        if status < 200:
            self._events.append(Interim(status, reason, headers))
            self._phase = _BODY
            return
        self._head_method = self._methods[0] == "HEAD"
        bodiless = self._head_method or status in _BODILESS
        codings = list_members(_field(headers, "transfer-encoding", all_values=True))
        chunked = bool(codings) and codings[-1] == "chunked"
        # RFC 9112 §6.3: no chunked coding, and Content-Length absent or overridden by
        # Transfer-Encoding: the body runs until the server closes the connection.
        self._close_delimited = not bodiless and not chunked and (
            bool(codings) or _field(headers, "content-length") is None)
        self._events.append(Head(status, reason, self._parser.get_http_version(), headers))
        self._phase = _BODY
        # A single plain Content-Length (llhttp has checked it): the body is taken directly.
        lengths = field_values(headers, "content-length")
        if (self._head_cut and not bodiless and not codings and len(lengths) == 1
                and lengths[0].isdigit()):
            self._direct = int(lengths[0])

    def on_body(self, body: bytes) -> None:
        self._progress += 1
        self._phase = _BODY
        self._events.append(Data(body))

    def on_chunk_header(self) -> None:
        self._progress += 1
        self._phase = _CHUNK
        self._field_bytes = self._carried = 0

    def on_chunk_complete(self) -> None:
        self._progress += 1
        self._phase = _BODY

    def on_message_complete(self) -> None:
        self._progress += 1
        if self._status < 200:
            self._phase = _IDLE  # interim: the final response follows on the same request
            return
        self._message_ended(self._parser.should_keep_alive())

    def _message_ended(self, keep_alive: bool) -> None:
        self._methods.popleft()
        self._events.append(End(self._trailers, keep_alive))
        self._phase = _IDLE
        if not keep_alive:
            self._finished = True

    def _check_section(self) -> None:
        size = max(self._field_bytes, self._carried)
        if size > self.max_header_bytes:
            raise ProtocolError(f"response header section larger than {self.max_header_bytes} "
                                f"bytes")


def _field(headers: Sequence[tuple[str, str]], name: str, all_values: bool = False):
    values = field_values(headers, name)
    if all_values:
        return ",".join(values)
    return values[0] if values else None


# -- Server-Sent Events ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Event:
    """A dispatched Server-Sent Event. `id` is the stream's last event ID when it was
    dispatched; `retry` the reconnection time (ms) its block set, if any."""

    data: str
    event: str = "message"
    id: str = ""
    retry: Optional[int] = None


_LINE_END = re.compile(r"\r\n|\r|\n")


class EventParser:
    """The WHATWG "interpret an event stream" steps: UTF-8 bytes in, `Event`s out.

    Lines end at CRLF, CR or LF; one leading BOM is dropped; comments and unknown fields are
    ignored; an `id` with NUL is ignored; `retry` counts only when it is all ASCII digits.
    Lines and pending data are bounded by `max_event` characters (ProtocolError beyond).
    """

    def __init__(self, last_event_id: str = "", max_event: int = 1 << 20):
        self.last_event_id = last_event_id
        self.retry: Optional[int] = None  # the latest reconnection time, ms
        self.max_event = max_event
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._started = False
        self._line = ""
        self._after_cr = False  # the last line ended at a CR: a LF right after it is not a line
        self._data: list = []
        self._size = 0
        self._type = ""
        self._id = last_event_id
        self._block_retry: Optional[int] = None

    def feed(self, data: bytes) -> list:
        """Parse more of the stream; returns the events it completed, in order."""
        text = self._decoder.decode(data)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text:
            self._after_cr = False
            if text.startswith("\n"):
                text = text[1:]
        events: list = []
        buffer = self._line + text
        start = 0
        for match in _LINE_END.finditer(buffer):
            self._interpret(buffer[start:match.start()], events)
            start = match.end()
            if match.group() == "\r" and start == len(buffer):
                self._after_cr = True
        self._line = buffer[start:]
        if len(self._line) > self.max_event:
            raise ProtocolError(f"event stream line longer than {self.max_event} characters")
        return events

    def _interpret(self, line: str, events: list) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            return  # a comment
        name, colon, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._size += len(value) + 1
            if self._size > self.max_event:
                raise ProtocolError(f"event larger than {self.max_event} characters")
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry = self._block_retry = int(value)

    def _dispatch(self, events: list) -> None:
        self.last_event_id = self._id
        if self._data:
            events.append(Event("\n".join(self._data), self._type or "message",
                                self.last_event_id, self._block_retry))
        self._data, self._size, self._type, self._block_retry = [], 0, "", None


# -- responses --------------------------------------------------------------------------------
