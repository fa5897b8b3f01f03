"""Load and abuse over real sockets: slowloris, a thousand clients at once, clients that vanish
or never read, random garbage, a pipelining flood.

After every scenario the server must still answer correctly and its resources must return to
where they were: open file descriptors and connections settle back to the baseline (polled
with a deadline), and repeating a scenario does not keep growing the process's memory. The
server runs in a thread of this process (`serve_in_thread`), so /proc/self counts both sides.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import gc
import logging
import os
import random
import re
import resource
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hio_http.testing import serve_in_thread

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024

# Growth of the process's RSS allowed between the 2nd and 3rd run of a scenario: the first
# runs warm caches and allocator pools; a leak shows up as steady growth after them.
RSS_GROWTH_LIMIT = 4 * MiB


# ---- the app under abuse ----------------------------------------------------------------------

class StreamBody:
    """A large streamed body of 64 KiB blocks; counts how many are open, to catch a server that
    forgets to call close() on an abandoned response."""

    BLOCK = b"s" * 65536
    open_count = 0

    def __init__(self, size: int):
        self.remaining = size
        StreamBody.open_count += 1
        self.closed = False

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        if self.remaining <= 0:
            raise StopIteration
        block = self.BLOCK if self.remaining >= len(self.BLOCK) else self.BLOCK[:self.remaining]
        self.remaining -= len(block)
        return block

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            StreamBody.open_count -= 1


def app(environ, start_response):
    """`/` ok; `/n/<k>?pad=<bytes>` k padded (512 bytes by default); `/stream/<size>` that many
    bytes, streamed; `/upload` the size of the request body."""
    path = environ["PATH_INFO"]
    if path.startswith("/n/"):
        pad = int(environ.get("QUERY_STRING", "").partition("pad=")[2] or 512)
        body = path[3:].encode().ljust(pad, b".")
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path.startswith("/stream/"):
        size = int(path[8:])
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return StreamBody(size)
    if path == "/upload":
        size = len(environ["wsgi.input"].read())
        body = str(size).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


# ---- measuring ----------------------------------------------------------------------------------

def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss() -> int:
    """Resident memory of this process (server thread included), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def settled_rss() -> int:
    """RSS once collectable garbage is gone and glibc has returned its free heap to the
    system, so what remains is memory still in use, not allocator slack."""
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)
    return rss()


try:
    _libc = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: RSS then includes the allocator's free pages
    _libc = None


def wait_for(condition, timeout: float, interval: float = 0.02) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; the last verdict."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return bool(condition())
        time.sleep(interval)
    return True


def get(server, target: str = "/", timeout: float = 5.0) -> tuple[bytes, float]:
    """One request on a fresh connection: (the whole response, seconds taken)."""
    started = time.monotonic()
    with socket.create_connection(server.address[:2], timeout=timeout) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                     % target.encode())
        data = receive_all(sock, timeout)
    return data, time.monotonic() - started


def receive_all(sock: socket.socket, timeout: float) -> bytes:
    """What arrives until the server closes, or until `timeout`."""
    return receive_until_closed(sock, timeout)[0]


def receive_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """(what arrived, whether the server closed: EOF or reset) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    chunks = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(262144)
        except socket.timeout:
            break
        except ConnectionResetError:
            return b"".join(chunks), True
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False


def assert_serves(server) -> float:
    """The server answers a plain GET correctly; returns how long it took."""
    data, elapsed = get(server)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nok"), data[:300]
    return elapsed


@dataclasses.dataclass
class Baseline:
    fds: int
    rss: int


def baseline(server) -> Baseline:
    """Resources once the server has answered a request (its loop and selector are up)."""
    assert_serves(server)
    assert wait_for(lambda: not server.stewards, 5)
    gc.collect()  # sockets an earlier test dropped without closing must not count here
    return Baseline(open_fds(), settled_rss())


def assert_settled(server, base: Baseline, timeout: float = 10.0) -> None:
    """Every connection closed, every descriptor released, the app's bodies closed, and the
    server still answers."""
    settled = wait_for(lambda: not server.stewards and open_fds() <= base.fds
                       and StreamBody.open_count == 0, timeout)
    assert settled, (f"not back to baseline after {timeout} s: {len(server.stewards)} "
                     f"connections, {open_fds()} fds (baseline {base.fds}), "
                     f"{StreamBody.open_count} response bodies never closed")
    assert_serves(server)
    assert wait_for(lambda: not server.stewards and open_fds() <= base.fds, timeout)


def repeat_checking_memory(scenario, server, base: Baseline, rounds: int = 3) -> list[int]:
    """Run `scenario()` `rounds` times, settling after each; RSS must stop growing."""
    sizes = []
    for _ in range(rounds):
        scenario()
        assert_settled(server, base)
        sizes.append(settled_rss())
    growth = sizes[-1] - sizes[-2]
    assert growth < RSS_GROWTH_LIMIT, (
        f"RSS grew {growth / MiB:.1f} MiB from run {rounds - 1} to {rounds}: "
        + ", ".join(f"{size / MiB:.1f}" for size in sizes) + " MiB")
    return sizes


def report(name: str, **figures) -> None:
    """Figures for the record (shown with pytest -s or -rP)."""
    print(f"\n[{name}] " + ", ".join(f"{key}={value}" for key, value in figures.items()))


@pytest.fixture
def server_errors():
    """Error records the server logs during a test: exceptions it caught must not be bugs of
    its own (a parser crash, an internal error)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Collect(logging.ERROR)
    hio_logger = logging.getLogger("hio_http")
    hio_logger.addHandler(handler)
    yield records
    hio_logger.removeHandler(handler)


def describe(records) -> str:
    return "\n".join(f"{record.name}: {record.getMessage()}" for record in records[:5])


@pytest.fixture(autouse=True)
def no_stream_bodies_left():
    StreamBody.open_count = 0
    yield


# ---- many nonblocking clients from one thread ---------------------------------------------------

@dataclasses.dataclass
class Exchange:
    """One client connection: what to send, how to end, and what came back."""

    payload: bytes
    shut_write: bool = False  # half-close after sending
    read_limit: int | None = None  # stop reading (and reset) after this many bytes
    data: bytearray = dataclasses.field(default_factory=bytearray)
    ending: str = ""  # "eof", "reset", "timeout" or "limit"
    elapsed: float = 0.0
    sock: socket.socket | None = None
    sent: int = 0
    started: float = 0.0


def run_exchanges(address, exchanges: list[Exchange], timeout: float = 20.0) -> None:
    """Connect all `exchanges` at once, send each payload, read until the server closes.

    Everything is nonblocking and multiplexed on one selector, so a thousand clients cost one
    thread; each connection that has not ended when `timeout` passes is marked "timeout".
    """
    selector = selectors.DefaultSelector()
    started = time.monotonic()
    open_count = 0
    try:
        for exchange in exchanges:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            exchange.sock, exchange.started = sock, time.monotonic()
            error = sock.connect_ex(address)
            if error not in (0, errno.EINPROGRESS):
                raise OSError(error, os.strerror(error))
            selector.register(sock, selectors.EVENT_WRITE, exchange)
            open_count += 1
        deadline = started + timeout
        while open_count and time.monotonic() < deadline:
            for key, mask in selector.select(timeout=0.05):
                exchange = key.data
                if mask & selectors.EVENT_WRITE:
                    _send_some(selector, exchange)
                if mask & selectors.EVENT_READ or exchange.ending:
                    if exchange.ending or _receive_some(exchange):
                        selector.unregister(exchange.sock)
                        _end(exchange)
                        open_count -= 1
    finally:
        for exchange in exchanges:
            if exchange.sock is not None:
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(exchange.sock)
                exchange.ending = exchange.ending or "timeout"
                _end(exchange)
        selector.close()


def _send_some(selector, exchange: Exchange) -> None:
    sock = exchange.sock
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        exchange.ending = "reset"
        return
    try:
        exchange.sent += sock.send(exchange.payload[exchange.sent:])
    except BlockingIOError:
        return
    except (BrokenPipeError, ConnectionResetError):
        # The server answered and closed before taking everything: read what it said.
        exchange.sent = len(exchange.payload)
    if exchange.sent >= len(exchange.payload):
        if exchange.shut_write:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        selector.modify(sock, selectors.EVENT_READ, exchange)


def _receive_some(exchange: Exchange) -> bool:
    """Read what is ready; True once the exchange has ended."""
    try:
        chunk = exchange.sock.recv(262144)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        exchange.ending = "reset"
        return True
    if not chunk:
        exchange.ending = "eof"
        return True
    exchange.data += chunk
    if exchange.read_limit is not None and len(exchange.data) >= exchange.read_limit:
        exchange.ending = "limit"
        return True
    return False


def _end(exchange: Exchange) -> None:
    if exchange.sock is None:
        return
    if exchange.ending in ("limit", "timeout"):
        reset(exchange.sock)
    exchange.sock.close()
    exchange.sock = None
    exchange.elapsed = time.monotonic() - exchange.started


def reset(sock: socket.socket) -> None:
    """Make close() send RST instead of FIN (SO_LINGER on, zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def parse_responses(data: bytes) -> list[tuple[int, dict, bytes]]:
    """Split a stream of Content-Length framed responses: [(status, headers, body)]."""
    responses = []
    position = 0
    while position < len(data):
        end = data.index(b"\r\n\r\n", position)
        lines = data[position:end].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        body = data[end + 4:end + 4 + length]
        assert len(body) == length, f"response {len(responses)} cut short"
        responses.append((status, headers, body))
        position = end + 4 + length
    return responses


# ---- slowloris ---------------------------------------------------------------------------------

SLOW_REQUEST = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Drip: " + b"d" * 200


def drip(address, count: int, interval: float, limit: float) -> list[tuple[float, bytes]]:
    """`count` connections each sending one header byte every `interval` seconds until the
    server closes them; returns (seconds from the first byte to the close, bytes received) per
    connection, or (inf, ...) for those still open after `limit` seconds."""
    socks = [socket.create_connection(address, timeout=5) for _ in range(count)]
    selector = selectors.DefaultSelector()
    received = {sock: bytearray() for sock in socks}
    closed_after: dict = {}
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    first = time.monotonic()
    position, next_drip = 0, first
    try:
        while len(closed_after) < count and time.monotonic() - first < limit:
            now = time.monotonic()
            if now >= next_drip:
                byte = SLOW_REQUEST[position:position + 1]
                position = min(position + 1, len(SLOW_REQUEST) - 1)
                next_drip += interval
                for sock in socks:
                    if sock not in closed_after:
                        with contextlib.suppress(OSError):
                            sock.send(byte)
            for key, _ in selector.select(timeout=max(0.0, min(0.02, next_drip - now))):
                sock = key.fileobj
                try:
                    chunk = sock.recv(4096)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    received[sock] += chunk
                else:
                    closed_after[sock] = time.monotonic() - first
                    selector.unregister(sock)
    finally:
        selector.close()
        for sock in socks:
            sock.close()
    return [(closed_after.get(sock, float("inf")), bytes(received[sock])) for sock in socks]


@pytest.mark.slow
def test_slowloris_is_cut_off_while_others_are_served(server_errors):
    header_timeout = 1.0
    with serve_in_thread(app, header_timeout=header_timeout) as server:
        base = baseline(server)
        slack = server.sweep_interval + 1.0  # one sweep, plus scheduling on a busy machine
        latencies: list[float] = []
        last: dict = {}

        def one_round():
            results: list = []
            dripper = threading.Thread(target=lambda: results.extend(
                drip(server.address[:2], 200, 0.2, header_timeout + slack + 3)))
            dripper.start()
            time.sleep(0.2)  # let the slow connections open and start dripping
            while dripper.is_alive():
                latencies.append(assert_serves(server))
                time.sleep(0.02)
            dripper.join()
            closed = [after for after, _ in results]
            assert len(closed) == 200
            assert max(closed) <= header_timeout + slack, sorted(closed)[-5:]
            assert min(closed) >= header_timeout - 0.1, sorted(closed)[:5]
            for _, data in results:  # 408 then close, or just the close
                assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data[:100]
            last["closed"] = closed
            last["answered"] = sum(data.startswith(b"HTTP/1.1 408 ") for _, data in results)

        sizes = repeat_checking_memory(one_round, server, base)
        assert max(latencies) < 0.5, f"a normal request took {max(latencies):.3f} s"
        report("slowloris", connections=200, normal_requests=len(latencies),
               max_latency=f"{max(latencies) * 1000:.1f}ms",
               closed_after=f"{min(last['closed']):.2f}-{max(last['closed']):.2f}s",
               got_408=last["answered"], fds=f"{base.fds}->{open_fds()}",
               rss_mib=[round(size / MiB, 1) for size in [base.rss] + sizes])
    assert not server_errors, describe(server_errors)


# ---- a thousand clients at once ----------------------------------------------------------------

@pytest.fixture
def descriptors():
    """Enough file descriptors for both ends of 1,000 connections in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2600
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
def test_thousand_concurrent_clients_all_get_their_answer(descriptors, server_errors):
    count = 1000
    with serve_in_thread(app) as server:
        base = baseline(server)
        exchanges = [Exchange(b"GET /n/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % i)
                     for i in range(count)]
        peak, running = [0], threading.Event()

        def watch():  # how many connections the server really held at once
            while not running.wait(0.002):
                peak[0] = max(peak[0], len(server.stewards))

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.monotonic()
        try:
            run_exchanges(server.address[:2], exchanges, timeout=40)
        finally:
            elapsed = time.monotonic() - started
            running.set()
            watcher.join()
        endings = {exchange.ending for exchange in exchanges}
        for index, exchange in enumerate(exchanges):
            [(status, headers, body)] = parse_responses(bytes(exchange.data))
            assert status == 200 and body == str(index).encode().ljust(512, b"."), index
            assert headers["connection"] == "close"
        assert_settled(server, base)
        report("1000 clients", seconds=f"{elapsed:.2f}", endings=sorted(endings),
               peak_connections=peak[0],
               slowest=f"{max(e.elapsed for e in exchanges):.2f}s",
               fds=f"{base.fds}->{open_fds()}",
               rss_mib=f"{base.rss / MiB:.1f}->{rss() / MiB:.1f}")
    assert elapsed < 30
    assert not server_errors, describe(server_errors)


# ---- clients that vanish -----------------------------------------------------------------------

def test_clients_vanishing_mid_body_and_mid_response_leak_nothing(server_errors):
    # A small spill threshold puts the unfinished bodies in temporary files: descriptors that
    # leak if an abandoned request is not cleaned up.
    with serve_in_thread(app, spill_threshold=16 * 1024) as server:
        base = baseline(server)
        head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"
        chunked = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

        def one_round():
            # Half-closed (FIN) mid-body, with a Content-Length and with chunked framing.
            abandoned = [Exchange(head + b"u" * 100000, shut_write=True) for _ in range(20)]
            abandoned += [Exchange(chunked + b"8000\r\n" + b"c" * 0x8000 + b"\r\n4000\r\nc",
                                   shut_write=True) for _ in range(10)]
            run_exchanges(server.address[:2], abandoned, timeout=10)
            for exchange in abandoned:  # closed, perhaps after a 400: never answered as whole
                assert exchange.ending in ("eof", "reset")
                assert exchange.data == b"" or exchange.data.startswith(b"HTTP/1.1 4")
            # Reset (RST) mid-body.
            reset_mid_body(server.address[:2], head + b"u" * 100000, 20)
            # Reset mid-response, after reading 100 kB of a 20 MiB stream.
            streams = [Exchange(b"GET /stream/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (20 * MiB),
                                read_limit=100000) for _ in range(20)]
            run_exchanges(server.address[:2], streams, timeout=10)
            assert all(exchange.ending == "limit" for exchange in streams)
            assert all(exchange.data.startswith(b"HTTP/1.1 200 OK") for exchange in streams)

        sizes = repeat_checking_memory(one_round, server, base)
        report("vanishing clients", fds=f"{base.fds}->{open_fds()}",
               rss_mib=[round(size / MiB, 1) for size in [base.rss] + sizes])
    assert not server_errors, describe(server_errors)


def test_reset_mid_response_is_not_an_internal_error(server_errors):
    """A reset while the response streams closes the connection from inside the responder's
    pump; that is the client's doing, not an internal error to log with a traceback."""
    with serve_in_thread(app) as server:
        base = baseline(server)
        sock = socket.create_connection(server.address[:2], timeout=5)
        sock.sendall(b"GET /stream/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (20 * MiB))
        received = 0
        while received < 100000:
            received += len(sock.recv(65536))
        reset(sock)
        sock.close()
        assert_settled(server, base)
    assert not server_errors, describe(server_errors)


def reset_mid_body(address, payload: bytes, count: int) -> None:
    """`count` clients that send `payload` (a head and part of its body) and then reset."""
    for _ in range(count):
        sock = socket.create_connection(address, timeout=5)
        sock.sendall(payload)
        reset(sock)
        sock.close()


def test_half_closed_client_still_gets_the_whole_response():
    """A client may shut down its sending side right after its request (RFC 9112 §9.6); the
    answer it is owed must still arrive whole."""
    size = 48 * 1024  # one pull, under high_water: the app is done before the client reads
    with serve_in_thread(app) as server:
        base = baseline(server)
        # Small kernel buffers on both ends (accepted sockets inherit the listener's), so
        # part of the answer must wait in the server's own send buffer, deterministically.
        server.acceptor.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect(server.address[:2])
        with sock:
            sock.sendall(b"GET /stream/%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
            sock.shutdown(socket.SHUT_WR)
            time.sleep(0.3)  # the server has answered as far as the buffers let it
            data, closed = receive_until_closed(sock, 10)
        head, _, body = data.partition(b"\r\n\r\n")
        assert_settled(server, base)
    assert head.startswith(b"HTTP/1.1 200 OK") and closed
    assert len(body) == size, f"{size - len(body)} of {size} bytes lost"


def test_endless_chunk_extension_is_cut_off():
    """Bytes of one chunk-size line never reach the body, so max_body never sees them, and
    each arrival looks like progress to body_timeout: a bound of its own must stop them
    (the attack of CVE-2024-22019 in Node.js)."""
    with serve_in_thread(app, body_timeout=1.0, max_body=64 * 1024) as server:
        base = baseline(server)
        sock = socket.create_connection(server.address[:2], timeout=5)
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;")
        started, sent, refused = time.monotonic(), 0, False
        try:
            while time.monotonic() - started < 3 and sent < 64 * MiB:
                sock.sendall(b"e" * 65536)  # 65 KiB a time: no pause the body timeout sees
                sent += 65536
                time.sleep(0.005)
        except socket.timeout:
            pass  # the server stopped reading but kept the connection: not a refusal
        except OSError:
            refused = True
        reset(sock)
        sock.close()
        report("endless chunk extension", sent_mib=round(sent / MiB, 1), refused=refused,
               seconds=round(time.monotonic() - started, 2))
        assert_settled(server, base)
    assert refused, f"{sent} bytes of one chunk extension were read (max_body=64 KiB)"


# ---- clients that never read -------------------------------------------------------------------

def test_clients_that_never_read_are_dropped_at_the_write_deadline(server_errors):
    write_timeout, size, clients = 1.0, 50 * MiB, 5
    with serve_in_thread(app, write_timeout=write_timeout) as server:
        base = baseline(server)
        dropped_after: list[float] = []
        peaks: list[int] = []

        def one_round():
            socks = []
            for _ in range(clients):
                sock = socket.create_connection(server.address[:2], timeout=5)
                sock.sendall(b"GET /stream/%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
                socks.append(sock)
            started, peak = time.monotonic(), rss()
            assert wait_for(lambda: len(server.stewards) == clients, 5)

            def gone():
                nonlocal peak
                peak = max(peak, rss())
                return not server.stewards

            assert wait_for(gone, write_timeout + 5), "a client that never reads was kept"
            dropped_after.append(time.monotonic() - started)
            peaks.append(peak)
            for sock in socks:  # what the kernel buffered, then the end: far short of 50 MiB
                data, closed = receive_until_closed(sock, 5)
                assert closed and len(data) < size // 4, (closed, len(data))
                sock.close()

        sizes = repeat_checking_memory(one_round, server, base)
        report("never-reading clients", dropped_after=[round(t, 2) for t in dropped_after],
               peak_rss_over_baseline_mib=round((max(peaks) - base.rss) / MiB, 1),
               fds=f"{base.fds}->{open_fds()}",
               rss_mib=[round(size / MiB, 1) for size in [base.rss] + sizes])
        assert min(dropped_after) >= write_timeout - 0.1
        assert max(dropped_after) <= write_timeout + server.sweep_interval + 2.0
        # Five unread 50 MiB responses: only the high-water mark of each is ever buffered.
        assert max(peaks) - base.rss < 32 * MiB
    assert not server_errors, describe(server_errors)


# ---- random garbage ----------------------------------------------------------------------------

VALID = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\nT: v\r\n\r\n",
    b"GET /n/7?q=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
]
PIECES = [b"GET", b"POST", b"HEAD", b"PRI", b" ", b"/", b"*", b"HTTP/1.1", b"HTTP/1.0",
          b"HTTP/2.0", b"\r\n", b"\n", b"\r", b":", b"Host", b"Content-Length", b"-1", b"99",
          b"Transfer-Encoding", b"chunked", b"Connection", b"close", b"Expect",
          b"100-continue", b"Upgrade", b"0", b"ffffffffffffffff", b"\x00", b"\xff", b"\t",
          b";ext=1", b"%00", b"#frag"]


def garbage(rng: random.Random) -> tuple[str, bytes]:
    """Seeded hostile bytes of three kinds: noise, mutated requests, grammar-shaped junk."""
    kind = rng.choice(("noise", "mutant", "pieces"))
    if kind == "noise":
        return kind, rng.randbytes(rng.randint(1, 400))
    if kind == "mutant":
        data = bytearray(rng.choice(VALID))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            action = rng.randrange(4)
            if action == 0:
                data[at] = rng.randrange(256)
            elif action == 1:
                data[at:at] = rng.randbytes(rng.randint(1, 8))
            elif action == 2:
                del data[at:at + rng.randint(1, 8)]
            else:
                data[at:at] = rng.choice(PIECES)
        return kind, bytes(data)
    return kind, b"".join(rng.choice(PIECES) for _ in range(rng.randint(1, 30)))


STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")


@pytest.mark.slow
def test_random_garbage_gets_an_error_or_a_close_never_a_hang(server_errors):
    rng = random.Random(20240607)
    with serve_in_thread(app, header_timeout=1.0, body_timeout=1.0, idle_timeout=1.0) as server:
        base = baseline(server)
        statuses: dict[int, int] = {}
        slowest: list[float] = []

        def one_round():
            cases = [garbage(rng) for _ in range(300)]
            # Half the clients half-close after their bytes, half wait for a deadline to end it.
            exchanges = [Exchange(data, shut_write=index % 2 == 0)
                         for index, (_, data) in enumerate(cases)]
            run_exchanges(server.address[:2], exchanges, timeout=8)
            assert_serves(server)
            for (kind, data), exchange in zip(cases, exchanges):
                assert exchange.ending in ("eof", "reset"), (kind, data, exchange.ending)
                answer = bytes(exchange.data)
                codes = [int(code) for code in STATUS_LINE.findall(answer)]
                if answer:
                    assert STATUS_LINE.match(answer), (kind, data, answer[:200])
                if kind == "noise" and codes:
                    assert codes[0] >= 400, (data, answer[:200])
                for code in codes:
                    statuses[code] = statuses.get(code, 0) + 1
                if codes and codes[-1] >= 400:
                    last = answer[answer.rindex(b"HTTP/1.1 %d " % codes[-1]):]
                    assert b"\r\nConnection: close\r\n" in last.split(b"\r\n\r\n")[0] + b"\r\n"
            slowest.append(max(exchange.elapsed for exchange in exchanges))

        sizes = repeat_checking_memory(one_round, server, base)
        report("garbage", connections=900, statuses=dict(sorted(statuses.items())),
               slowest=f"{max(slowest):.2f}s", fds=f"{base.fds}->{open_fds()}",
               rss_mib=[round(size / MiB, 1) for size in [base.rss] + sizes])
        assert set(statuses) <= {200, 400, 408, 413, 414, 417, 431, 501, 505}, statuses
    assert not server_errors, describe(server_errors)


# How far past max_pipeline parsed requests may pile up: the server parses what arrived in
# slices, and one slice (a few KiB) of the smallest requests (~18 bytes) may complete at once.
# Parsing a whole receive (256 KiB) at once would let thousands pile up.
QUEUE_SLACK = 256


# ---- a pipelining flood ------------------------------------------------------------------------

def test_pipelining_flood_is_answered_in_order_without_unbounded_buffering(server_errors):
    count, max_pipeline, pad = 5000, 16, 4096
    with serve_in_thread(app, max_pipeline=max_pipeline) as server:
        base = baseline(server)
        queued_peaks: list[int] = []

        def one_round():
            # 5,000 answers of 4 KiB: 20 MiB, far more than the kernel buffers, so the server
            # must stop writing, then stop reading, until the client reads.
            requests_ = b"".join(b"GET /n/%d?pad=%d HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n"
                                 % (i, pad, b"p" * 200) for i in range(count - 1))
            requests_ += (b"GET /n/%d?pad=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                          % (count - 1, pad))
            sock = socket.create_connection(server.address[:2], timeout=30)
            sender = threading.Thread(target=sock.sendall, args=(requests_,))
            sender.start()
            queued = 0
            until = time.monotonic() + 1.0  # a while without reading a byte
            while time.monotonic() < until:
                for steward in list(server.stewards):
                    queued = max(queued, len(steward.requestant.requests))
                time.sleep(0.005)
            queued_peaks.append(queued)
            data = receive_all(sock, 30)
            sender.join(10)
            sock.close()
            responses = parse_responses(data)
            assert len(responses) == count
            for index, (status, _, body) in enumerate(responses):
                assert status == 200 and body == str(index).encode().ljust(pad, b"."), index

        sizes = repeat_checking_memory(one_round, server, base)
        report("pipelining flood", requests=count, max_queued=max(queued_peaks),
               fds=f"{base.fds}->{open_fds()}",
               rss_mib=[round(size / MiB, 1) for size in [base.rss] + sizes])
        # Parsing stopped at the limit and reading paused: 1.2 MB of requests wait as bytes.
        assert max(queued_peaks) <= max_pipeline + QUEUE_SLACK
    assert not server_errors, describe(server_errors)


def test_pipelined_requests_queue_no_further_than_max_pipeline():
    """Tiny pipelined requests cost ~20x their wire size once parsed: parsing must stop near
    max_pipeline, not at the end of whatever one receive brought."""
    connections, max_pipeline = 20, 16
    # A response the client never reads blocks the connection; thousands of tiny requests
    # follow it, and the server should park them as bytes, not as parsed requests.
    payload = b"GET /stream/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (64 * MiB)
    payload += b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * (256 * 1024 // 27)
    with serve_in_thread(app, max_pipeline=max_pipeline) as server:
        base = baseline(server)
        socks = []
        try:
            for _ in range(connections):
                sock = socket.create_connection(server.address[:2], timeout=5)
                sock.sendall(payload)
                socks.append(sock)
            time.sleep(0.5)
            queued = max(len(steward.requestant.requests) for steward in list(server.stewards))
            growth = rss() - base.rss
            report("pipelined queue", connections=connections, max_queued=queued,
                   rss_growth_mib=round(growth / MiB, 1))
        finally:
            for sock in socks:
                reset(sock)
                sock.close()
        assert_settled(server, base)
    assert queued <= max_pipeline + QUEUE_SLACK
    assert growth < 16 * MiB  # unbounded parsing cost about 3 MiB per connection


# ---- the soak, briefly -------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("threads", [0, 4])
def test_soak_briefly(threads):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "soak" / "soak.py"),
                             "--seconds", "8", "--threads", str(threads)], cwd=ROOT,
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "errors: 0" in result.stdout
    assert re.search(r"threads: (\d+) -> \1 ", result.stdout), result.stdout
