"""Instructions per request of a server, counted by valgrind (callgrind): independent of load, so
changes can be compared on a busy machine where req/s figures swing.

    python scripts/bench/instructions.py                       # hio_http CLI, /hello, c=10
    python scripts/bench/instructions.py --path /json --connections 1
    python scripts/bench/instructions.py --path /json --header "Accept-Encoding: gzip" \
        -- python client_streams.py --serve --port {port}      # the 11 KiB JSON, gzipped
    python scripts/bench/instructions.py -- python host_bjoern.py --port {port}

The server runs under `valgrind --tool=callgrind` twice, answering `--requests` and then three
times as many keep-alive GETs from this process; the difference of the two totals divided by
the difference of the counts is the cost of one request, start-up and shutdown cancelled out.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server did not listen on {port}")


def drive(port: int, path: str, connections: int, requests: int, close: bool,
          headers: list) -> None:
    """Send `requests` GETs over `connections` keep-alive connections, one in flight on each
    (as wrk does), and read every response whole (Content-Length framing)."""
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               + "".join(f"{header}\r\n" for header in headers)
               + ("Connection: close\r\n" if close else "") + "\r\n").encode()
    selector = selectors.DefaultSelector()
    left = requests

    def connect():
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def begin(sock):
        nonlocal left
        left -= 1
        sock.sendall(request)
        selector.register(sock, selectors.EVENT_READ, bytearray())

    for _ in range(min(connections, requests)):
        begin(connect())
    done = 0
    while done < requests:
        for key, _ in selector.select(60):
            sock, buffer = key.fileobj, key.data
            data = sock.recv(65536)
            if not data:
                raise SystemExit("server closed a connection early")
            buffer += data
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                continue
            length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", buffer[:end + 2])[1])
            if len(buffer) < end + 4 + length:
                continue
            done += 1
            selector.unregister(sock)
            if close:
                sock.close()
            if left > 0:
                begin(connect() if close else sock)
            elif not close:
                sock.close()


def count(command: list, path: str, connections: int, requests: int, close: bool,
          headers: list) -> int:
    """Total instructions of one server run that answered `requests` requests."""
    port = free_port()
    argv = [arg.replace("{port}", str(port)) for arg in command]
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "callgrind.out")
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
            cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            wait_listening(port, time.monotonic() + 120)
            drive(port, path, connections, requests, close, headers)
        finally:
            os.killpg(server.pid, signal.SIGINT)
            _, errors = server.communicate(timeout=120)
        match = re.search(rb"Collected : (\d+)", errors)
        if match is None:
            raise SystemExit(errors.decode(errors="replace")[-2000:])
        return int(match[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/hello")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--close", action="store_true", help="Connection: close requests")
    parser.add_argument("--header", action="append", default=[],
                        help='a request header field, e.g. "Accept-Encoding: gzip" (repeatable)')
    parser.add_argument("command", nargs="*", help="server argv ({port} is replaced); default: "
                        "this interpreter's hio_http CLI serving apps:app")
    options = parser.parse_args()
    command = options.command or [sys.executable, "-m", "hio_http", "--bind",
                                  "127.0.0.1:{port}", "apps:app"]
    few = count(command, options.path, options.connections, options.requests, options.close,
                options.header)
    many = count(command, options.path, options.connections, 3 * options.requests,
                 options.close, options.header)
    per_request = (many - few) / (2 * options.requests)
    print(f"{per_request:,.0f} instructions per request ({options.path}, "
          f"c={options.connections}{', close' if options.close else ''}"
          f"{''.join(', ' + header for header in options.header)})")


if __name__ == "__main__":
    main()
