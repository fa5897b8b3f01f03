"""`StaticSink`: a Falcon sink that serves the files of one directory over GET and HEAD, with
validators (ETag, Last-Modified), conditional requests and single byte ranges (RFC 9110).

It must never return anything from outside its root, never list a directory, and never open a
file before every check has passed; an opened file is always handed to the server to close.
"""

from __future__ import annotations

import calendar
import email.utils
import mimetypes
import os
import re
import stat
import time
from typing import BinaryIO, Optional, Union
from urllib.parse import quote

import falcon

from .compression import accepted_codings, choose_coding

__all__ = ["StaticSink"]

ALLOWED_METHODS = ("GET", "HEAD")

# Text is assumed to be stored as UTF-8; these non-text/* types are text too.
TEXT_TYPES = frozenset({"application/javascript", "application/json"})

# A compressed file goes out as the bytes it holds, without Content-Encoding: `a.txt.gz` labelled
# "text/plain" + "Content-Encoding: gzip" would be unpacked by the client that asked for the
# archive itself. So its type is the compressor's format.
COMPRESSED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
                    "xz": "application/x-xz", "compress": "application/x-compress",
                    "br": "application/x-brotli"}

# Separators and NUL hidden by percent-encoding; PATH_INFO arrives already decoded, so they can
# only be seen in the raw request target.
ENCODED_SEPARATORS = ("%2f", "%5c", "%00")

# Precompressed siblings, by preference on a tie of q-values: `app.js.br`, then `app.js.gz`.
SIBLINGS = (("br", ".br"), ("gzip", ".gz"))

BYTE_RANGE = re.compile(r"([0-9]*)-([0-9]*)")
OPAQUE_TAG = re.compile(r'(?:W/)?("[^"]*")')


class StaticSink:
    """Serves the files under `directory` for request paths under `prefix`.

    `index` names the file that stands for a directory (None: directories are not served);
    `cache_control` is sent as Cache-Control (None: no header); `block_size` is how much of a
    file is read at a time. Mount with `app.add_sink(StaticSink(root, prefix="/s"), "/s")`.
    """

    def __init__(self, directory, prefix: str = "/", index: Optional[str] = "index.html",
                 cache_control: Optional[str] = "public, max-age=3600",
                 block_size: int = 64 * 1024):
        root = os.path.realpath(os.fspath(directory))
        if not os.path.isdir(root):
            raise NotADirectoryError(f"not a directory: {directory!r}")
        if not prefix.startswith("/"):
            raise ValueError(f"prefix must start with '/': {prefix!r}")
        if index is not None and not _is_plain_name(index):
            raise ValueError(f"index must be a plain, visible file name: {index!r}")
        if block_size < 1:
            raise ValueError("block_size must be positive")
        self.root = root
        # The root with a trailing separator, so that /srv/www2 is not taken to be in /srv/www.
        self.root_inside = root if root.endswith(os.sep) else root + os.sep
        self.prefix = prefix.rstrip("/")  # "/" -> "": every path is under it
        self.index = index
        self.cache_control = cache_control
        self.block_size = block_size

    def __call__(self, req: falcon.Request, resp: falcon.Response, **kwargs) -> None:
        if req.method not in ALLOWED_METHODS:
            raise falcon.HTTPMethodNotAllowed(list(ALLOWED_METHODS))
        segments, slash = self._segments(req.env)
        real, info = self._lookup(segments)
        if stat.S_ISDIR(info.st_mode):
            if self.index is None:
                raise falcon.HTTPNotFound()  # no directory listings, ever
            segments = segments + [self.index]
            real, info = self._lookup(segments)
            if not slash:  # relative links in the index resolve against the slash form
                raise falcon.HTTPMovedPermanently(self._slash_location(req.env))
        elif slash:
            raise falcon.HTTPNotFound()  # "file.txt/" names a directory that does not exist
        if not stat.S_ISREG(info.st_mode):
            # Opening a FIFO blocks the whole loop until a writer comes; a device never ends.
            raise falcon.HTTPNotFound()
        name = os.path.join(self.root, *segments)
        varies, coding, sibling = self._precompressed(req, segments, info)
        if varies:
            resp.set_header("Vary", "Accept-Encoding")
        if sibling is not None and coding is not None:  # both or neither
            real, info = sibling
        self._serve(req, resp, real, info, name, coding)

    # -- the path --------------------------------------------------------------------------

    def _segments(self, env: dict) -> tuple[list[str], bool]:
        """The checked path segments below the prefix, and whether the path ended in '/'.

        The file is named by PATH_INFO, which the server has percent-decoded once (PEP 3333),
        so `%2e%2e` arrives here as `..` and meets the same checks as a literal one. Only what
        decoding erased is looked for in the raw target (RAW_URI, or REQUEST_URI elsewhere):
        `a%2fb` and `a/b` look alike in PATH_INFO. Without a raw target that one distinction is
        lost, but the path still cannot leave the root.
        """
        raw = env.get("RAW_URI") or env.get("REQUEST_URI") or ""
        if _has_encoded_separator(raw.partition("?")[0]):
            raise falcon.HTTPNotFound()
        rest = self.relative(env.get("PATH_INFO", ""))
        if rest is None:
            raise falcon.HTTPNotFound()
        try:  # PATH_INFO holds the raw bytes as latin-1 characters; names are UTF-8
            rest = rest.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise falcon.HTTPNotFound() from None
        segments = rest.split("/")[1:]
        slash = bool(segments) and segments[-1] == ""
        if slash:
            segments.pop()
        if not all(_is_plain_name(segment) for segment in segments):
            raise falcon.HTTPNotFound()
        return segments, slash

    def relative(self, path: str) -> Optional[str]:
        """The part of the request path that names a file: what follows the prefix ("" or
        starting with "/"), or None when the path is not under the prefix. Subclasses that map
        paths otherwise override this; every safety check comes after it."""
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            return None  # "/staticfoo" is not under "/static"
        return path[len(self.prefix):]

    def _lookup(self, segments: list[str]) -> tuple[str, os.stat_result]:
        """The real path of `segments` under the root and its stat, or 404."""
        real = os.path.realpath(os.path.join(self.root, *segments))
        if real != self.root:
            # A symlink may lead out of the tree (to /etc, or to a sibling /srv/www2)...
            if not real.startswith(self.root_inside):
                raise falcon.HTTPNotFound()
            # ...or to a hidden file inside it.
            if not all(_is_plain_name(part) for part in
                       real[len(self.root_inside):].split(os.sep)):
                raise falcon.HTTPNotFound()
        try:
            return real, os.stat(real)
        except (OSError, ValueError):
            raise falcon.HTTPNotFound() from None

    def _precompressed(self, req: falcon.Request, segments: list[str],
                       info: os.stat_result) -> tuple[bool, Optional[str], Optional[tuple]]:
        """(varies, coding, (real, info)) of a compressed sibling to send instead of the file:
        `file.js.br` or `file.js.gz`, when the client accepts that coding and the sibling is
        no older than the file (a stale one would serve old content). `varies` says whether a
        sibling exists at all, so the answer depends on Accept-Encoding."""
        if not segments:
            return False, None, None
        accepted = accepted_codings(req.get_header("Accept-Encoding"))
        varies, best, best_quality = False, None, 0.0
        for coding, suffix in SIBLINGS:
            try:
                real, sibling = self._lookup(segments[:-1] + [segments[-1] + suffix])
            except falcon.HTTPNotFound:
                continue
            if not stat.S_ISREG(sibling.st_mode) or sibling.st_mtime_ns < info.st_mtime_ns:
                continue
            varies = True
            quality = accepted.get(coding, accepted.get("*", 0.0))
            if quality > best_quality:
                best, best_quality = (coding, (real, sibling)), quality
        if best is None:
            return varies, None, None
        return varies, best[0], best[1]

    def _slash_location(self, env: dict) -> str:
        """The directory's URL with its trailing slash, keeping the query string."""
        path = env.get("SCRIPT_NAME", "") + env.get("PATH_INFO", "") + "/"
        location = quote(path.encode("latin-1"))
        query = env.get("QUERY_STRING", "")
        return f"{location}?{query}" if query else location

    # -- the response ----------------------------------------------------------------------

    def _serve(self, req: falcon.Request, resp: falcon.Response, real: str,
               info: os.stat_result, name: str, coding: Optional[str]) -> None:
        size = info.st_size
        seconds = info.st_mtime_ns // 1_000_000_000
        etag = entity_tag(info)
        if _not_modified(req, etag, seconds):
            # No body and no representation metadata (Content-Type, Content-Encoding), but the
            # Vary and ETag the 200 would have carried (RFC 9110 §15.4.5), the server's own
            # gzip included: a cache matches the stored answer by them.
            resp.status = falcon.HTTP_304
            if coding is None:
                varies, compress = self._server_gzip(req, name, size)
                if varies:
                    resp.set_header("Vary", "Accept-Encoding")
                if compress:
                    etag = "W/" + etag
            self._set_validators(resp, etag, seconds)
            return
        if coding is not None:
            resp.set_header("Content-Encoding", coding)
        span = _requested_span(req, etag, seconds, size)  # may raise 416
        # HEAD opens nothing: falcon drops a HEAD body without closing its stream.
        file = None if req.method == "HEAD" else _open_same_file(real, info)
        self._set_validators(resp, etag, seconds)
        resp.set_header("Accept-Ranges", "bytes")
        resp.content_type = content_type_of(name)
        if span is None:
            resp.content_length = size
            body: Union[BinaryIO, FileSpan, None] = file
        else:
            first, last = span
            resp.status = falcon.HTTP_206
            resp.set_header("Content-Range", f"bytes {first}-{last}/{size}")
            resp.content_length = last - first + 1
            body = None if file is None else FileSpan(file, first, last - first + 1)
        if body is not None:
            wrapper = req.env.get("wsgi.file_wrapper")
            resp.stream = wrapper(body, self.block_size) if wrapper else body

    def _server_gzip(self, req: falcon.Request, name: str, size: int) -> tuple[bool, bool]:
        """(varies, compress): what the server's `compress` setting would make of this file's
        200 answer (the server tells its policy in the environ; it cannot see a 304's type)."""
        policy = req.env.get("hio_http.compression")
        if policy is None:
            return False, False
        headers = [("Content-Type", content_type_of(name))]
        if self.cache_control is not None:
            headers.append(("Cache-Control", self.cache_control))
        return choose_coding(policy, 200, headers, req.get_header("Accept-Encoding"), size)

    def _set_validators(self, resp: falcon.Response, etag: str, seconds: int) -> None:
        resp.set_header("ETag", etag)
        resp.set_header("Last-Modified", email.utils.formatdate(seconds, usegmt=True))
        if self.cache_control is not None:
            resp.set_header("Cache-Control", self.cache_control)


class FileSpan:
    """A read-only view of `length` bytes of `file` from `offset`: no read goes past its end,
    so a ten-byte range of a large file reads ten bytes. Closing it closes the file."""

    def __init__(self, file: BinaryIO, offset: int, length: int):
        file.seek(offset)
        self.file = file
        self.remaining = length

    def read(self, size: Optional[int] = -1) -> bytes:
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        data = self.file.read(size) if size else b""
        self.remaining -= len(data)
        return data

    def close(self) -> None:
        self.file.close()


def entity_tag(info: os.stat_result) -> str:
    """A strong ETag: a file rewritten in place changes size or mtime, one replaced its inode."""
    return f'"{info.st_size:x}-{info.st_mtime_ns:x}-{info.st_ino:x}"'


def content_type_of(name: str) -> str:
    """The Content-Type for file `name` (an absolute path, so that `guess_type` never takes a
    name like "data:text/html,x" for a data URL)."""
    kind, encoding = mimetypes.guess_type(name)
    if encoding is not None:
        return COMPRESSED_TYPES.get(encoding, "application/octet-stream")
    if kind is None:
        return "application/octet-stream"
    if kind.startswith("text/") or kind in TEXT_TYPES:
        return kind + "; charset=utf-8"
    return kind


def parse_http_date(value: str) -> Optional[int]:
    """Seconds since the epoch of an HTTP-date (RFC 9110 §5.6.7), or None if it is not one."""
    try:
        moment = falcon.http_date_to_dt(value.strip(), obs_date=True)
    except ValueError:
        return None
    return calendar.timegm(moment.utctimetuple())  # naive (falcon 3) and aware alike are UTC


def parse_byte_range(value: str) -> Optional[tuple[Optional[int], Optional[int]]]:
    """(first, last) of a Range header asking for one byte range; None for anything else,
    which is then ignored (RFC 9110 §14.2): an unknown unit, a malformed or invalid range, or
    several ranges (the whole file is a valid answer to those, and saves multipart framing)."""
    unit, equals, ranges = value.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    specs = [spec.strip() for spec in ranges.split(",") if spec.strip()]
    match = BYTE_RANGE.fullmatch(specs[0]) if len(specs) == 1 else None
    if match is None or match.group(0) == "-":
        return None
    try:
        first, last = (int(text) if text else None for text in match.groups())
    except ValueError:  # more digits than int() accepts: no file is that large anyway
        return None
    if first is not None and last is not None and last < first:
        return None  # invalid byte-range-spec (§14.1.1)
    return first, last


def satisfiable_span(first: Optional[int], last: Optional[int],
                     size: int) -> Optional[tuple[int, int]]:
    """The inclusive (first, last) bytes of a size-byte file that a range selects, or None when
    it selects none (§14.1.1): it starts at or past the end, or is an empty suffix."""
    if first is None:  # "-n": the last n bytes (§14.1.2)
        assert last is not None, "a byte range has a first or a last position, or both"
        if last == 0 or size == 0:
            return None
        return max(0, size - last), size - 1
    if first >= size:
        return None
    return first, size - 1 if last is None else min(last, size - 1)


# -- conditional requests (RFC 9110 §13) -----------------------------------------------------

def _not_modified(req: falcon.Request, etag: str, seconds: int) -> bool:
    """If-None-Match decides when present; only without it is If-Modified-Since used
    (§13.2.2), and an unparsable date is ignored (§13.1.3)."""
    none_match = req.get_header("If-None-Match")
    if none_match is not None:
        return _tag_listed(none_match, etag)
    since = req.get_header("If-Modified-Since")
    when = parse_http_date(since) if since is not None else None
    return when is not None and seconds <= when


def _tag_listed(header: str, etag: str) -> bool:
    """Weak comparison (§13.1.2): a W/ prefix on either side does not matter; "*" matches."""
    if header.strip() == "*":
        return True
    return any(tag == etag for tag in OPAQUE_TAG.findall(header))


def _requested_span(req: falcon.Request, etag: str, seconds: int,
                    size: int) -> Optional[tuple[int, int]]:
    """The byte span to send (None: the whole file); raises 416 for an unsatisfiable range.
    Ranges apply to GET only (§14.2): HEAD gets the whole file's headers."""
    header = req.get_header("Range")
    if header is None or req.method != "GET":
        return None
    if not _if_range_holds(req.get_header("If-Range"), etag, seconds):
        return None  # the client's partial copy is stale: it needs the whole new file
    wanted = parse_byte_range(header)
    if wanted is None:
        return None
    span = satisfiable_span(*wanted, size)
    if span is None:
        raise falcon.HTTPRangeNotSatisfiable(size)  # with Content-Range: bytes */size
    return span


def _if_range_holds(value: Optional[str], etag: str, seconds: int) -> bool:
    """If-Range (§13.1.5): an entity tag must match strongly, so a weak one never does; a date
    must equal Last-Modified, and counts only if the file is a second older than now (a date
    cannot tell apart two versions written within the same second, §8.8.2.2)."""
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag
    when = parse_http_date(value)
    return when is not None and when == seconds and time.time() >= seconds + 1


# -- checks on names and files ---------------------------------------------------------------

def _is_plain_name(name: str) -> bool:
    """One visible path segment that can only name an entry of its own directory."""
    if not name:  # "//" in a path: os.path.join restarts at "/" for an absolute name
        return False
    if name.startswith("."):  # ".." climbs out of the root (traversal); ".git", ".env" hide
        return False
    if "/" in name or "\\" in name:  # separators: "\\" is one on Windows and to some proxies
        return False
    return "\0" not in name  # NUL cuts a name short in C (the "file.txt%00.png" trick)


def _has_encoded_separator(raw_path: str) -> bool:
    lowered = raw_path.lower()
    return any(encoded in lowered for encoded in ENCODED_SEPARATORS)


def _open_same_file(real: str, info: os.stat_result) -> BinaryIO:
    """Open the checked file unbuffered (reads take no more than asked), or 503 if it changed
    since it was checked. O_NOFOLLOW refuses a symlink swapped in for the last component;
    O_NONBLOCK keeps a FIFO swapped in from blocking the loop."""
    flags = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
             | getattr(os, "O_CLOEXEC", 0))
    try:
        fd = os.open(real, flags)
    except OSError:
        raise falcon.HTTPNotFound() from None
    try:
        now = os.fstat(fd)
        if (not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns)
                != (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)):
            # The headers were made from the checked file; another would not match them.
            raise falcon.HTTPServiceUnavailable(retry_after=1)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
