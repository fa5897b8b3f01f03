"""Every setting of a server, with its default and a line of help: one table that the servers,
the command line, environment variables and config files all read.

Times are seconds, sizes bytes. Nothing here opens sockets or reads files.
"""

from __future__ import annotations

import dataclasses
import ssl
from typing import Any, Optional

from .compression import Compression
from .request import Limits

# the request bounds' defaults, read from an instance: a compiled Limits has no class-level values
DEFAULT_LIMITS = Limits()


def setting(default: Any, help: str, *, cli: bool = True) -> Any:
    """A field of Settings: its default, its help line, and whether the command line offers it."""
    return dataclasses.field(default=default, metadata={"help": help, "cli": cli})


@dataclasses.dataclass
class Settings:
    """The settings of a server (`Server(app, **settings)`), each with its default."""

    host: str = setting("127.0.0.1", 'address to listen on ("::1" or "::" for IPv6)')
    port: int = setting(0, "port to listen on; 0 picks a free one (see Server.address)")
    unix: Optional[str] = setting(None, "listen on this unix socket path instead of host:port")
    binds: tuple = setting((), "further addresses: (host, port) pairs or unix paths", cli=False)
    ssl_context: Optional[ssl.SSLContext] = setting(None, "serve TLS with this context", cli=False)
    root_path: str = setting("", "SCRIPT_NAME prefix the app is mounted under")
    backlog: int = setting(1024, "kernel queue of connections not yet accepted")
    reuse_port: bool = setting(False, "set SO_REUSEPORT on listening sockets")
    max_connections: int = setting(1000, "beyond this, new connections wait in the backlog")
    max_pipeline: int = setting(16, "parsed requests queued per connection before reading pauses")
    idle_timeout: float = setting(75.0, "close a keep-alive connection idle this long")
    header_timeout: float = setting(10.0, "from a request's first byte to the end of its head")
    body_timeout: float = setting(30.0, "longest pause while a request body arrives")
    write_timeout: float = setting(60.0, "longest a client may leave the send buffer undrained")
    handshake_timeout: float = setting(10.0, "time allowed for a TLS handshake")
    graceful_timeout: float = setting(30.0, "on shutdown, time allowed for in-flight requests")
    drain_window: float = setting(5.0, "on shutdown, how long idle keep-alive connections "
                                       "stay open, answering what still comes with "
                                       "Connection: close (make it longer than a load "
                                       "balancer takes to mark the server down)")
    sweep_interval: float = setting(0.5, "deadlines are met within this (the least time between "
                                    "two sweeps of them)")
    high_water: int = setting(64 * 1024, "pull no more response body while this much is unsent")
    max_request_line: int = setting(DEFAULT_LIMITS.max_request_line, "longest request line (414)")
    max_header_bytes: int = setting(DEFAULT_LIMITS.max_header_bytes,
                                    "largest header section (431)")
    max_header_count: int = setting(DEFAULT_LIMITS.max_header_count, "most header fields (431)")
    max_body: int = setting(DEFAULT_LIMITS.max_body, "largest request body (413)")
    spill_threshold: int = setting(DEFAULT_LIMITS.spill_threshold,
                                   "request bodies larger than this wait in a temporary file")
    server_header: str = setting("hio_http", 'Server header value ("" sends none)')
    forwarded_allow_ips: str = setting(
        "127.0.0.1,::1", "peers (IPs or CIDR, '*' for all) whose Forwarded / X-Forwarded-* "
        "headers and PROXY protocol lines are trusted; from others they are removed")
    proxy_protocol: bool = setting(False, "expect a PROXY protocol v1/v2 header from trusted "
                                          "peers before HTTP")
    access_log: bool = setting(False, "log one line per response to the hio_http.access logger",
                               cli=False)
    access_log_format: str = setting("combined", 'access log format: "common", "combined" or '
                                                 "a template with {fields}")
    compress: bool = setting(False, "gzip text, JSON, JavaScript, XML and SVG responses for "
                                    "clients that accept it")
    compress_min_size: int = setting(1024, "responses known to be smaller than this are not "
                                           "compressed")
    compress_level: int = setting(1, "gzip level, 1 (fastest; nearly as small for "
                                        "typical answers) to 9 (smallest)")
    ws_max_message: int = setting(1 << 20, "largest WebSocket message, reassembled and "
                                           "decompressed (bigger: close 1009)")
    ws_max_queue: int = setting(1 << 20, "bytes that may wait unsent to a WebSocket client "
                                         "before send() refuses and closes it (1008)")
    ws_ping_interval: float = setting(20.0, "ping a WebSocket client not heard from this long")
    ws_ping_timeout: float = setting(20.0, "close a WebSocket whose pong, or closing "
                                           "handshake, is this late")
    ws_compression: bool = setting(True, "accept permessage-deflate from WebSocket clients")
    threads: int = setting(0, "run WSGI app calls and the pulling of their bodies on a pool of "
                              "this many threads (0: on the loop, for cooperative apps)")
    thread_queue: int = setting(64, "app calls that may wait for a free thread; beyond this, "
                                    "connections with a request waiting stop being read")
    stall_warning: float = setting(0.5, "warn when one app call, body pull or doer turn holds "
                                        "the loop this long (0: off)")
    timeout: float = setting(30.0, "a worker whose loop has not turned this long is killed and "
                                   "replaced; an app thread busy this long has its stack logged "
                                   "(0: off)")

    def __post_init__(self) -> None:
        """Check every value now, so that a mistake is named where it is made."""
        for field in dataclasses.fields(self):
            check(field.name, getattr(self, field.name), str(field.type))

    def limits(self) -> Limits:
        return Limits(max_request_line=self.max_request_line,
                      max_header_bytes=self.max_header_bytes,
                      max_header_count=self.max_header_count, max_body=self.max_body,
                      spill_threshold=self.spill_threshold)

    def compression(self) -> Compression:
        """The response compression policy these settings describe (raises ValueError)."""
        return Compression(min_size=self.compress_min_size, level=self.compress_level)


# The range of each number that may not take any value from 0 up (the others may).
RANGES: dict = {
    "port": (0, 65535), "backlog": (1, None), "max_connections": (1, None),
    "max_pipeline": (1, None), "high_water": (1, None), "max_request_line": (1, None),
    "max_header_count": (1, None), "thread_queue": (1, None), "compress_level": (1, 9),
}
# Seconds that must be above 0: a deadline of no time at all would close every connection.
POSITIVE = frozenset({"idle_timeout", "header_timeout", "body_timeout", "write_timeout",
                      "handshake_timeout", "sweep_interval", "ws_ping_interval",
                      "ws_ping_timeout"})


def check(name: str, value: Any, kind: str) -> None:
    """Raise ValueError naming the setting and what it accepts, unless `value` fits `kind`."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, not {value!r}")
    elif kind in ("int", "float"):
        _check_number(name, value, kind == "int")
    elif kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text, not {value!r}")
    elif kind == "Optional[str]":
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be text or None, not {value!r}")
    elif kind == "tuple":
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"{name} must be a list of addresses, not {value!r}")
    elif kind == "Optional[ssl.SSLContext]":
        if value is not None and not isinstance(value, ssl.SSLContext):
            raise ValueError(f"{name} must be an ssl.SSLContext or None, not {value!r}")


def _check_number(name: str, value: Any, whole: bool) -> None:
    least, most = RANGES.get(name, (0, None))
    if whole:
        what = f"a whole number from {least}" + (f" to {most}" if most is not None else " up")
        fits = isinstance(value, int) and not isinstance(value, bool)
    elif name in POSITIVE:
        what = "a number of seconds above 0"
        fits = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    else:
        what = "a number of seconds, 0 or more"
        fits = isinstance(value, (int, float)) and not isinstance(value, bool)
    if fits and (value != value or value < least or (most is not None and value > most)):
        fits = False  # NaN, or out of range
    if not fits:
        raise ValueError(f"{name} must be {what}, not {value!r}")


def fields() -> list:
    """The Settings fields, in order."""
    return list(dataclasses.fields(Settings))
