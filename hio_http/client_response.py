"""The response a Client hands back at once and fills in as bytes arrive: status, headers,
body (gathered, or streamed to a consumer), trailers, and the error that ended it, if any.
Nothing here touches a socket; the session feeds it.
"""

from __future__ import annotations

import json as json_codec
import logging
from typing import Any, Callable, Optional

from .client_bodies import ResponseStream
from .client_parsing import ClientError, Head, ProtocolError
from .compression import DECODABLE, DecodeError, Inflater
from .grammar import first_field

logger = logging.getLogger("hio_http.client")

__all__ = ["Response"]


class Response:
    """The answer to one request, filled in as its bytes arrive.

    `done` turns True once the response is complete or has failed; then `error` is None or the
    ClientError that ended it. `headers` is the ordered list of (name, value) as sent (strings
    decoded as latin-1); `header(name)` finds one case-insensitively. After followed redirects
    `history` holds the earlier responses and `url` the final address.

    A body sent with Content-Encoding gzip or deflate is decoded as it arrives (`headers` still
    say how it came). A streamed response (`request(..., stream=True)`) gathers nothing:
    `take()` returns what has arrived (b"" when nothing new), and reading pauses while
    `buffered` is at the client's high-water mark.
    """

    def __init__(self, method: str, url: str):
        self.method = method
        self.url = url
        self.status: Optional[int] = None
        self.reason = ""
        self.version: Optional[str] = None
        self.headers: list = []
        self.trailers: list = []
        self.error: Optional[ClientError] = None
        self.done = False
        self.history: list = []
        self._chunks: list = []
        self._size = 0
        self._stream: Optional[ResponseStream] = None  # set for stream=True
        self._inflater: Optional[Inflater] = None  # a gathered body's content coding
        self._done_callbacks: list = []
        self._resume: Optional[Callable[[], None]] = None  # reading paused for a full stream
        # Ends the exchange and its connection: the rest of a body that failed as it was taken
        # (corrupt, or past max_decoded) must not be read into a stream nobody takes from.
        self._abandon: Optional[Callable[[ClientError], None]] = None

    def __repr__(self) -> str:
        state = (f"error={self.error!r}" if self.error else
                 f"{self.status} {self.reason}" if self.status else "pending")
        return f"<Response {self.method} {self.url} {state}{'' if self.done else ' ...'}>"

    @property
    def ok(self) -> bool:
        """Complete, without error, with a status below 400."""
        return self.done and self.error is None and self.status is not None and self.status < 400

    @property
    def body(self) -> bytes:
        """The body received so far (all of it once `done`)."""
        if len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0] if self._chunks else b""

    @property
    def text(self) -> str:
        """The body decoded with the charset of Content-Type (UTF-8 when none is named)."""
        charset = "utf-8"
        for parameter in (self.header("content-type") or "").split(";")[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "charset" and value.strip():
                charset = value.strip().strip('"')
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError if it is not JSON)."""
        return json_codec.loads(self.body)

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of header `name` (case-insensitive), else `default`."""
        return first_field(self.headers, name.lower(), default)

    @property
    def streamed(self) -> bool:
        return self._stream is not None

    @property
    def awaits_taking(self) -> bool:
        """Its body waits, as it arrives, for `take()` (a stream without `on_data`)."""
        return self._stream is not None and self._stream.on_data is None

    @property
    def buffered(self) -> int:
        """Body bytes held for the consumer of a streamed response (0 for a gathered one)."""
        return self._stream.buffered if self._stream is not None else 0

    def take(self) -> bytes:
        """A streamed body's bytes that arrived since the last take (decoded), or b"". Once
        `done` and take() returns b"", the body is over: check `error` then, since a coded
        body's last bytes are decoded (and found corrupt, or past `max_decoded`) only as they
        are taken. Taking lets reading resume."""
        stream = self._stream
        if stream is None:
            raise ValueError("take() is for streamed responses: request(..., stream=True)")
        try:
            data = stream.take()
        except ClientError as ex:
            abandon, self._abandon = self._abandon, None
            if not self.done:
                if abandon is not None:
                    abandon(ex)  # fails this response too
                self._fail(ex)
            elif self.error is None:
                self.error = ex  # all of it had arrived; the failure was in what was left
            return b""
        if self._resume is not None and not stream.full:
            resume, self._resume = self._resume, None
            resume()
        return data

    def when_done(self, callback: Callable[["Response"], None]) -> None:
        """Call `callback(response)` once it is done (at once if it already is)."""
        if self.done:
            callback(self)
        else:
            self._done_callbacks.append(callback)

    def raise_for_error(self) -> "Response":
        """Raise `error` if the response failed (for code outside the loop); else return self."""
        if self.error is not None:
            raise self.error
        return self

    # -- filled in by the client ----------------------------------------------------------------

    def _begin(self, head: Head, decode: bool) -> None:
        self.status, self.reason, self.version = head.status, head.reason, head.version
        self.headers = head.headers
        coding = (self.header("content-encoding") or "").strip().lower()
        if decode and coding in DECODABLE and self.method != "HEAD" and head.status != 304:
            if self._stream is not None:
                self._stream.decode(coding)
            else:
                self._inflater = Inflater(coding)

    def _receive(self, data: bytes, limit: int) -> None:
        """A piece of a gathered body (a streamed one goes to its stream)."""
        if self._inflater is not None:  # inflate no more than the limit allows, plus one
            self._inflater.feed(data)
            data = self._inflate(limit - self._size + 1)
        self._size += len(data)
        if self._size > limit:
            raise ProtocolError(f"response body larger than max_body ({limit} bytes)"
                                + (" once decoded" if self._inflater is not None else ""))
        if data:
            self._chunks.append(data)

    def _inflate(self, limit: int) -> bytes:
        assert self._inflater is not None
        try:
            return self._inflater.read(limit)
        except DecodeError as ex:
            raise ProtocolError(str(ex)) from None

    def _complete(self, trailers: list) -> None:
        """The last byte arrived: check a coded body's end, then finish."""
        try:
            if self._stream is not None:
                self._stream.end()
            elif self._inflater is not None:
                self._inflater.end()
        except (ClientError, DecodeError) as ex:
            error = ex if isinstance(ex, ClientError) else ProtocolError(str(ex))
            self._finish(trailers, error)
            return
        self._finish(trailers)

    def _finish(self, trailers: list, error: Optional[ClientError] = None) -> None:
        if self.done:
            return
        self.trailers = trailers
        self.error = error
        self.done = True
        self._resume = self._abandon = None
        callbacks, self._done_callbacks = self._done_callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                logger.exception("error in a done callback of %r", self)

    def _fail(self, error: ClientError) -> None:
        self._finish(self.trailers, error)

    def _restart(self, url: str, method: str) -> None:
        """Keep this one as history; start over for a redirect to `url`."""
        previous = Response(self.method, self.url)
        previous.status, previous.reason, previous.version = self.status, self.reason, self.version
        previous.headers, previous.trailers = self.headers, self.trailers
        previous._chunks, previous.done = self._chunks, True
        self.history.append(previous)
        self.method, self.url = method, url
        self.status, self.reason, self.version = None, "", None
        self.headers, self.trailers, self._chunks, self._size = [], [], [], 0
        self._inflater = None
        if self._stream is not None:
            self._stream = ResponseStream(self._stream.high_water, self._stream.on_data,
                                          self._stream.max_decoded)
