"""Decoding of one chunked request body (RFC 9112 §7.1): chunk lines, chunk data, trailer section.

Pure: bytes in, body bytes and trailer fields out; it never touches a socket. Each chunk line is
held to the RFC's grammar, whitespace allowed only where it allows it (around ";" and "="), so
this server and any other that reads the grammar strictly agree on where every chunk ends: a
bare CR or LF, a sign or "0x" in a size, a control byte, an unterminated quoted-string or an
over-long line is refused, never guessed at.
"""

from __future__ import annotations

import re
from typing import Callable

from .grammar import FIELD_TEXT_PATTERN, QUOTED_STRING_PATTERN, TOKEN_PATTERN

__all__ = ["ChunkedDecoder", "ChunkedError", "MAX_CHUNK_LINE"]

MAX_CHUNK_LINE = 8192  # bytes of one chunk line (size and extensions), its CRLF not counted

_HEX_DIGITS = b"0123456789abcdefABCDEF"

# chunk-size [ chunk-ext ], where chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ).
# Each part ends at a byte the next cannot hold (";", "=", a quote), so matching is linear.
_BWS = r"[ \t]*"
_CHUNK_LINE = re.compile(
    rf"([0-9A-Fa-f]+)(?:{_BWS};{_BWS}{TOKEN_PATTERN}"
    rf"(?:{_BWS}={_BWS}(?:{TOKEN_PATTERN}|{QUOTED_STRING_PATTERN}))?)*".encode("latin-1"))
# The CRLF after chunk data and a chunk line of hex digits alone: the usual next chunk.
_NEXT_SIZE = re.compile(rb"\r\n([0-9A-Fa-f]{1,16})\r\n")
_FIELD_LINE = re.compile(rf"({TOKEN_PATTERN}):({FIELD_TEXT_PATTERN})".encode("latin-1"))

# Fields that frame a message: in a trailer section they come too late, and a hop that
# merged them into the head would frame the message differently (RFC 9110 §6.5.1).
_FRAMING_FIELDS = frozenset((b"content-length", b"transfer-encoding"))

# What comes next: a chunk line, chunk data, the CRLF after the data, a trailer line; or
# nothing, the body having ended.
_LINE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedError(Exception):
    """A chunked body that breaks the grammar or a limit; carries the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(status, message)
        self.status = status
        self.message = message  # short, plain text, never echoes client bytes


class ChunkedDecoder:
    """Decodes one chunked body from bytes fed in pieces of any size.

    Chunk data goes to `write` (small chunks joined into one write per feed); trailer fields
    are appended to `trailers`. `max_body` bounds the data (413), checked as each chunk line announces its
    size; `max_trailer_bytes` and `max_trailer_count` bound the trailer section (431).
    """

    __slots__ = ("size", "trailers", "_write", "_max_body", "_max_trailer_bytes",
                 "_max_trailer_count", "_state", "_left", "_line", "_trailer_bytes")

    def __init__(self, write: Callable[[bytes | memoryview], object],
                 trailers: list[tuple[str, str]],
                 max_body: int, max_trailer_bytes: int, max_trailer_count: int):
        self.size = 0  # bytes of chunk data announced so far
        self.trailers = trailers
        self._write = write
        self._max_body = max_body
        self._max_trailer_bytes = max_trailer_bytes
        self._max_trailer_count = max_trailer_count
        self._state = _LINE
        self._left = 0  # bytes still to come of the chunk's data (_DATA) or of its CRLF
        self._line = b""  # the start of a line whose end has not arrived
        self._trailer_bytes = 0  # field lines of the trailer section, CRLFs counted

    @property
    def data_left(self) -> int:
        """Bytes of the current chunk's data still to come (0 outside a chunk's data)."""
        return self._left if self._state == _DATA else 0

    def feed(self, data: bytes) -> int:
        """Decode `data`. Return -1 while the body goes on, else the offset in `data` just
        past its end: what follows belongs to the next request. Raise ChunkedError on bad
        bytes; the decoder is then of no further use."""
        pieces: list[memoryview] = []
        view = memoryview(data)  # chunk data is written from it without a copy of its own
        position, end = 0, len(data)
        while position < end:
            state = self._state
            if state == _DATA:
                position = self._data(data, view, position, pieces)
            elif state == _LINE:
                position = self._chunk_line(data, position)
            elif state == _DATA_END:
                position = self._data_end(data, position)
            else:
                position = self._trailer_line(data, position)
                if self._state == _DONE:
                    break
        if len(pieces) == 1 or len(data) > len(pieces) * 4096:
            for piece in pieces:  # large chunks: no copy but the body's own
                self._write(piece)
        elif pieces:
            self._write(b"".join(pieces))  # small ones: one write, not one each
        return position if self._state == _DONE else -1

    def _data(self, data: bytes, view: memoryview, position: int,
              pieces: list[memoryview]) -> int:
        """Chunk data; then, without going round `feed`'s loop, every further chunk that
        follows whole behind a line of hex digits alone (the usual case)."""
        end = len(data)
        left = self._left
        room = self._max_body - self.size  # data the limit still allows after this chunk
        next_size = _NEXT_SIZE.match
        while True:
            stop = position + left
            if stop > end:  # the chunk goes on in the next feed
                pieces.append(view[position:])
                self._left = stop - end
                stop = end
                break
            pieces.append(view[position:stop])
            match = next_size(data, stop)
            if match is None:  # a part line, extensions, or bad bytes: the general way
                self._state, self._left = _DATA_END, 2
                break
            left = int(match[1], 16)
            if not left or left > room:  # the last chunk, or past the limit: the same
                self._state, self._left = _DATA_END, 2
                break
            room -= left
            position = match.end()
        self.size = self._max_body - room
        return stop

    def _chunk_line(self, data: bytes, position: int) -> int:
        """chunk-size [ chunk-ext ] CRLF: start the chunk's data, or the trailer section."""
        line, position = self._take_line(data, position, MAX_CHUNK_LINE)
        if line is None:
            return position
        if line and not line.lstrip(_HEX_DIGITS):  # hex digits alone: the usual line
            digits = line
        else:
            match = _CHUNK_LINE.fullmatch(line)
            if match is None:
                raise ChunkedError(400, "malformed chunk line")
            digits = match.group(1)
        size = int(digits, 16)  # only hex digits: int()'s signs, "0x" and "_" were refused
        if self.size + size > self._max_body:
            raise ChunkedError(413, "request body too large")
        if size:
            self.size += size
            self._state, self._left = _DATA, size
        else:  # the last chunk
            self._state = _TRAILER
        return position

    def _data_end(self, data: bytes, position: int) -> int:
        """The CRLF after chunk data: anything else means the data ran past its size."""
        left = self._left
        got = data[position:position + left]
        if got != b"\r\n"[2 - left:2 - left + len(got)]:
            raise ChunkedError(400, "chunk data does not end where its size says")
        self._left = left - len(got)
        if not self._left:
            self._state = _LINE
        return position + len(got)

    def _trailer_line(self, data: bytes, position: int) -> int:
        """A field line of the trailer section, or the empty line that ends the body."""
        budget = self._max_trailer_bytes - self._trailer_bytes - 2  # for the line, less CRLF
        line, position = self._take_line(data, position, max(budget, 0), 431)
        if line is None:
            return position
        if not line:
            self._state = _DONE
            return position
        match = _FIELD_LINE.fullmatch(line)
        if match is None:  # not a token before the colon, a control byte, obs-fold
            raise ChunkedError(400, "malformed trailer field")
        name = match.group(1)
        if name.lower() in _FRAMING_FIELDS:
            raise ChunkedError(400, "framing field in the trailer section")
        self._trailer_bytes += len(line) + 2
        trailers = self.trailers
        trailers.append((name.decode("latin-1"),
                         match.group(2).strip(b" \t").decode("latin-1")))
        if len(trailers) > self._max_trailer_count:
            raise ChunkedError(431, "request trailer section too large")
        return position

    def _take_line(self, data: bytes, position: int, limit: int,
                   status: int = 400) -> tuple[bytes | None, int]:
        """The line starting at `position` (joined to its start from earlier feeds), without
        its CRLF, and the offset after it; (None, len(data)) while it has not ended.

        A line longer than `limit` is refused (with `status`) as soon as that is certain, and
        so is a CR not followed by LF or an LF without CR: line ends must be CRLF.
        """
        start = self._line
        room = limit + 1 - len(start)  # bytes of this line that may still come before its LF
        newline = data.find(b"\n", position, position + room + 1)
        if newline < 0:
            rest = data[position:]
            if len(rest) > room:
                raise _too_long(status)
            if b"\r" in (start[-1:] + rest)[:-1]:
                raise ChunkedError(400, "bare CR in chunked body")
            self._line = start + rest
            return None, len(data)
        line = data[position:newline]
        if start:
            line, self._line = start + line, b""
        if line[-1:] != b"\r":
            raise ChunkedError(400, "bare LF in chunked body")
        return line[:-1], newline + 1


def _too_long(status: int) -> ChunkedError:
    if status == 431:
        return ChunkedError(431, "request trailer section too large")
    return ChunkedError(400, "chunk line too long")
