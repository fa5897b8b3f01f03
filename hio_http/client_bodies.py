"""Bodies that flow through the client without being held whole: `RequestBody` (bytes, an
iterable of chunks or a binary file, pulled only as the socket takes it, framed by
Content-Length or chunked with trailers) and `ResponseStream` (the arrived, untaken part of a
streamed response, decoded from gzip or deflate only as it is taken).

No sockets here: the session hands in a connection's `send` and `pending`. Nothing grows past
the high-water mark the caller gives, however fast bytes come or however much they inflate.
"""

from __future__ import annotations

import collections
import io
import os
import stat
from typing import Any, Callable, Iterable, Optional, Union

from .client_parsing import ClientError, ProtocolError
from .compression import DecodeError, Inflater
from .grammar import check_field

__all__ = ["RequestBody", "ResponseStream", "BodyError", "FileTarget", "Source"]

Source = Union[bytes, bytearray, memoryview, str, Iterable, io.IOBase, None]

# Fields a trailer section must not carry: framing, routing and the trailer list itself
# (RFC 9110 §6.5.1). A server would ignore them at best.
FORBIDDEN_TRAILERS = frozenset({"content-length", "transfer-encoding", "host", "trailer",
                                "content-encoding", "content-type", "content-range",
                                "authorization", "expect", "connection", "te"})


class BodyError(ClientError):
    """The request body could not be sent as framed: its source raised, yielded something
    other than bytes, or ended before (or ran past) its known length."""


class RequestBody:
    """What a request sends, and how much of it has been pulled.

    `bytes` (or str, sent as UTF-8) goes out whole with the head. An iterable yields bytes-like
    chunks, where b"" means "nothing yet, ask again later"; a binary file is read in blocks.
    A regular file (or any seekable one) has a known length, so it is framed by
    Content-Length and can be sent again after a reconnect (rewound); an iterable or a pipe
    is chunked, with `trailers` if given, and can be sent only once.
    """

    def __init__(self, source: Source = b"", trailers: Iterable = ()):
        self.trailers = [(str(name), str(value)) for name, value in trailers]
        self.whole: Optional[bytes] = None  # the body, when it was given as bytes
        self.length: Optional[int] = None
        self.started = False  # a byte (or a "not yet") has been asked of the source
        self._file: Any = None
        self._start = 0  # where the file was positioned: a resend starts there again
        self.fileno: Optional[int] = None  # a regular file's descriptor: sent by sendfile
        self._iterator: Any = None
        self._source = source
        if source is None:
            source = b""
        if isinstance(source, str):
            source = source.encode("utf-8")
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.whole = bytes(source)
            self.length = len(self.whole)
        elif hasattr(source, "read"):
            self._file = source
            self.length, self._start = _file_span(source)
            if self.length is not None and not trailers:
                self.fileno = _regular_fileno(source)
        elif isinstance(source, Iterable):
            self._iterator = iter(source)
        else:
            raise TypeError(f"a request body is bytes, an iterable of bytes or a binary file, "
                            f"not {type(source).__name__}")
        if self.trailers:
            _check_trailers(self.trailers)
            if self.whole is not None and not self.whole:
                raise ValueError("trailers need a body (they follow a chunked one)")

    @property
    def chunked(self) -> bool:
        """Framed by chunked coding: the length is unknown, or trailers follow."""
        return self.whole is None and (self.length is None or bool(self.trailers))

    @property
    def empty(self) -> bool:
        return self.length == 0 and not self.trailers

    @property
    def streamed(self) -> bool:
        """Sent piece by piece after the head, rather than with it."""
        return self.whole is None or bool(self.trailers)

    @property
    def replayable(self) -> bool:
        """Can be sent again: bytes, a file of known length, or a source not yet begun."""
        return (self.whole is not None or not self.started
                or (self._file is not None and self.length is not None))

    def rewind(self) -> bool:
        """Make the body ready to be sent again; False when it cannot be (an iterable already
        begun, a pipe)."""
        if not self.started or self.whole is not None:
            return True
        if self._file is not None and self.length is not None:
            try:
                self._file.seek(self._start)
            except (OSError, ValueError):
                return False
            self.started = False
            return True
        return False

    def pull(self, size: int) -> Optional[bytes]:
        """The next piece (at most about `size` bytes from a file): b"" for "not yet", None at
        the end. Raises BodyError for a source that fails."""
        self.started = True
        if self.whole is not None:
            return None  # sent with the head
        try:
            if self._file is not None:
                piece = self._file.read(size)
                if piece is None:  # a nonblocking file with nothing ready
                    return b""
                return bytes(piece) if piece else None
            try:
                piece = next(self._iterator)
            except StopIteration:
                return None
        except BodyError:
            raise
        except Exception as ex:
            error = BodyError(f"the request body failed: {ex!r}")
            error.__cause__ = ex
            raise error from ex
        if not isinstance(piece, (bytes, bytearray, memoryview)):
            raise BodyError(f"a request body chunk must be bytes-like, not "
                            f"{type(piece).__name__}")
        return bytes(piece)

    def close(self) -> None:
        """Close the iterable (a generator's `finally` runs); files stay the caller's."""
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()


class BodyWriter:
    """Sends a RequestBody's pieces framed as its head announced, while the connection's
    send buffer stays under the high-water mark."""

    def __init__(self, body: RequestBody):
        self.body = body
        self.sent = 0  # body bytes, without framing

    def write(self, connection, high_water: int, budget: int) -> bool:
        """Pull and send on `connection` (a net.Connection) until its send buffer holds
        `high_water` bytes, the source says "not yet", or `budget` bytes went out this turn;
        True once the body is complete (its end sent too)."""
        body = self.body
        if body.fileno is not None and not connection.tls:
            return self._write_file(connection, high_water, budget)
        moved = 0
        while not connection.closed and connection.pending < high_water and moved < budget:
            piece = body.pull(high_water)
            if piece is None:
                connection.send(self._end())
                return True
            if not piece:
                return False
            moved += len(piece)
            connection.send_parts(self._frame(piece))
        return False

    def _write_file(self, connection, span: int, budget: int) -> bool:
        """A regular file of known length goes by sendfile, `span` bytes at a time, each
        queued once the one before has left: never read into memory, one copy fewer."""
        body = self.body
        body.started = True
        assert body.fileno is not None and body.length is not None
        moved = 0
        while self.sent < body.length:
            if connection.closed or connection.backlogged or moved >= budget:
                return False
            count = min(span, body.length - self.sent)
            connection.sendfile(body.fileno, body._start + self.sent, count)
            self.sent += count
            moved += count
        body._file.seek(body._start + body.length)  # where reading it would have left it
        return True

    def _frame(self, piece: bytes) -> tuple:
        """The piece with its framing, as parts sent together (one sendmsg): joining them
        would copy every byte of the body once more, sending them apart costs three calls."""
        self.sent += len(piece)
        length = self.body.length
        if self.body.chunked:
            return (b"%x\r\n" % len(piece), piece, b"\r\n")
        if length is not None and self.sent > length:
            raise BodyError(f"the request body ran past its length of {length} bytes")
        return (piece,)

    def _end(self) -> bytes:
        body = self.body
        if not body.chunked:
            if body.length is not None and self.sent < body.length:
                raise BodyError(f"the request body ended after {self.sent} of its "
                                f"{body.length} bytes")
            return b""
        fields = "".join(f"{name}: {value}\r\n" for name, value in body.trailers)
        return b"0\r\n" + fields.encode("latin-1") + b"\r\n"


class ResponseStream:
    """A streamed response body: what arrived and was not yet taken, bounded by `high_water`.

    `feed(data)` stores arriving bytes (compressed ones stay compressed until taken); `full`
    tells the session to stop reading the socket; `take()` returns what is ready, inflating at
    most `high_water` bytes at a time; with an `on_data` callback every piece is handed over as
    it arrives instead, and nothing is kept. A coded body that inflates past `max_decoded`
    bytes (None: no limit) is a ProtocolError: memory stays bounded either way, but a gzip
    bomb would otherwise cost the consumer a thousand bytes of work or disk for each one sent.
    """

    def __init__(self, high_water: int, on_data: Optional[Callable[[bytes], None]] = None,
                 max_decoded: Optional[int] = None):
        self.high_water = high_water
        self.on_data = on_data
        self.max_decoded = max_decoded
        self.inflater: Optional[Inflater] = None
        self.received = 0  # body bytes as they came off the wire
        self.delivered = 0  # bytes taken or handed to on_data, decoded
        self._chunks: collections.deque = collections.deque()
        self._size = 0
        self._ended = False

    @property
    def buffered(self) -> int:
        """Bytes held for the consumer: arrived and untaken (compressed ones as they came)."""
        return self._size + (self.inflater.buffered if self.inflater is not None else 0)

    @property
    def full(self) -> bool:  # plain bodies, the usual case, without the `buffered` call
        return (self._size if self.inflater is None else self.buffered) >= self.high_water

    def decode(self, coding: str) -> None:
        self.inflater = Inflater(coding)

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.inflater is not None:
            self.inflater.feed(data)
        elif self.on_data is not None:  # a plain piece goes to the consumer as it is
            if data:
                self._give(data)
            return
        elif data:
            self._chunks.append(data)
            self._size += len(data)
        if self.on_data is not None:
            self._hand_over()

    def end(self) -> None:
        """The last byte has arrived; a coded body is checked as its end is inflated."""
        self._ended = True
        if self.on_data is not None:
            self._hand_over()
        elif self.inflater is not None and not self.inflater.pending:
            self._check_end()

    def take(self) -> bytes:
        """Everything ready now (at most `high_water` bytes of inflated output); b"" when
        nothing new has arrived. Raises ProtocolError for a corrupt coded body."""
        if self._chunks:
            data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
            self._chunks.clear()
            self._size = 0
        else:
            data = b""
        if self.inflater is not None and self.inflater.pending:
            data += self._inflate(self.high_water)
            if self._ended and not self.inflater.pending:
                self._check_end()
        self.delivered += len(data)
        return data

    def _hand_over(self) -> None:
        """Give on_data every ready piece, in pieces of at most `high_water` bytes."""
        while self._chunks:
            piece = self._chunks.popleft()
            self._size -= len(piece)
            self._give(piece)
        if self.inflater is not None:
            while self.inflater.pending:
                piece = self._inflate(self.high_water)
                if not piece:
                    break
                self._give(piece)
            if self._ended and not self.inflater.pending:
                self._check_end()

    def _give(self, piece: bytes) -> None:
        self.delivered += len(piece)
        assert self.on_data is not None
        try:
            self.on_data(piece)
        except Exception as ex:  # the consumer's fault ends this response, not the loop
            error = ClientError(f"on_data failed: {ex!r}")
            error.__cause__ = ex
            raise error from ex

    def _inflate(self, limit: int) -> bytes:
        """At most `limit` more decoded bytes (`delivered` does not count them yet)."""
        assert self.inflater is not None
        bound = self.max_decoded
        if bound is not None:  # one byte past the bound is enough to know it is passed
            limit = min(limit, bound - self.delivered + 1)
        try:
            piece = self.inflater.read(limit)
        except DecodeError as ex:
            raise ProtocolError(str(ex)) from None
        if bound is not None and self.delivered + len(piece) > bound:
            raise ProtocolError(f"streamed response body larger than max_decoded ({bound} "
                                f"bytes) once decoded")
        return piece

    def _check_end(self) -> None:
        assert self.inflater is not None
        try:
            self.inflater.end()
        except DecodeError as ex:
            raise ProtocolError(str(ex)) from None


class FileTarget:
    """Where a download goes: `path + ".part"` while it arrives, renamed to `path` once it
    is complete and wanted, removed otherwise, so a half-written file never has the name."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.partial = self.path + ".part"
        self.file = open(self.partial, "wb")

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def settle(self, keep: bool) -> None:
        self.file.close()
        if keep:
            os.replace(self.partial, self.path)
        else:
            self.discard()

    def discard(self) -> None:
        self.file.close()
        try:
            os.unlink(self.partial)
        except FileNotFoundError:
            pass


def _file_span(file) -> tuple[Optional[int], int]:
    """(bytes left, current position) of a seekable file; (None, 0) for a pipe or socket."""
    try:
        position = file.tell()
        fileno = file.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        fileno = None
        try:
            position = file.tell()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None, 0
    if fileno is not None:
        info = os.fstat(fileno)
        if not stat.S_ISREG(info.st_mode):
            return None, 0
        return max(0, info.st_size - position), position
    try:  # an in-memory file (BytesIO): its end is found by seeking
        end = file.seek(0, io.SEEK_END)
        file.seek(position)
    except (OSError, ValueError, io.UnsupportedOperation):
        return None, 0
    return max(0, end - position), position


def _regular_fileno(file) -> Optional[int]:
    """The descriptor of a regular file on disk (not a pipe, socket or in-memory file)."""
    try:
        fileno = file.fileno()
        return fileno if stat.S_ISREG(os.fstat(fileno).st_mode) else None
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _check_trailers(trailers: list) -> None:
    for name, value in trailers:
        if name.lower() in FORBIDDEN_TRAILERS:
            raise ValueError(f"{name} may not be sent as a trailer field")
        check_field(name, value, "trailer")
