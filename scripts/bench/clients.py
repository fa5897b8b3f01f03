"""Helper process that holds many connections open against one server (run.py starts it,
pinned to the client core). It never blocks on one socket: every socket is nonblocking and
watched by one selector.

    python clients.py idle --port P --count 10000
        opens keep-alive connections in batches, each sends GET /hello and reads its response;
        prints one JSON line (how many it holds), holds them until stdin closes.
    python clients.py sse --port P --count 1000 --udp-port U
        opens Server-Sent Events subscriptions to /events; prints a JSON line when they are
        all open, then on the stdin line "go" triggers broadcasts (a datagram to U makes the
        server publish) and prints their timings as a JSON line; holds until stdin closes.
    python clients.py download --port P --connections 4 --warmup 1 --seconds 5
        keeps N keep-alive connections downloading /download one response after another and
        prints one JSON line with the bytes per second that arrived. Bodies are discarded in
        the kernel (recv with MSG_TRUNC: TCP data is dropped, not copied), so the client costs
        far less than the server and the figure is the server's, not the client's (a client
        that copies every byte, as wrk does, tops out near 2 GB/s on one core).
"""

from __future__ import annotations

import argparse
import errno
import json
import resource
import selectors
import socket
import statistics
import sys
import time

HELLO_REQUEST = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
DOWNLOAD_REQUEST = b"GET /download HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
EVENTS_REQUEST = b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"


class Client:
    """One nonblocking connection: connect, send one request, read until `complete`."""

    __slots__ = ("sock", "received", "answered", "events", "last_byte", "arrived")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.received = bytearray()
        self.answered = False
        self.events = 0
        self.last_byte = b""
        self.arrived = None


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def response_complete(data: bytearray) -> bool:
    """A whole response with Content-Length (what /hello sends)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    length = 0
    for line in bytes(data[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return len(data) >= end + 4 + length


def stream_open(data: bytearray) -> bool:
    """Response head plus the first event or comment of an SSE stream."""
    end = data.find(b"\r\n\r\n")
    return end >= 0 and data.find(b"\n\n", end + 4) >= 0


def open_batch(selector, address, count, request, complete, timeout):
    """Open `count` connections and wait up to `timeout` s for each to be answered.
    Returns (answered clients, number unanswered, error text or None)."""
    pending = {}
    error = None
    for _ in range(count):
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as ex:
            error = f"client socket: {ex.strerror}"
            break
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            error = f"connect: {errno.errorcode.get(code, code)}"
            break
        client = Client(sock)
        pending[sock.fileno()] = client
        selector.register(sock, selectors.EVENT_WRITE, client)
    answered = []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, mask in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            client = key.data
            sock = client.sock
            if mask & selectors.EVENT_WRITE:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    _drop(selector, pending, client)
                    continue
                try:
                    sock.send(request)
                except OSError:
                    _drop(selector, pending, client)
                    continue
                selector.modify(sock, selectors.EVENT_READ, client)
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                _drop(selector, pending, client)
                continue
            client.received += data
            if complete(client.received):
                client.answered = True
                selector.unregister(sock)
                del pending[sock.fileno()]
                answered.append(client)
    unanswered = len(pending)
    for client in list(pending.values()):
        _drop(selector, pending, client)
    return answered, unanswered, error


def _drop(selector, pending, client) -> None:
    try:
        selector.unregister(client.sock)
    except (KeyError, ValueError):
        pass
    pending.pop(client.sock.fileno(), None)
    client.sock.close()


def still_open(client: Client) -> bool:
    try:
        return client.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def open_many(address, count, request, complete, batch, batch_timeout, deadline):
    """Open up to `count` answered connections; stop at the first sign of a limit."""
    selector = selectors.DefaultSelector()
    held: list = []
    stopped = None
    started = time.monotonic()
    while len(held) < count:
        if time.monotonic() - started > deadline:
            stopped = f"time limit {deadline:.0f} s"
            break
        size = min(batch, count - len(held))
        answered, unanswered, error = open_batch(selector, address, size, request, complete,
                                                 batch_timeout)
        alive = _keep_open(answered)
        held.extend(alive)
        if error:
            stopped = error
            break
        if unanswered:
            stopped = (f"{unanswered} of a batch of {size} unanswered within {batch_timeout:g} s "
                       "(server limit?)")
            break
        if answered and len(alive) < len(answered) / 2:
            stopped = "server closes keep-alive connections after responding"
            break
    seconds = time.monotonic() - started
    # Connections the server closed since: they no longer count.
    return selector, _keep_open(held), stopped, seconds


def _keep_open(clients: list) -> list:
    """The clients whose connection is still open; the others are closed on our side too."""
    kept = []
    for client in clients:
        if still_open(client):
            kept.append(client)
        else:
            client.sock.close()
    return kept


def hold_until_stdin_closes() -> None:
    for _ in sys.stdin:
        pass


def emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def idle(args) -> None:
    limit = raise_fd_limit()
    address = ("127.0.0.1", args.port)
    _, kept, stopped, seconds = open_many(address, args.count, HELLO_REQUEST, response_complete,
                                          args.batch, args.batch_timeout, args.deadline)
    emit({"wanted": args.count, "held": len(kept), "stopped": stopped,
          "open_seconds": round(seconds, 3), "client_fd_limit": limit})
    hold_until_stdin_closes()
    for client in kept:
        client.sock.close()


def sse(args) -> None:
    limit = raise_fd_limit()
    address = ("127.0.0.1", args.port)
    selector, kept, stopped, seconds = open_many(address, args.count, EVENTS_REQUEST, stream_open,
                                                 args.batch, args.batch_timeout, args.deadline)
    emit({"wanted": args.count, "held": len(kept), "stopped": stopped,
          "open_seconds": round(seconds, 3), "client_fd_limit": limit})
    for client in kept:
        client.last_byte = bytes(client.received[-1:])
        selector.register(client.sock, selectors.EVENT_READ, client)
    trigger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        rounds = []
        for _ in range(args.rounds):
            rounds.append(broadcast(selector, kept, trigger, args.udp_port, 1, args.timeout))
            time.sleep(0.05)
        burst = broadcast(selector, kept, trigger, args.udp_port, args.burst, args.timeout)
        emit({"rounds": rounds, "burst": burst, "subscribers": len(kept)})
    for client in kept:
        client.sock.close()


def broadcast(selector, clients, trigger, udp_port, events, timeout) -> dict:
    """Ask the server to publish `events` events; time until every subscriber has them all."""
    clients = [client for client in clients if client.answered]  # not lost in an earlier round
    for client in clients:
        client.events = 0
        client.arrived = None
    waiting = len(clients)
    started = time.monotonic()
    trigger.sendto(str(events).encode("ascii"), ("127.0.0.1", udp_port))
    deadline = started + timeout
    lost = 0
    while waiting and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            client = key.data
            try:
                data = client.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(client.sock)
                client.answered = False
                lost += 1
                if client.arrived is None:
                    waiting -= 1
                continue
            client.events += (client.last_byte + data).count(b"\n\n")
            client.last_byte = data[-1:]
            if client.arrived is None and client.events >= events:
                client.arrived = time.monotonic() - started
                waiting -= 1
    times = sorted(client.arrived for client in clients if client.arrived is not None)
    result = {"events": events, "delivered": len(times), "lost": lost,
              "timed_out": waiting}
    if times:
        result.update(first_ms=times[0] * 1000, median_ms=statistics.median(times) * 1000,
                      last_ms=times[-1] * 1000)
    return result


class Download:
    """One keep-alive connection downloading a response after another: it reads each head,
    then discards the body (`left` bytes of it) without copying it."""

    def __init__(self, address):
        self.address = address
        self.sock = None
        self.head = b""
        self.left = None
        self.closing = False  # the response said Connection: close

    def connect(self, selector) -> None:
        self.sock = socket.create_connection(self.address, timeout=5.0)
        self.sock.setblocking(False)
        selector.register(self.sock, selectors.EVENT_READ, self)
        self.ask()

    def ask(self) -> None:
        self.sock.sendall(DOWNLOAD_REQUEST)  # small: the send buffer always takes it
        self.head, self.left, self.closing = b"", None, False

    def close(self, selector) -> None:
        selector.unregister(self.sock)
        self.sock.close()

    def read(self, scratch, selector) -> tuple[int, int]:
        """Read what is ready: (bytes that arrived, 1 if a response completed else 0).
        Raises ValueError for a response that is not a 200 with a Content-Length. A server
        that closes after each response (Connection: close) is reconnected to."""
        if self.left is None:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return len(data), 0
            head = self.head[:end]
            self.closing = b"\r\nconnection: close" in head.lower()
            self.left = content_length(head) - (len(self.head) - end - 4)
            return len(data), self._done(selector)
        got = self.sock.recv_into(scratch, min(self.left, len(scratch)), socket.MSG_TRUNC)
        if not got:
            raise ConnectionError("closed by the server")
        self.left -= got
        return got, self._done(selector)

    def _done(self, selector) -> int:
        if self.left > 0:
            return 0
        if self.left < 0:
            raise ValueError("more bytes than the Content-Length")
        if self.closing:
            self.close(selector)
            self.connect(selector)
        else:
            self.ask()
        return 1


def content_length(head: bytes) -> int:
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 200 "):
        raise ValueError(f"unexpected status line {lines[0][:60]!r}")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError("no Content-Length")


def download(args) -> None:
    address = ("127.0.0.1", args.port)
    selector = selectors.DefaultSelector()
    clients = [Download(address) for _ in range(args.connections)]
    for client in clients:
        client.connect(selector)
    scratch = bytearray(1 << 20)  # MSG_TRUNC writes nothing into it; recv_into needs one
    errors = []
    started = time.monotonic()
    measuring_from = started + args.warmup
    end = measuring_from + args.seconds
    total = responses = 0
    measuring = False
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if not measuring and now >= measuring_from:
            measuring, total, responses, measuring_from = True, 0, 0, now
        for key, _ in selector.select(timeout=0.5):
            client = key.data
            try:
                got, done = client.read(scratch, selector)
            except BlockingIOError:
                continue
            except (OSError, ValueError) as ex:
                errors.append(str(ex) or type(ex).__name__)
                client.close(selector)
                if len(errors) > 100:
                    break
                client.connect(selector)
                continue
            total += got
            responses += done
    seconds = time.monotonic() - measuring_from
    for client in clients:
        client.sock.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    emit({"bytes": total, "responses": responses, "seconds": round(seconds, 3),
          "bytes_per_s": total / seconds, "errors": len(errors), "first_errors": errors[:3],
          "cpu_s": usage.ru_utime + usage.ru_stime})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("idle", "sse", "download"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--batch-timeout", type=float, default=5.0)
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds for opening all")
    parser.add_argument("--udp-port", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=10.0, help="per broadcast")
    parser.add_argument("--connections", type=int, default=4, help="downloads at a time")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds measured")
    args = parser.parse_args(argv)
    {"idle": idle, "sse": sse, "download": download}[args.mode](args)


if __name__ == "__main__":
    main()
