"""What PEP 3333 has the server hand an app besides `start_response` (that is the Responder's,
in responding): the environ of a request (`build_environ`), `wsgi.errors` (`ErrorStream`) and
`wsgi.file_wrapper` (`FileWrapper`, with `regular_file_span` to send a regular file by sendfile).
Nothing here touches a socket.
"""

from __future__ import annotations

import io
import logging
import os
import stat
from types import TracebackType
from typing import (TYPE_CHECKING, Any, Callable, Final, Iterable, Iterator, Optional, Protocol,
                    Union)
from urllib.parse import unquote_to_bytes

if TYPE_CHECKING:
    from .request import Request

__all__ = ["Environ", "ExcInfo", "StartResponse", "WSGIApp", "Readable", "ErrorStream",
           "FileWrapper", "regular_file_span", "environ_key", "build_environ"]

wsgi_logger: Final = logging.getLogger("hio_http.wsgi")

# PEP 3333's environ: str keys, values of many kinds (str, a file, bools, a tuple, callables),
# which the app reads as it knows them; hence Any.
Environ = dict[str, Any]
# What sys.exc_info() returns
ExcInfo = Union[tuple[type[BaseException], BaseException, Optional[TracebackType]],
                tuple[None, None, None]]


class StartResponse(Protocol):
    """PEP 3333's start_response: status, headers, exc_info; returns the legacy write().
    (The shape of the stdlib's wsgiref.types.StartResponse, which Python 3.10 lacks.)"""

    def __call__(self, status: str, headers: list[tuple[str, str]],
                 exc_info: Optional[ExcInfo] = None, /) -> Callable[[bytes], object]: ...


class WSGIApp(Protocol):
    """A WSGI application (PEP 3333), as `Server(app)` calls it: it returns an iterable of body
    items, bytes or any bytes-like object (checked as sent); an item of b"" means "not yet"."""

    def __call__(self, environ: Environ, start_response: StartResponse, /
                 ) -> Iterable[object]: ...


class Readable(Protocol):
    """What wsgi.file_wrapper accepts (PEP 3333): anything with read(size)."""

    def read(self, size: int, /) -> bytes: ...


class ErrorStream:
    """wsgi.errors: what the app writes goes to the `hio_http.wsgi` logger, line by line."""

    def __init__(self) -> None:
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            wsgi_logger.error(line)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._partial:
            wsgi_logger.error(self._partial)
            self._partial = ""


class FileWrapper:
    """wsgi.file_wrapper: iterates a file in blocks and closes it with the response."""

    close: Callable[[], object]  # the file's own close(), when it has one

    def __init__(self, filelike: Readable, block_size: int = 64 * 1024):
        self.filelike = filelike
        self.block_size = block_size
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while True:
            block = read(self.block_size)
            if not block:
                return
            yield block


def regular_file_span(filelike: object) -> tuple[Optional[int], int, int]:
    """(descriptor, current offset, bytes left) of a regular file, or (None, 0, 0) for anything
    else (a pipe, a socket, a file-like without fileno() or tell())."""
    fileno, tell = getattr(filelike, "fileno", None), getattr(filelike, "tell", None)
    if fileno is None or tell is None:
        return None, 0, 0
    try:
        fd: int = fileno()
        info = os.fstat(fd)
        offset: int = tell()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None, 0, 0
    if not stat.S_ISREG(info.st_mode):
        return None, 0, 0
    return fd, offset, max(0, info.st_size - offset)


def environ_key(name: str) -> Optional[str]:
    """HTTP_* key of a request header; None for names with '_' (they could spoof '-' names)."""
    if "_" in name:
        return None
    return "HTTP_" + name.upper().replace("-", "_")


# Request field name -> where the environ carries it: CONTENT_TYPE, its HTTP_* key, or "" for
# none (Content-Length: the framing's CONTENT_LENGTH is set instead; names with '_'). Clients
# send the same few names again and again; bounded in count and in length, so odd names
# cannot pile up.
_field_keys: Final[dict[str, str]] = {}
MAX_FIELD_KEYS: Final = 4096
MAX_FIELD_KEY_NAME: Final = 64


def _field_key(name: str) -> str:
    lower = name.lower()
    if lower == "content-type":
        key = "CONTENT_TYPE"
    elif lower == "content-length":
        key = ""
    else:
        key = environ_key(name) or ""
    if len(name) <= MAX_FIELD_KEY_NAME and len(_field_keys) < MAX_FIELD_KEYS:
        _field_keys[name] = key
    return key


def build_environ(base: Environ, request: Request, root_path: str = "") -> Environ:
    """The WSGI environ of `request` on top of the per-connection `base` (PEP 3333)."""
    environ = base.copy()
    path = request.path
    if "%" in path:
        path = unquote_to_bytes(path).decode("latin-1")
    if root_path and (path == root_path or path.startswith(root_path + "/")):
        environ["SCRIPT_NAME"] = root_path
        path = path[len(root_path):]
    environ["REQUEST_METHOD"] = request.method
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = request.query
    environ["RAW_URI"] = environ["REQUEST_URI"] = request.target
    version = request.version
    environ["SERVER_PROTOCOL"] = "HTTP/1.1" if version == "1.1" else "HTTP/" + version
    environ["wsgi.input"] = request.body
    # PEP 3333 has no place for trailer fields; the body is complete before the app runs, so
    # they are all here: [(name, value), ...], empty unless a chunked body carried some.
    environ["hio_http.trailers"] = request.trailers
    for name, value in request.headers:
        key = _field_keys.get(name)  # looked up here, not in a call: once per field
        if key is None:
            key = _field_key(name)
        if not key:
            continue
        if key in environ:
            separator = "; " if key == "HTTP_COOKIE" else ", "
            environ[key] = environ[key] + separator + value
        else:
            environ[key] = value
    if request.content_length is not None or request.chunked:
        environ["CONTENT_LENGTH"] = str(request.body_size)
    return environ
