"""Content codings (RFC 9110 §8.4) for both sides: the server's choice to gzip a response (its
policy, `Accept-Encoding` with q-values, the header changes that go with it) and a gzip stream
flushed per item; the client's bounded inflater, which never produces more than it is asked for.

Pure: bytes in, bytes out, standard-library zlib only. Nothing here reads sockets or grows
without a bound.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Optional, Sequence

from .grammar import field_values, list_members

__all__ = ["Compression", "GzipStream", "Inflater", "DecodeError", "accepted_codings",
           "accepts", "compressible", "choose_coding", "compressed_headers", "header_value"]

# Media types worth compressing besides text/*: structured text that shrinks several times over.
COMPRESSIBLE_TYPES = frozenset({
    "application/json", "application/javascript", "application/x-javascript",
    "application/ecmascript", "application/xml", "application/xhtml+xml", "application/rss+xml",
    "application/atom+xml", "application/manifest+json", "application/wasm",
    "application/x-ndjson", "image/svg+xml", "image/x-icon"})
EVENT_STREAM = "text/event-stream"
_QVALUE_DEFAULT = 1.0
# Header values whose reading is remembered (Accept-Encoding, Content-Type): a server sees few
# distinct ones; past this many, each is read again every time.
MAX_REMEMBERED = 256


@dataclasses.dataclass(frozen=True)
class Compression:
    """When and how a server gzips responses.

    min_size: a body known to be smaller goes as it is (gzip's 18-byte frame and the CPU cost
        outweigh the gain); a streamed body of unknown size is always compressed.
    level: zlib level, 1 (fastest) to 9 (smallest). 1, as nginx's default: on answers of a few
        KiB it comes within 2 % of level 6's size at less than half the CPU, which the loop
        cares about (an 11 KiB JSON answer: 1,212 against 1,184 bytes, 316 against 733
        thousand instructions).
    event_streams: also compress text/event-stream (each event flushed at once).
    """

    min_size: int = 1024
    level: int = 1
    event_streams: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.level <= 9:
            raise ValueError(f"compression level must be 1 to 9, not {self.level}")
        if self.min_size < 0:
            raise ValueError("compress_min_size must not be negative")


class DecodeError(ValueError):
    """Bytes that are not the content coding they claim to be."""


# -- negotiation ------------------------------------------------------------------------------

def accepted_codings(header: Optional[str]) -> dict:
    """Accept-Encoding as {coding: qvalue} (RFC 9110 §12.5.3); codings are lower-cased,
    "x-gzip" counts as "gzip" and a malformed qvalue makes its member count as q=0."""
    codings: dict = {}
    for member in (header or "").split(","):
        coding, *parameters = member.split(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        quality = _QVALUE_DEFAULT
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                quality = _qvalue(value.strip())
        if coding == "x-gzip":
            coding = "gzip"
        codings[coding] = max(quality, codings.get(coding, 0.0))
    return codings


def _qvalue(text: str) -> float:
    """RFC 9110 §12.4.2: "0" to "1" with at most three decimals; anything else refuses."""
    try:
        value = float(text)
    except ValueError:
        return 0.0
    if not (0.0 <= value <= 1.0) or len(text.partition(".")[2]) > 3:
        return 0.0
    return value


def accepts(header: Optional[str], coding: str) -> bool:
    """Whether Accept-Encoding `header` allows `coding`: named with q > 0, or covered by "*"
    with q > 0 and not named. No header at all allows nothing but identity here, the safe
    reading for a server deciding to compress (§12.5.3 permits either)."""
    codings = accepted_codings(header)
    if coding in codings:
        return codings[coding] > 0
    return codings.get("*", 0.0) > 0


def compressible(content_type: Optional[str], event_streams: bool = False) -> bool:
    """Text, JSON, JavaScript, XML and SVG shrink; images, archives and video do not."""
    if not content_type:
        return False
    kind = _media_kinds.get(content_type)
    if kind is None:
        media = content_type.split(";")[0].strip().lower()
        kind = (EVENT_STREAM if media == EVENT_STREAM else
                media.startswith("text/") or media in COMPRESSIBLE_TYPES
                or media.endswith(("+json", "+xml")))
        if len(_media_kinds) < MAX_REMEMBERED:
            _media_kinds[content_type] = kind
    return event_streams if kind == EVENT_STREAM else kind is True


_media_kinds: dict = {}  # Content-Type value -> True, False or EVENT_STREAM


def header_value(headers: Sequence[tuple[str, str]], name: str) -> Optional[str]:
    """The values of header `name` joined with ", " (case-insensitive), or None."""
    values = field_values(headers, name)
    return ", ".join(values) if values else None


def choose_coding(policy: Optional[Compression], status: int, headers: Sequence[tuple[str, str]],
                  accept_encoding: Optional[str], size: Optional[int]) -> tuple[bool, bool]:
    """(varies, compress): whether this response's form depends on Accept-Encoding (so it needs
    `Vary: Accept-Encoding`) and whether to gzip it for this request. `size` is the body's
    length when known. Asked once per response: one pass over the headers."""
    if policy is None or status < 200 or status in (204, 206, 304):
        return False, False  # no body, or a byte range of the identity form (RFC 9110 §14)
    content_type = None
    for name, value in headers:
        lower = name.lower()
        if lower == "content-type":
            content_type = value if content_type is None else f"{content_type}, {value}"
        elif lower == "content-encoding" or lower == "content-range":
            return False, False  # already encoded by the app; a byte range
        elif lower == "cache-control" and "no-transform" in value.lower():
            return False, False  # RFC 9111 §5.2.2.6: intermediaries, and we, leave it alone
    if not compressible(content_type, policy.event_streams):
        return False, False
    if size is not None and size < policy.min_size:
        return False, False
    return True, _accepts_gzip(accept_encoding)


_gzip_accepted: dict = {}  # Accept-Encoding value -> whether it allows gzip


def _accepts_gzip(header: Optional[str]) -> bool:
    """accepts(header, "gzip"), remembered per value: parsing q-values cost a tenth as much
    as gzipping a 10 KiB answer."""
    allowed = _gzip_accepted.get(header)
    if allowed is None:
        allowed = accepts(header, "gzip")
        if len(_gzip_accepted) < MAX_REMEMBERED:
            _gzip_accepted[header] = allowed
    return allowed


def compressed_headers(headers: list, varies: bool, compress: bool) -> list:
    """The header list adjusted for the choice: Vary names Accept-Encoding; when compressing,
    Content-Encoding is added, Content-Length dropped (the server frames the new length) and a
    strong ETag weakened, since the bytes differ from the identity form's (RFC 9110 §8.8.3)."""
    result = []
    vary_seen = False
    for name, value in headers:
        lower = name.lower()
        if compress and lower == "content-length":
            continue
        if compress and lower == "etag" and not value.startswith("W/"):
            value = "W/" + value
        if varies and lower == "vary":
            vary_seen = True
            members = list_members(value)
            if "*" not in members and "accept-encoding" not in members:
                value = f"{value}, Accept-Encoding"
        result.append((name, value))
    if varies and not vary_seen:
        result.append(("Vary", "Accept-Encoding"))
    if compress:
        result.append(("Content-Encoding", "gzip"))
    return result


# -- the server's encoder ---------------------------------------------------------------------

class GzipStream:
    """Gzip a body item by item. Each `compress(item)` ends with a sync flush, so what an item
    says reaches the client at once (a long-poll or an event is not held back to fill a block);
    `finish()` returns the gzip trailer. `whole(body)` does it in one call for a known body."""

    def __init__(self, level: int = 1):
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip framing

    def compress(self, data: bytes) -> bytes:
        return self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._compressor.flush(zlib.Z_FINISH)

    @staticmethod
    def whole(data: bytes, level: int = 1) -> bytes:
        """One gzip member. Its window is no larger than the body, and small bodies get a
        smaller hash table: zlib clears both for every stream, and for a 10 KiB answer that
        halves the cost without changing the output size. (The one-shot `zlib.compress(data,
        level, 31)` cannot size them: 11 % more instructions on an 11 KiB answer.)"""
        window = min(15, max(9, len(data).bit_length()))
        compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + window,
                                      8 if window == 15 else 6)
        return compressor.compress(data) + compressor.flush()


# -- the client's decoder ---------------------------------------------------------------------

DECODABLE = frozenset({"gzip", "x-gzip", "deflate"})


class Inflater:
    """Undo a gzip or deflate content coding a bounded amount at a time.

    `feed(data)` keeps the compressed bytes; `read(limit)` inflates at most `limit` bytes of
    them (zlib's max_length), so a body that inflates a thousandfold costs no more memory than
    the caller allows; `pending` says whether compressed input is left. `end()` checks that the
    coded stream was complete. Concatenated gzip members are decoded one after another; a
    "deflate" body is taken as zlib-wrapped (RFC 9110 §8.4.1.2) or, failing that, as raw deflate,
    which some servers send.
    """

    def __init__(self, coding: str):
        coding = coding.lower()
        if coding not in DECODABLE:
            raise ValueError(f"cannot decode content coding {coding!r}")
        self.coding = "gzip" if coding == "x-gzip" else coding
        self._wbits = 31 if self.coding == "gzip" else 15
        self._decompressor = zlib.decompressobj(self._wbits)
        self._input = b""
        self._started = False  # some output came: the raw-deflate fallback is over

    @property
    def pending(self) -> bool:
        return bool(self._input)

    @property
    def buffered(self) -> int:
        """Compressed bytes fed and not yet inflated."""
        return len(self._input)

    def feed(self, data: bytes) -> None:
        self._input = self._input + data if self._input else bytes(data)

    def read(self, limit: int) -> bytes:
        """Inflate up to `limit` bytes from what was fed."""
        output = []
        size = 0
        while self._input and size < limit:
            piece = self._inflate(limit - size)
            if not piece and self._input and not self._decompressor.eof:
                break  # zlib wants more input before it can produce any
            output.append(piece)
            size += len(piece)
        return b"".join(output)

    def end(self) -> None:
        """The coded body is over: raise DecodeError if it stopped short."""
        if self._input:
            return  # still unread: checked once read
        if self._started and not self._decompressor.eof:
            raise DecodeError(f"{self.coding} body ended before its end of stream")

    def _inflate(self, limit: int) -> bytes:
        decompressor = self._decompressor
        data, self._input = self._input, b""
        if decompressor.eof:  # another gzip member follows the last one
            if self.coding != "gzip" or not data.strip(b"\0"):
                return b""  # padding after the end: ignored, as gzip(1) does
            decompressor = self._decompressor = zlib.decompressobj(self._wbits)
        try:
            piece = decompressor.decompress(data, limit)
        except zlib.error as ex:
            if self.coding == "deflate" and not self._started and self._wbits == 15:
                self._wbits = -15
                self._decompressor = zlib.decompressobj(-15)
                self._input = data
                return self._inflate(limit)
            raise DecodeError(f"invalid {self.coding} body: {ex}") from None
        self._started = True
        self._input = decompressor.unconsumed_tail or decompressor.unused_data
        return piece
