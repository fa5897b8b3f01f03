"""Incremental server-side HTTP/1.x request parsing: bytes in, `Request` objects out.

`Requestant` wraps llhttp (through httptools) and adds the limits and strictness checks a
server needs. It never touches sockets, clocks or logs: the caller feeds it bytes and reads
completed requests from `requests`, or catches `RequestError` and answers with its status.
Those types, and the `Limits` it enforces, are request.py's; they are named here too.
"""

from __future__ import annotations

import collections
import re
import tempfile
from io import BytesIO
from typing import BinaryIO, Callable, Final, cast

import httptools

from .chunked import ChunkedDecoder, ChunkedError
from .request import Limits, Request, RequestError

__all__ = ["Limits", "Request", "RequestError", "Requestant"]

# Theory of operation
# -------------------
# llhttp scans the bytes and calls back: message_begin, url (in pieces), header (one call
# per field line, once httptools has the whole value), headers_complete, body (pieces),
# message_complete. A Requestant is in one phase at a time:
#
#   _IDLE --begin--> _HEAD --headers_complete--> _BODY --message_complete--> _IDLE
#                                       \--(chunked)--> _CHUNKED --last CRLF--> _IDLE
#
# A chunked body is not llhttp's: it refuses the whitespace RFC 9112 §7.1.1 allows in chunk
# extensions. So headers_complete of a chunked request stops llhttp (by raising; httptools
# has no pause), feed() finds where the head ended in the bytes (llhttp gives no offsets;
# `_head_end`), and a ChunkedDecoder reads the body and its trailers. The bytes after the
# body go to a fresh llhttp parser. Requests without a chunked body never meet the decoder.
# Limits are counted in the callbacks; the HEAD section is also counted from its bytes across
# feed() calls, because httptools keeps a field line in its own buffer until the line ends
# and would otherwise let "X: aaaa..." grow without bound. Both counts leave out the
# whitespace before a field value, as llhttp does, so that a head gets the same verdict
# however TCP splits it; only an endless run of it (past max_header_bytes) is counted.
# Bytes that llhttp must not see go to `_bypass`: a chunked body's, and all of them once
# the HTTP/1 stream ends (an error, an upgrade, a "Connection: close" request).

# Final, as the other tables below: the compiled build reads them as constants, not by name.
_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2
_CHUNKED: Final = 3

# Where the bytes fed so far leave an open head section (_section_bytes): in a field name or
# at a line's start, in the whitespace between a field's colon and its value, in the value.
_NAME: Final = 0
_LEADING: Final = 1
_VALUE: Final = 2
_OWS: Final = re.compile(rb"[ \t]*")

# llhttp rejects these itself; its reason string tells us which status to answer with.
# Anything else llhttp rejects is a 400 that quotes llhttp's (fixed, client-free) reason.
_LLHTTP_REASONS: dict[str, tuple[int, str]] = {
    "Invalid HTTP version": (505, "HTTP version not supported"),
    "Pause on PRI/Upgrade": (505, "HTTP/2 is not supported on this port"),
    "Invalid method for HTTP/x.x request": (501, "method not implemented"),
    "Invalid `Transfer-Encoding` header value": (501, "unsupported Transfer-Encoding"),
    "Request has invalid `Transfer-Encoding`": (501, "unsupported Transfer-Encoding"),
    "Transfer-Encoding can't be present with Content-Length":
        (400, "Content-Length and Transfer-Encoding together"),
    "Content-Length can't be present with Transfer-Encoding":
        (400, "Content-Length and Transfer-Encoding together"),
    "Duplicate Content-Length": (400, "duplicate Content-Length"),
    "Invalid character in Content-Length": (400, "invalid Content-Length"),
    "Empty Content-Length": (400, "invalid Content-Length"),
    "Content-Length overflow": (413, "request body too large"),
}
_AFTER_CLOSE: Final = "Data after `Connection: close`"

# RFC 9110 §5.6.2 tchar: the bytes a method token may contain.
_TCHAR: Final = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                          b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

# Header fields whose values decide framing or connection handling; inspected once per head.
_NOTED: Final = frozenset(("host", "content-length", "transfer-encoding", "expect",
                           "upgrade", "content-type"))

# Decoded methods and lower-cased field names of the common requests, looked up, not recomputed.
_METHODS: Final = {method.encode(): method for method in
                   ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE")}
_LOWER_NAMES: Final = {name: name.lower() for name in
                       ("Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language",
                        "Connection", "Content-Type", "Content-Length", "Cookie", "Referer")}

# The end of a request line (before its CRLF) naming a version we speak, and that version.
_VERSIONS: Final = {b" HTTP/1.1": "1.1", b" HTTP/1.0": "1.0"}

# Field names as sent -> as text: clients send the same few names again and again, and a name
# met before comes back as the same str, whose hash the look-ups by name then need not compute.
# Bounded in count and in length, so that odd names cannot pile up.
_field_names: Final[dict[bytes, str]] = {}
MAX_FIELD_NAMES: Final = 4096
MAX_FIELD_NAME: Final = 64

# Bytes of a request line besides method and target: SP, SP, "HTTP/1.1", CRLF.
_LINE_OVERHEAD: Final = 12


class _StopParser(Exception):
    """Raised in a callback to stop llhttp where it is: httptools has no pause."""


class Requestant:
    """Incremental HTTP/1.x request parser for one connection.

    feed() bytes as they arrive; completed requests queue in `requests` (oldest first);
    `current` is the request whose head is complete but whose body is still arriving.
    Requests completed before bad bytes stay queued when feed() raises RequestError.
    """

    __deletable__ = ["_parser"]  # close() lets go of it (a compiled build must be told)
    __slots__ = ("limits", "requests", "current", "leftover", "busy", "_parser", "_phase",
                 "_request", "_url_parts", "_method", "_fields", "_line_bytes", "_field_bytes",
                 "_sections", "_section_floor", "_section_at", "_leading", "_head_start",
                 "_line_start", "_head_tail", "_bypass", "_failure", "_received", "_decoder")

    def __init__(self, limits: Limits | None = None):
        self.limits = limits if limits is not None else Limits()
        self.requests: collections.deque[Request] = collections.deque()
        self.current: Request | None = None
        self.leftover = b""  # bytes after an upgrade request's head, for the next protocol
        self._parser = self._new_parser()
        self._phase = _IDLE
        # True while a request has begun but its head is not complete (for header deadlines):
        # the phase is _HEAD, kept as a flag because the steward asks after every request.
        self.busy = False
        self._request: Request | None = None
        self._url_parts: list[bytes] = []
        self._method = b""  # the method's bytes, once llhttp has accepted them
        self._fields: list[tuple[str, str]] = []
        self._line_bytes = 0    # request line so far: method, target, SP SP HTTP/x.y CRLF
        self._field_bytes = 0   # field lines of the current section, as reported
        self._sections = 0      # heads begun, to spot one spanning feeds
        self._section_floor = 0  # the least the callbacks will count for an open section
        self._section_at = _NAME  # where the open section's last byte fed lies
        self._leading = 0  # whitespace so far before the open section's last field value
        self._head_start: bytes | None = None  # bytes of a head whose method is unchecked
        self._line_start: bytes | None = None  # the bytes fed as the current head began them
        self._head_tail = b""  # the last bytes fed while a head was open (_head_end)
        # Takes the bytes llhttp must not see; returns those after a chunked body, for llhttp.
        self._bypass: Callable[[bytes], bytes | None] | None = None
        self._failure: BaseException | None = None
        self._received = 0  # body bytes llhttp has handed over, all requests together
        self._decoder: ChunkedDecoder | None = None

    # ---- public API ----

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Parse more bytes. May complete zero or more requests (pipelining).

        Raises RequestError on bad input; after an error the Requestant is dead and
        every further feed() raises the same error. Any bytes-like object is accepted.
        """
        if type(data) is not bytes:
            data = bytes(data)  # we may keep a reference; a caller's buffer may change
        if self._bypass is not None:
            rest = self._bypass(data)
            if rest is None:
                return
            data = rest  # what followed a chunked body
        while data:
            phase = self._phase
            # The bytes of a head whose method llhttp has not accepted yet (see
            # _method_refused), kept here rather than in a call: this runs for every feed.
            if phase == _IDLE:
                self._head_start = self._line_start = data
            elif self._head_start is not None:
                self._head_start += data
            sections, line_bytes = self._sections, self._line_bytes
            line_unsure = phase == _HEAD and not self._fields  # may end in this feed
            received = self._received
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                self._switch_protocols(data, upgrade.args[0])
                return
            except httptools.HttpParserError as exc:
                if self._phase != _CHUNKED:
                    self._parser_failed(exc)
                    return
                # A chunked head ended in `data`: its body is the decoder's.
                rest = self._start_chunked(
                    data[self._head_end(data, phase, self._sections - sections, received):])
                if rest is None:
                    return
                data = rest
                continue
            if self._phase == _HEAD:
                self._count_open_section(data, self._sections - sections, phase == _IDLE,
                                         line_bytes, line_unsure)
                self._head_tail = (self._head_tail + data[-3:])[-3:]
            return

    def chunk_data_left(self) -> int:
        """Bytes of a chunked body's current chunk data still to come: sure to be body, so a
        feed may be that much longer and still end no further than the next chunk line."""
        decoder = self._decoder
        return 0 if decoder is None else decoder.data_left

    def close(self) -> None:
        """Release the bodies (maybe temporary files) of unfinished and queued requests.

        Requests already popped from `requests` belong to the caller and stay open.
        """
        requests = self.requests
        if requests:
            for request in requests:
                request.body.close()
            requests.clear()
        if self._failure is None:  # a dead Requestant already dropped its unfinished one
            self._die(_CLOSED, _refuse_closed)  # no closure made: this runs for every connection
        # The parser holds our callbacks, so we and it make a cycle: let go of it (nothing
        # parses after close), and a closed Requestant is freed as soon as it is dropped
        # instead of waiting for the cycle collector, which a busy server then runs less.
        try:
            del self._parser
        except AttributeError:  # closed before
            pass

    # ---- llhttp callbacks (called by httptools during feed_data) ----

    def on_message_begin(self) -> None:
        self._phase = _HEAD
        self.busy = True
        self._sections += 1
        self._url_parts = []
        self._fields = []
        self._line_bytes = _LINE_OVERHEAD
        self._field_bytes = 0

    def on_url(self, piece: bytes) -> None:
        if not self._url_parts:  # llhttp has just accepted the method
            self._head_start = None
            self._method = self._parser.get_method()  # kept: each call makes a new bytes
            self._line_bytes += len(self._method)
        self._url_parts.append(piece)
        self._line_bytes += len(piece)
        if self._line_bytes > self.limits.max_request_line:
            # Counted per url piece, so an endless target is cut off as soon as it passes
            # the limit instead of after it ends.
            self._fail(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp drops leading OWS but keeps trailing OWS (RFC 9112 §5.1: strip both).
        fields = self._fields
        text = _field_names.get(name)
        if text is None:
            text = _field_name(name)
        fields.append((text, value.rstrip(b" \t").decode("latin-1")))
        self._field_bytes += len(name) + len(value) + 4  # as if sent "name: value\r\n"
        limits = self.limits
        if self._field_bytes > limits.max_header_bytes or len(fields) > limits.max_header_count:
            self._fail(431, "request header section too large")

    def on_headers_complete(self) -> None:
        """Validate the complete head and make its Request (RFC 9112 §2-§7), the `current` one.
        (One method, not a callback calling a builder: a call saved per request.)"""
        parser = self._parser
        # httptools makes the version's text with str.format, which costs more than the rest of
        # the head's checks; a head that began a feed has it in view before its first CRLF.
        line = self._line_start
        end = line.find(b"\r\n") if line is not None else -1
        version = _VERSIONS.get(line[end - 9:end]) if line is not None and end >= 9 else None
        if version is None:
            version = parser.get_http_version()
            if version != "1.1" and version != "1.0":
                if version[:2] != "1.":  # we speak only HTTP/1.x (RFC 9110 §15.6.6)
                    self._fail(505, "HTTP version not supported")
                version = "1.1"  # a later 1.x: served as the highest minor we speak (§2.3)
        raw_method = self._method
        method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        if method == "CONNECT":
            self._fail(501, "CONNECT not implemented: this is not a proxy")
        parts = self._url_parts
        target = (parts[0] if len(parts) == 1 else b"".join(parts)).decode("latin-1")
        if target[:1] == "/" and "#" not in target:  # origin-form, the usual case
            path, _, query = target.partition("?")
        else:
            path, query = self._split_target(target, method)
        noted: dict[str, list[str]] = {}
        for name, value in self._fields:
            key = _LOWER_NAMES.get(name) or name.lower()
            if key in _NOTED:
                if key in noted:
                    noted[key].append(value)
                else:
                    noted[key] = [value]
        hosts = noted.get("host")
        if hosts is None or len(hosts) > 1:
            self._check_host(version, hosts)
        chunked, length, upgrade, expect = False, None, None, False
        if len(noted) > 1 or hosts is None:  # more than Host: framing, expectations, upgrade
            if len(noted.get("content-type", ())) > 1:
                # RFC 9110 §5.3, §8.3: one value only; a proxy may have acted on the other one.
                self._fail(400, "more than one Content-Type header")
            chunked = self._check_transfer_encoding(version, noted.get("transfer-encoding"))
            length = self._check_content_length(noted.get("content-length"))
            if "upgrade" in noted and parser.should_upgrade():
                upgrade = noted["upgrade"][0]
            expect = self._check_expectation(version, noted.get("expect"))
        body = (BytesIO() if length is None and not chunked  # no body: the usual case
                else self._new_body(chunked, length))
        self._request = self.current = Request(
            method, target, path, query, version, self._fields, [], body, 0, length, chunked,
            parser.should_keep_alive(), expect, upgrade)
        self._phase = _BODY
        self.busy = False
        if chunked and upgrade is None:  # an upgrade leaves the body unread
            self._phase = _CHUNKED
            raise _StopParser  # llhttp must not read the chunked body; feed() takes over

    def on_body(self, piece: bytes) -> None:
        # Content-Length was checked against max_body up front: the body cannot exceed it.
        size = len(piece)
        self._received += size
        request: Request = self._request  # type: ignore[assignment]  # llhttp is in a body
        request.body.write(piece)
        request.body_size += size

    def on_message_complete(self) -> None:
        request: Request = self._request  # type: ignore[assignment]  # a message just ended
        request.body.seek(0)
        request.complete = True
        self.requests.append(request)
        self._request = self.current = None
        self._phase = _IDLE
        self._head_start = self._line_start = None  # where the next head starts is unknown

    # ---- head checks ----

    def _new_body(self, chunked: bool, length: int | None) -> BinaryIO:
        """Memory for small bodies; a file past `spill_threshold` for large or unknown ones."""
        threshold = self.limits.spill_threshold
        if chunked or (length is not None and length > threshold):
            # A binary file, which typeshed does not declare a BinaryIO.
            return cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=threshold))
        return BytesIO()

    def _split_target(self, target: str, method: str) -> tuple[str, str]:
        """Return the raw (path, query) of a request-target (RFC 9112 §3.2)."""
        if "#" in target:
            # A fragment is never part of a request-target (RFC 9110 §7.1).
            self._fail(400, "fragment in request-target")
        if target[:1] == "/":  # origin-form, the usual case
            path, _, query = target.partition("?")
            return path, query
        if target == "*":
            # Asterisk-form exists only for server-wide OPTIONS (RFC 9112 §3.2.4).
            if method != "OPTIONS":
                self._fail(400, "asterisk-form request-target only allowed with OPTIONS")
            return "*", ""
        _, sep, rest = target.partition("://")
        if not sep:  # llhttp lets nothing else through, but do not rely on it
            self._fail(400, "malformed request-target")
        # Absolute-form (RFC 9112 §3.2.2): the path starts after the authority.
        cut = len(rest)
        for mark in "/?":
            at = rest.find(mark)
            if 0 <= at < cut:
                cut = at
        path, _, query = rest[cut:].partition("?")
        return path or ("*" if method == "OPTIONS" else "/"), query

    def _check_expectation(self, version: str, values: list[str] | None) -> bool:
        """Whether the request expects 100-continue; 417 for any other expectation, which
        this server cannot meet (RFC 9110 §10.1.1)."""
        if values is None:
            return False
        members = [member.strip().lower() for value in values for member in value.split(",")]
        if any(member != "100-continue" for member in members if member):
            self._fail(417, f"unsupported expectation {', '.join(values)!r}")
        return version == "1.1"  # a 100-continue expectation in HTTP/1.0 is ignored

    def _check_host(self, version: str, hosts: list[str] | None) -> None:
        # RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, and for any request
        # with several Host lines (which one names the target is ambiguous).
        if hosts is None:
            if version == "1.1":
                self._fail(400, "missing Host header")
        elif len(hosts) > 1:
            self._fail(400, "more than one Host header")

    def _check_transfer_encoding(self, version: str, codings: list[str] | None) -> bool:
        """Return True for a chunked body; refuse every other Transfer-Encoding."""
        if codings is None:
            return False
        if version == "1.0":
            # HTTP/1.0 has no chunked framing; a 1.0 message with it is a smuggling
            # vector between hops that disagree on framing (RFC 9112 §6.1).
            self._fail(400, "Transfer-Encoding in an HTTP/1.0 request")
        if len(codings) != 1 or codings[0].lower() != "chunked":
            # We decode no codings but chunked, applied exactly once (RFC 9112 §6.1);
            # llhttp would accept "gzip, chunked" and leave the gzip to the app.
            self._fail(501, "unsupported Transfer-Encoding")
        return True

    def _check_content_length(self, values: list[str] | None) -> int | None:
        if values is None:
            return None
        # llhttp already refused duplicates, lists, signs and non-digits (RFC 9112 §6.3),
        # so exactly one all-digit value is left.
        length = int(values[0])
        if length > self.limits.max_body:
            self._fail(413, "request body too large")
        return length

    # ---- chunked bodies ----

    def _head_end(self, data: bytes, phase: int, begun: int, received: int) -> int:
        """Where in `data` the head that llhttp has just completed ends.

        llhttp gives no offsets, so they are found again from what it refused and reported:
        a head holds no CR or LF but its line ends, so it ends at its first empty line (and
        starts after any empty lines before it); a request completed earlier in this feed had
        exactly its Content-Length of body. `phase` is the phase when the feed began, `begun`
        how many heads began in it, `received` the body bytes handed over before it.
        """
        count = begun - 1 if phase == _IDLE else begun  # requests completed before this head
        earlier = [self.requests[index] for index in range(len(self.requests) - count,
                                                           len(self.requests))]
        position = 0
        if phase == _HEAD:  # the feed began inside a head: the first line end completes it
            tail = self._head_tail
            position = (tail + data).index(b"\r\n\r\n") + 4 - len(tail)
            self._head_tail = b""
            if not earlier:
                return position
            position += earlier.pop(0).content_length or 0
        elif phase == _BODY:  # inside a Content-Length body: its rest is what the others lack
            earlier.pop(0)
            position = self._received - received - sum(
                request.content_length or 0 for request in earlier)
        for request in earlier + [None]:
            while data[position:position + 1] in (b"\r", b"\n"):  # llhttp skips empty lines
                position += 1
            position = data.index(b"\r\n\r\n", position) + 4
            if request is not None:
                position += request.content_length or 0
        return position

    def _start_chunked(self, data: bytes) -> bytes | None:
        """Hand the bytes after a chunked head to a new ChunkedDecoder."""
        request: Request = self._request  # type: ignore[assignment]  # its head just ended
        limits = self.limits
        self._decoder = ChunkedDecoder(request.body.write, request.trailers, limits.max_body,
                                       limits.max_header_bytes, limits.max_header_count)
        self._parser = self._new_parser()  # the stopped one cannot go on
        self._bypass = self._feed_chunked
        return self._feed_chunked(data)

    def _feed_chunked(self, data: bytes) -> bytes | None:
        """Decode body bytes; once the body ends, finish the request and return what follows
        it (for llhttp), or None when nothing does or the HTTP/1 stream ended with it."""
        decoder: ChunkedDecoder = self._decoder  # type: ignore[assignment]  # in a body
        request: Request = self._request  # type: ignore[assignment]
        try:
            end = decoder.feed(data)
        except ChunkedError as error:
            raise self._die(RequestError(error.status, error.message)) from None
        request.body_size = decoder.size
        if end < 0:
            return None
        self._decoder = self._bypass = None
        self.on_message_complete()
        rest = data[end:]
        if not request.keep_alive:
            # RFC 9112 §9.6: nothing after a "close" request is processed (as llhttp does).
            self._bypass = _discard
            return None
        return rest

    def _new_parser(self) -> httptools.HttpRequestParser:
        parser = httptools.HttpRequestParser(self)
        # Any version number gets through llhttp, so that HTTP/1.x with x > 1 is served as
        # HTTP/1.1 (RFC 9112 §2.3); on_headers_complete answers 505 for other majors.
        parser.set_dangerous_leniencies(lenient_version=True)
        return parser

    # ---- limits that span feeds ----

    def _count_open_section(self, data: bytes, begun: int, idle: bool, line_bytes: int,
                            line_unsure: bool = False) -> None:
        """Bound a head still open at the end of a feed.

        httptools buffers a field line until the line ends, so the callbacks alone cannot
        see a never-ending one. `_section_floor` is a lower bound of what the callbacks will
        count for the section, from the bytes that certainly belong to it; the request line
        is left out, being limited on its own. `line_unsure`: the request line may have
        ended in this feed, so its fixed part (spaces, version, CRLF), counted when the head
        began, may lie here.
        """
        if begun == 0:  # the whole feed fell inside the section
            line_here = self._line_bytes - line_bytes + (_LINE_OVERHEAD if line_unsure else 0)
            self._section_floor += self._section_bytes(data, max(0, line_here))
        elif begun == 1 and idle and self._phase == _HEAD:  # it began at the feed's start
            self._section_at = _NAME
            # Below zero while the request line is open: the part of its fixed end (counted
            # in _line_bytes) that has not come yet, which the next feed's line_here claims.
            self._section_floor = (self._section_bytes(data, self._line_bytes)
                               + min(0, len(data) - self._line_bytes))
        else:  # it began mid-feed, at an offset llhttp does not tell: trust the callbacks
            self._section_floor = self._field_bytes
            # The last line's state is unknown: take it as leading whitespace, which counts
            # the least of the next bytes (a lower bound stays one).
            self._section_at = _LEADING
            self._leading = 0
        # Less one byte: the feed may end with the CR of the blank line that closes the
        # section, which a complete section does not count.
        if self._section_floor - 1 > self.limits.max_header_bytes:
            raise self._die(RequestError(431, "request header section too large"))

    def _section_bytes(self, data: bytes, start: int) -> int:
        """What of data[start:], part of an open head section, the callbacks will count at
        least: its bytes less the whitespace between each field's colon and its value, which
        llhttp drops; but a run of that whitespace past max_header_bytes counts, or an
        endless one would never be cut off. Finds run in C; a section has at most
        max_header_count lines."""
        size = len(data)
        position = start
        counted = 0
        at = self._section_at
        allowed = self.limits.max_header_bytes
        while position < size:
            if at == _LEADING:
                run = _OWS.match(data, position)  # always matches, if only nothing
                end = run.end() if run is not None else position
                before, self._leading = self._leading, self._leading + end - position
                counted += max(0, self._leading - allowed) - max(0, before - allowed)
                position = end
                if position < size:
                    at = _VALUE
                continue
            end = data.find(b"\n", position)
            line_end = size if end == -1 else end + 1
            if at == _NAME:
                colon = data.find(b":", position, line_end)
                if colon != -1:  # the name and its colon; the value's whitespace follows
                    counted += colon + 1 - position
                    position = colon + 1
                    at = _LEADING
                    self._leading = 0
                    continue
            counted += line_end - position  # the rest of a line, its end included
            position = line_end
            at = _NAME if end != -1 else at
        self._section_at = at
        return counted

    # ---- failures and endings ----

    def _fail(self, status: int, message: str) -> None:
        """Raise from inside a callback; feed() then finds the error in `_failure`."""
        self._failure = RequestError(status, message)
        raise self._failure

    def _parser_failed(self, exc: httptools.HttpParserError) -> None:
        """Turn llhttp's refusal (or one of our callback errors) into the right ending."""
        if self._failure is not None:  # one of our checks, raised inside a callback
            raise self._die(self._failure)
        if isinstance(exc, httptools.HttpParserCallbackError) and exc.__context__:
            raise self._die(exc.__context__)  # a bug of ours, or an OSError from a body file
        reason = str(exc)
        if reason == _AFTER_CLOSE:
            # RFC 9112 §9.6: after a "close" request the server must not process further
            # requests on the connection; they are dropped, which is not an error.
            self._bypass = _discard
        elif isinstance(exc, httptools.HttpParserInvalidMethodError):
            self._method_refused()
        elif isinstance(exc, httptools.HttpParserInvalidURLError):
            raise self._die(RequestError(400, "malformed request-target"))
        else:
            status, message = _LLHTTP_REASONS.get(reason, (400, f"malformed request ({reason})"))
            raise self._die(RequestError(status, message))

    def _method_refused(self) -> None:
        """llhttp refused the method. It gives no byte offsets, yet telling an unknown method
        (501) from garbage (400) needs the method's bytes: feed() keeps them in `_head_start`
        while the head began at a feed boundary; once a request completes mid-feed the next
        head's start is not known."""
        if self._head_start is None:  # the head's start is unknown: call it malformed
            raise self._die(RequestError(400, "malformed request method"))
        self._bypass = self._judge_method
        self._judge_method(b"")

    def _judge_method(self, data: bytes) -> None:
        """Answer 501 for a method token llhttp does not know, 400 for a non-token.

        While the token is still arriving the verdict waits, so the answer does not depend
        on how the bytes were split.
        """
        start = self._head_start = (self._head_start or b"") + data
        head = start.lstrip(b"\r\n")  # llhttp skips empty lines first
        # Only the first max_request_line bytes are judged: a token that runs past the limit is
        # 414 whatever follows it, so the verdict cannot depend on how the bytes were split.
        limit = self.limits.max_request_line
        for index, byte in enumerate(head[:limit + 1]):
            if byte not in _TCHAR:
                if index and byte == 0x20:  # RFC 9112 §3: method SP request-target
                    raise self._die(RequestError(501, "method not implemented"))
                raise self._die(RequestError(400, "malformed request method"))
        if len(head) > limit:
            raise self._die(RequestError(414, "request line too long"))

    def _switch_protocols(self, data: bytes, offset: int) -> None:
        # llhttp stops after an upgrade request's head; the rest belongs to the next
        # protocol (or, if the server declines the upgrade, to a fresh Requestant).
        self.leftover = bytes(data[offset:])
        self._bypass = self._keep_leftover

    def _keep_leftover(self, data: bytes) -> None:
        self.leftover += data

    def _die(self, error: BaseException,
             refuse: Callable[[bytes], None] | None = None) -> BaseException:
        """Make every later feed() raise `error` (or call `refuse`, which raises), drop the
        unfinished request, return `error` for the caller to raise."""
        self._failure = error
        if self._request is not None and not self._request.complete:
            self._request.body.close()
        self._request = self.current = self._decoder = None
        self._bypass = refuse if refuse is not None else _raiser(error)
        return error


def _raiser(error: BaseException) -> Callable[[bytes], None]:
    """A bypass that refuses every later feed() with `error`."""
    def refuse(data: bytes) -> None:
        raise error.with_traceback(None)
    return refuse


def _field_name(name: bytes) -> str:
    """A field name as text, remembered (bounded) for the next request that sends it."""
    text = name.decode("latin-1")
    if len(name) <= MAX_FIELD_NAME and len(_field_names) < MAX_FIELD_NAMES:
        _field_names[name] = text
    return text


_CLOSED = ValueError("feed() on a closed Requestant")  # what `_failure` holds after close()


def _refuse_closed(data: bytes) -> None:
    raise ValueError("feed() on a closed Requestant")


def _discard(data: bytes) -> None:
    """Ignore bytes that follow a request the client marked as its last."""
