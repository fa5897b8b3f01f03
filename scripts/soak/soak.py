"""Soak the hio_http command line with mixed traffic and watch its memory.

    python scripts/soak/soak.py [--seconds 60] [--threads 4]

Starts `python -m hio_http --bind 127.0.0.1:0 soak_app:app` as a subprocess, drives it from a few
client threads (requests sessions and fresh connections, raw sockets with keep-alive, close and
pipelining), samples the server's RSS and thread count every second from /proc/PID/status,
and prints a report. With --threads N the app runs on the server's pool of N threads.
Exits 1 on any error, if RSS grew more than --max-growth-mib after the warm-up, or if the
server's threads or descriptors grew.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import soak_app  # noqa: E402  (the expected bodies)

MiB = 1024 * 1024
UPLOAD = os.urandom(256 * 1024)
DOWNLOAD = soak_app.BLOCK * soak_app.DOWNLOAD_BLOCKS
TIMEOUT = 15.0


class Tally:
    """Counts of requests by kind and the errors seen, shared by the client threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()
        self.errors: list[str] = []

    def ok(self, kind: str, count: int = 1) -> None:
        with self.lock:
            self.counts[kind] += count

    def error(self, kind: str, message: str) -> None:
        with self.lock:
            self.errors.append(f"{kind}: {message}")


# ---- the server --------------------------------------------------------------------------------

def start_server(threads: int = 0) -> tuple[subprocess.Popen, str, collections.deque]:
    """Start the CLI on a free port; returns the process, its URL and its latest log lines."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hio_http", "--bind", "127.0.0.1:0", "--threads", str(threads),
         "soak_app:app"],
        cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log: collections.deque = collections.deque(maxlen=200)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        log.append(line)
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if match:
            # Keep reading its log so the pipe never fills and blocks the server.
            threading.Thread(target=lambda: log.extend(process.stderr), daemon=True).start()
            return process, match.group(1), log
    process.kill()
    raise SystemExit("soak: the server did not start:\n" + "".join(log))


def stop_server(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return -9


def rss_of(pid: int) -> int:
    return _status_field(pid, "VmRSS:") * 1024


def threads_of(pid: int) -> int:
    return _status_field(pid, "Threads:")


def _status_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(name):
                return int(line.split()[1])
    raise RuntimeError(f"no {name} in /proc/{pid}/status")


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---- clients -----------------------------------------------------------------------------------

def check_kind(kind: str, response: requests.Response) -> None:
    """Raise AssertionError unless `response` is the right answer to a request of `kind`."""
    assert response.status_code == 200, f"status {response.status_code}"
    if kind == "small":
        assert response.content == soak_app.SMALL
    elif kind == "json":
        assert response.json()["numbers"] == list(range(20))
    elif kind == "upload":
        assert response.json() == {"size": len(UPLOAD)}
    elif kind == "download":
        assert response.content == DOWNLOAD, f"{len(response.content)} bytes"
    elif kind == "long-poll":
        assert response.content == b"done\n"


def call(http, base: str, kind: str, **kwa) -> requests.Response:
    if kind == "upload":
        return http.post(base + "/upload", data=UPLOAD, timeout=TIMEOUT, **kwa)
    path = {"small": "/small", "json": "/json?x=1", "download": "/download",
            "long-poll": "/longpoll"}[kind]
    return http.get(base + path, timeout=TIMEOUT, **kwa)


def session_client(base: str, stop: threading.Event, tally: Tally, name: str) -> None:
    """Keep-alive: one requests.Session cycling through every kind."""
    kinds = ["small", "json", "small", "upload", "json", "download", "small", "long-poll"]
    with requests.Session() as session:
        index = 0
        while not stop.is_set():
            kind = kinds[index % len(kinds)]
            index += 1
            try:
                started = time.monotonic()
                check_kind(kind, call(session, base, kind))
                if kind == "long-poll":
                    waited = time.monotonic() - started
                    assert waited >= soak_app.LONG_POLL_SECONDS * 0.9, f"answered in {waited:.3f} s"
                tally.ok(kind)
            except Exception as ex:
                tally.error(f"{name} {kind}", repr(ex))


def fresh_client(base: str, stop: threading.Event, tally: Tally) -> None:
    """A new connection per request, closed by "Connection: close"."""
    kinds = ["small", "json", "upload", "download"]
    index = 0
    while not stop.is_set():
        kind = kinds[index % len(kinds)]
        index += 1
        try:
            check_kind(kind, call(requests, base, kind, headers={"Connection": "close"}))
            tally.ok(kind)
        except Exception as ex:
            tally.error(f"fresh {kind}", repr(ex))


def raw_client(address: tuple, stop: threading.Event, tally: Tally) -> None:
    """Raw sockets: a pipelined burst, keep-alive then close, and an HTTP/1.0 request."""
    while not stop.is_set():
        for kind, exchange in (("pipelined", pipelined), ("raw keep-alive", keep_alive_then_close),
                               ("http/1.0", http10)):
            try:
                tally.ok(kind, exchange(address))
            except Exception as ex:
                tally.error(kind, repr(ex))


def pipelined(address: tuple) -> int:
    """Eight requests in one write, answered in order; the last closes the connection."""
    paths = ["/small", "/json?n=1", "/small", "/json?n=2", "/small", "/json?n=3", "/small",
             "/json?n=4"]
    data = b"".join(b"GET %s HTTP/1.1\r\nHost: soak\r\n%s\r\n"
                    % (path.encode(), b"Connection: close\r\n" if index == len(paths) - 1 else b"")
                    for index, path in enumerate(paths))
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(data)
        stream = receive_until_closed(sock)
    responses = split_responses(stream)
    assert len(responses) == len(paths), f"{len(responses)} answers to {len(paths)} requests"
    for path, (status, body) in zip(paths, responses):
        assert status == 200, status
        if path == "/small":
            assert body == soak_app.SMALL
        else:
            assert json.loads(body)["query"] == path.split("?")[1]
    return len(paths)


def keep_alive_then_close(address: tuple) -> int:
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /small HTTP/1.1\r\nHost: soak\r\n\r\n")
        first = read_one_response(sock)
        sock.sendall(b"GET /json HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
        rest = receive_until_closed(sock)
    [(status, body)] = split_responses(first)
    assert status == 200 and body == soak_app.SMALL
    [(status, body)] = split_responses(rest)
    assert status == 200 and json.loads(body)["numbers"] == list(range(20))
    return 2


def http10(address: tuple) -> int:
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /small HTTP/1.0\r\n\r\n")
        [(status, body)] = split_responses(receive_until_closed(sock))
    assert status == 200 and body == soak_app.SMALL
    return 1


def receive_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def read_one_response(sock: socket.socket) -> bytes:
    """One Content-Length framed response from a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed before a whole response head"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"\r\ncontent-length: *(\d+)", head, re.I).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed before a whole response body"
        body += chunk
    assert len(body) == length, "more bytes than one response"
    return head + b"\r\n\r\n" + body


def split_responses(data: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each Content-Length framed response in `data`."""
    responses = []
    while data:
        head, separator, rest = data.partition(b"\r\n\r\n")
        assert separator, f"truncated response head: {data[:80]!r}"
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"\r\ncontent-length: *(\d+)", head, re.I).group(1))
        assert len(rest) >= length, "truncated response body"
        responses.append((status, rest[:length]))
        data = rest[length:]
    return responses


# ---- the run -----------------------------------------------------------------------------------

def slope(samples: list[tuple[float, int]]) -> float:
    """Least-squares growth in bytes per second."""
    if len(samples) < 2:
        return 0.0
    count = len(samples)
    mean_t = sum(t for t, _ in samples) / count
    mean_r = sum(r for _, r in samples) / count
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    return sum((t - mean_t) * (r - mean_r) for t, r in samples) / spread if spread else 0.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to drive traffic")
    parser.add_argument("--sessions", type=int, default=2, help="keep-alive session threads")
    parser.add_argument("--max-growth-mib", type=float, default=8.0,
                        help="fail if RSS grows more than this after the warm-up")
    parser.add_argument("--threads", type=int, default=0,
                        help="run the app on the server's pool of this many threads")
    args = parser.parse_args(argv)
    warm_up = min(10.0, args.seconds / 4)

    process, base, log = start_server(args.threads)
    address = ("127.0.0.1", int(base.rsplit(":", 1)[1]))
    tally = Tally()
    stop = threading.Event()
    # The baseline once the server has answered: "serving" is logged before its loop (and the
    # loop's own descriptors) exists.
    requests.get(base + "/small", headers={"Connection": "close"}, timeout=10).raise_for_status()
    time.sleep(0.2)  # the server closes that connection after its answer
    fds_first = fds_of(process.pid)
    threads_first = threads_of(process.pid)
    threads_most = threads_first
    samples: list[tuple[float, int]] = []
    started = time.monotonic()
    threads = [threading.Thread(target=session_client, args=(base, stop, tally, f"session{i}"))
               for i in range(args.sessions)]
    threads.append(threading.Thread(target=fresh_client, args=(base, stop, tally)))
    threads.append(threading.Thread(target=raw_client, args=(address, stop, tally)))
    exit_code = None
    try:
        for thread in threads:
            thread.start()
        next_sample = started
        while time.monotonic() - started < args.seconds:
            if process.poll() is not None:
                tally.error("server", f"exited early with {process.returncode}")
                break
            samples.append((time.monotonic() - started, rss_of(process.pid)))
            threads_most = max(threads_most, threads_of(process.pid))
            next_sample += 1.0
            time.sleep(max(0.0, next_sample - time.monotonic()))
    finally:
        stop.set()
        for thread in threads:
            thread.join(TIMEOUT + 5)
        elapsed = time.monotonic() - started
        if process.poll() is None:
            try:  # still serving, and every connection the clients closed is released
                check_kind("small", call(requests, base, "small",
                                         headers={"Connection": "close"}))
            except Exception as ex:
                tally.error("final check", repr(ex))
            settle = time.monotonic() + 5
            while fds_of(process.pid) > fds_first and time.monotonic() < settle:
                time.sleep(0.05)
            fds_last = fds_of(process.pid)
            if fds_last > fds_first:
                tally.error("server", f"{fds_last - fds_first} file descriptors never released")
            threads_last = threads_of(process.pid)
            if threads_most > threads_first:
                tally.error("server", f"threads grew from {threads_first} to {threads_most}")
            exit_code = stop_server(process)
            if exit_code != 0:
                tally.error("server", f"exit status {exit_code} after SIGTERM")
        else:
            fds_last = threads_last = None

    total = sum(tally.counts.values())
    print(f"soak: {elapsed:.0f} s of mixed traffic against {base} (server pid {process.pid}, "
          f"{len(threads)} client threads)")
    print("requests by kind:")
    for kind, count in sorted(tally.counts.items()):
        print(f"  {kind:<15} {count:>8}")
    print(f"  {'total':<15} {total:>8}   ({total / elapsed:.0f} requests/s)")
    print(f"errors: {len(tally.errors)}")
    for error in tally.errors[:10]:
        print(f"  {error}")
    failed = bool(tally.errors)
    if samples:
        sizes = [size for _, size in samples]
        after = [(t, size) for t, size in samples if t >= warm_up] or samples
        tail = [size for _, size in after]
        growth = (sum(tail[-3:]) / len(tail[-3:])) - (sum(tail[:3]) / len(tail[:3]))
        print(f"RSS: first {sizes[0] / MiB:.1f} MiB, last {sizes[-1] / MiB:.1f} MiB, "
              f"max {max(sizes) / MiB:.1f} MiB ({len(samples)} samples)")
        print(f"after the {warm_up:.0f} s warm-up: {tail[0] / MiB:.1f} -> "
              f"{tail[-1] / MiB:.1f} MiB, growth {growth / MiB:+.2f} MiB (limit {args.max_growth_mib}), "
              f"slope {slope(after) * 60 / MiB:+.3f} MiB/min")
        every = max(1, len(samples) // 12)
        print("RSS over time (MiB): " + ", ".join(
            f"{t:.0f}s {size / MiB:.1f}" for t, size in samples[::every]))
        if growth > args.max_growth_mib * MiB:
            print("FAIL: memory kept growing after the warm-up")
            failed = True
    print(f"server fds: {fds_first} -> {fds_last}; threads: {threads_first} -> {threads_last} "
          f"(at most {threads_most}); exit status {exit_code}")
    if tally.errors:
        print("last server log lines:\n" + "".join(list(log)[-10:]), end="")
    print("verdict:", "FAIL" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
