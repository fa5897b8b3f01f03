"""WebSocket echo benchmark: `python scripts/bench/ws_echo_bench.py [--connections 1000]`.

Starts hio_http with an echo endpoint in a child process (pinned to core 0), opens N WebSocket
connections to it from this process (core 1) with nonblocking sockets and wsproto, and has each
connection echo messages back to back (one in flight per connection) for --duration seconds.
Reports echoed messages per second, latency percentiles, and the server's RSS and CPU time.
Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping,
                            RejectConnection, Request, TextMessage)

ROOT = Path(__file__).resolve().parents[2]


# -- the server (child process) -------------------------------------------------------------------


def serve(args) -> None:
    sys.path.insert(0, str(ROOT))
    from hio_http import Doist, Server, ServerDoer
    from hio_http.websocket import WebSocketHandler

    class Echo(WebSocketHandler):
        def on_message(self, message):
            self.send(message)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]

    raise_file_limit()
    server = Server(app, port=0, websockets={"/echo": Echo},
                    max_connections=args.connections + 100, ws_compression=args.compression)
    server.open()
    signal.signal(signal.SIGTERM, _interrupt)
    print(json.dumps({"port": server.address[1], "pid": os.getpid()}), flush=True)
    try:
        Doist(tock=args.tock, real=True, doers=[ServerDoer(server)]).do()
    except KeyboardInterrupt:
        pass


def _interrupt(signum, frame):
    raise KeyboardInterrupt


# -- the client (this process) --------------------------------------------------------------------


class Client:
    """One WebSocket connection driven by readiness: handshake, then echo after echo."""

    __slots__ = ("sock", "ws", "message", "open", "sent_at", "echoes", "latencies", "failed",
                 "outgoing")

    def __init__(self, port: int, message, latencies: list):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.connect_ex(("127.0.0.1", port))
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.message = message
        self.open = False
        self.sent_at = 0.0
        self.echoes = 0
        self.latencies = latencies
        self.failed = None
        self.outgoing = bytearray(self.ws.send(Request(host="127.0.0.1", target="/echo")))

    def send_message(self) -> None:
        self.sent_at = time.perf_counter()
        frame = TextMessage(self.message) if isinstance(self.message, str) else \
            BytesMessage(self.message)
        self.outgoing += self.ws.send(frame)
        self.flush()  # usually all of it goes at once; what does not waits for EVENT_WRITE

    def flush(self) -> None:
        while self.outgoing:
            try:
                sent = self.sock.send(self.outgoing)
            except (BlockingIOError, InterruptedError):
                return
            del self.outgoing[:sent]

    def readable(self, counting: bool) -> None:
        try:
            data = self.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as ex:
            self.failed = str(ex)
            return
        if not data:
            self.failed = "closed by the server"
            return
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.open = True
            elif isinstance(event, RejectConnection):
                self.failed = f"handshake refused: {event.status_code}"
            elif isinstance(event, (TextMessage, BytesMessage)):
                if event.message_finished:
                    if counting:
                        self.echoes += 1
                        self.latencies.append(time.perf_counter() - self.sent_at)
                    self.send_message()
            elif isinstance(event, Ping):
                self.outgoing += self.ws.send(event.response())
            elif isinstance(event, CloseConnection):
                self.failed = f"closed: {event.code}"


def run_clients(args, port: int, server_pid: int) -> dict:
    selector = selectors.DefaultSelector()
    latencies: list = []
    message = "x" * args.size if args.text else os.urandom(args.size)
    clients = []
    rss_idle = server_memory(server_pid)
    started = time.monotonic()
    # Connect in batches so the listen backlog never overflows.
    while len(clients) < args.connections:
        batch = [Client(port, message, latencies)
                 for _ in range(min(100, args.connections - len(clients)))]
        for client in batch:
            selector.register(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)
        clients += batch
        pump(selector, until=lambda: all(c.open or c.failed for c in batch), timeout=30,
             counting=False)
    failed = [c.failed for c in clients if c.failed]
    if failed:
        raise SystemExit(f"{len(failed)} connections failed, e.g. {failed[0]}")
    connect_seconds = time.monotonic() - started
    rss_connected = server_memory(server_pid)
    cpu_before = server_cpu(server_pid)
    for client in clients:
        client.send_message()
        if client.outgoing:
            selector.modify(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)
    begin = time.perf_counter()
    pump(selector, until=lambda: time.perf_counter() - begin >= args.duration,
         timeout=args.duration + 5, counting=True)
    elapsed = time.perf_counter() - begin
    cpu_used = server_cpu(server_pid) - cpu_before
    rss_busy = server_memory(server_pid)
    echoes = sum(c.echoes for c in clients)
    failed = [c.failed for c in clients if c.failed]
    for client in clients:
        client.sock.close()
    latencies.sort()
    return {
        "connections": args.connections, "message_bytes": args.size,
        "kind": "text" if args.text else "binary", "compression": args.compression,
        "seconds": round(elapsed, 2), "connect_seconds": round(connect_seconds, 2),
        "echoes": echoes, "messages_per_second": round(echoes / elapsed),
        "latency_ms_p50": round(1000 * latencies[len(latencies) // 2], 2) if latencies else None,
        "latency_ms_p99": round(1000 * latencies[int(len(latencies) * 0.99)], 2)
        if latencies else None,
        "latency_ms_mean": round(1000 * statistics.fmean(latencies), 2) if latencies else None,
        "server_cpu_percent": round(100 * cpu_used / elapsed),
        "server_rss_mib_idle": rss_idle["rss"], "server_rss_mib_connected": rss_connected["rss"],
        "server_rss_mib_busy": rss_busy["rss"], "server_rss_mib_peak": rss_busy["hwm"],
        "rss_kib_per_connection": round((rss_connected["rss"] - rss_idle["rss"]) * 1024
                                        / args.connections, 1),
        "failed_during_run": len(failed),
    }


def pump(selector, until, timeout: float, counting: bool) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise SystemExit("the benchmark timed out waiting for the server")
        for key, mask in selector.select(timeout=0.5):
            client = key.data
            if mask & selectors.EVENT_READ:
                client.readable(counting)
            if client.outgoing:
                client.flush()
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outgoing else 0)
            if key.events != wanted:
                selector.modify(client.sock, wanted, client)


# -- measuring ------------------------------------------------------------------------------------


def server_memory(pid: int) -> dict:
    """RSS and its high-water mark (VmHWM), MiB, from /proc."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, amount, _ = line.split()
                values["rss" if name == "VmRSS:" else "hwm"] = round(int(amount) / 1024, 1)
    return values


def server_cpu(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > core:
        os.sched_setaffinity(0, {core})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of echoing")
    parser.add_argument("--size", type=int, default=64, help="message bytes")
    parser.add_argument("--text", action="store_true", help="text messages (default binary)")
    parser.add_argument("--compression", action="store_true",
                        help="let the server accept permessage-deflate (this client never "
                             "offers it, so it only changes the handshake)")
    parser.add_argument("--tock", type=float, default=0.03125, help="the server Doist's tock")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        pin(0)
        serve(args)
        return
    raise_file_limit()
    pin(1)
    command = [sys.executable, __file__, "--serve", "--connections", str(args.connections),
               "--tock", str(args.tock)] + (["--compression"] if args.compression else [])
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        hello = json.loads(server.stdout.readline())
        result = run_clients(args, hello["port"], hello["pid"])
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
