"""Prometheus metrics (`--metrics-bind`): each process counts in a plain list (no locks) and
publishes it twice a second to its own slot of a shared board of doubles (one writer per slot);
one scrape of the listener adds up every worker's slot. Counters of workers that exited are
folded into the supervisor's totals, so they never go down. Nothing here runs unless metrics are asked for.
"""

from __future__ import annotations

import logging
import math
import mmap
import socket
from array import array
from bisect import bisect_right
from collections import Counter
from typing import Callable, Iterable, Optional

from .responding import CustomResponder
from .serving import is_event_stream

logger = logging.getLogger("hio_http.server")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other")
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Where each figure lives in a slot (indexes of doubles). Counters first, then gauges.
REQUESTS = 0  # METHODS x CLASSES
DURATIONS = REQUESTS + len(METHODS) * len(CLASSES)  # one count per bucket, then +Inf
DURATION_SUM = DURATIONS + len(BUCKETS) + 1
RECEIVED = DURATION_SUM + 1
SENT = RECEIVED + 1
STALLS = SENT + 1
GAUGES = STALLS + 1  # from here on, values that are not summed over exited workers
IN_FLIGHT, HTTP, WEBSOCKET, EVENT_STREAM, POOL_QUEUED, POOL_BUSY = range(GAUGES, GAUGES + 6)
SLOT_SIZE = 64  # doubles per slot
SLOT_BYTES = SLOT_SIZE * 8
GAUGE_INTERVAL = 0.5  # seconds between updates of a worker's gauges
MAX_SCRAPE_REQUEST = 8192

_METHOD_INDEX = {method: index for index, method in enumerate(METHODS)}
_CLASS_INDEX = {str(digit): digit - 1 for digit in range(1, 6)}  # a status's first digit


class Board:
    """Slots of doubles in an anonymous shared mapping: made before forking, shared after."""

    def __init__(self, slots: int):
        self.slots = slots
        self.memory = mmap.mmap(-1, SLOT_BYTES * slots)
        self.retired = [0.0] * GAUGES  # counters of workers that exited

    def values(self, slot: int) -> "memoryview[float]":
        return memoryview(self.memory)[slot * SLOT_BYTES:(slot + 1) * SLOT_BYTES].cast("d")

    def retire(self, slot: int) -> None:
        """A worker in `slot` exited: keep its counters, and clear the slot for the next one."""
        values = self.values(slot)
        for index in range(GAUGES):
            self.retired[index] += values[index]
        for index in range(SLOT_SIZE):
            values[index] = 0.0
        values.release()

    def totals(self, slots: Iterable[int]) -> list:
        total = self.retired + [0.0] * (SLOT_SIZE - GAUGES)
        for slot in slots:
            values = self.values(slot)
            for index in range(SLOT_SIZE):
                total[index] += values[index]
            values.release()
        return total


class Metrics:
    """One process's counters, published to its slot of the board by `refresh`.

    A server's Stewards add to `received` the bytes they read and extend `noted` with four
    items per finished response (duration, method, status line, body bytes sent); `publish`
    sorts them into the counters in bulk, with C-level slicing, sorting and counting. Between
    publishes, GAUGE_INTERVAL apart, the list holds four items per response answered."""

    def __init__(self, board: Board, slot: int, server=None, exporter=None):
        self.slot = board.values(slot)
        self.server = server  # whose connections the gauges count (a serving.BaseServer)
        self.exporter = exporter  # a single process's BareServer answering scrapes, if any
        self.due = 0.0  # when, on the server's clock, `refresh` is next due
        self.counts = [0.0] * GAUGES
        self.received = 0
        self.noted: list = []  # duration, method, status line, bytes sent; per response
        self.cells: dict = {}  # (method, status line) -> index of its counter

    def fold(self) -> None:
        """Add the responses noted since the last fold to the counters."""
        noted, counts = self.noted, self.counts
        if not noted:
            return
        durations, methods, statuses = noted[0::4], noted[1::4], noted[2::4]
        counts[SENT] += sum(noted[3::4])
        noted.clear()
        for (method, status), number in _outcomes(methods, statuses):
            cell = self.cells.get((method, status))
            if cell is None:
                cell = self.cells[method, status] = _cell(method, status)
            counts[cell] += number
        durations.sort()
        below = 0
        for index, bound in enumerate(BUCKETS):
            at_most = bisect_right(durations, bound, below)
            counts[DURATIONS + index] += at_most - below
            below = at_most
        counts[DURATIONS + len(BUCKETS)] += len(durations) - below
        counts[DURATION_SUM] += math.fsum(durations)

    def publish(self) -> None:
        """Copy the counters to the shared slot, where scrapes read them."""
        self.fold()
        self.counts[RECEIVED] = self.received
        self.slot[:GAUGES] = array("d", self.counts)

    def refresh(self, now: float) -> None:
        """Publish the counters and count what is open now: requests in flight, connections by
        kind, the app pool's queue, the loop's stalls so far. The ServerDoer calls it on its
        own turns whenever `due` has come (then it is due GAUGE_INTERVAL later), so the metrics
        add no doer of their own, which the Doist would look at on every pass.

        It also gives the `exporter` its turn: the exporter's sockets are served by the shared
        Poller as they get ready, and only its deadlines need a sweep now and then."""
        self.due = now + GAUGE_INTERVAL
        server = self.server
        if server is not None and server.stalls is not None:
            self.counts[STALLS] = server.stalls.stalls
        self.publish()
        if server is not None:
            self._count_open(server)
        if self.exporter is not None:
            self.exporter.service()

    def _count_open(self, server) -> None:
        in_flight = http = websocket = event_stream = 0
        for steward in server.stewards:
            if not hasattr(steward, "requestant"):  # a WebSocketSession took its place
                websocket += 1
                continue
            responder = steward.responder
            if responder is None:
                http += 1
            elif is_event_stream(responder):
                event_stream += 1
            else:
                http += 1
                in_flight += 1
        values = self.slot
        values[IN_FLIGHT], values[HTTP] = in_flight, http
        values[WEBSOCKET], values[EVENT_STREAM] = websocket, event_stream
        pool = getattr(server, "pool", None)
        values[POOL_QUEUED] = pool.queued if pool is not None else 0
        values[POOL_BUSY] = pool.busy if pool is not None else 0

    def close(self) -> None:
        """The loop is over: the last responses count too; the exporter stops listening."""
        self.publish()
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None


def _outcomes(methods: list, statuses: list) -> Iterable[tuple[tuple[str, Optional[str]], int]]:
    """How many responses had each (method, status line). Usually every request had one method,
    and counting the status lines alone (set and list.count, in C) is several times cheaper
    than counting pairs."""
    method, status = methods[0], statuses[0]
    if methods.count(method) != len(methods):  # list.count: one comparison per item, in C
        return Counter(zip(methods, statuses)).items()
    if statuses.count(status) == len(statuses):  # the usual stretch: one answer throughout
        return [((method, status), len(statuses))]
    return [((method, status), statuses.count(status)) for status in set(statuses)]


def _cell(method: str, status: Optional[str]) -> int:
    """The counter of a response to `method` with `status` (None: it failed before a status)."""
    status_class = _CLASS_INDEX.get(status[0], 4) if status else 4
    return _METHOD_INDEX.get(method, len(METHODS) - 1) * len(CLASSES) + status_class


def render(total: list, workers: int, restarts: int) -> bytes:
    """The Prometheus text exposition of the summed slots."""
    lines: list = []

    def family(name: str, kind: str, text: str, samples: list) -> None:
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            label_text = ",".join(f'{key}="{label}"' for key, label in labels)
            lines.append(f"{name}{suffix}{{{label_text}}} {_number(value)}" if labels
                         else f"{name}{suffix} {_number(value)}")

    requests = [("", (("method", method), ("status", status)), total[m * 5 + c])
                for m, method in enumerate(METHODS) for c, status in enumerate(CLASSES)
                if total[m * 5 + c]]
    family("hio_http_requests_total", "counter",
           "Responses finished, by request method and status class.", requests)
    cumulative, buckets = 0.0, []
    for index, bound in enumerate((*BUCKETS, "+Inf")):
        cumulative += total[DURATIONS + index]
        buckets.append(("_bucket", (("le", str(bound)),), cumulative))
    family("hio_http_request_duration_seconds", "histogram",
           "From a request's turn to answer to the end of its response.",
           buckets + [("_sum", (), total[DURATION_SUM]), ("_count", (), cumulative)])
    family("hio_http_requests_in_flight", "gauge", "Requests being answered.",
           [("", (), total[IN_FLIGHT])])
    family("hio_http_connections", "gauge", "Open connections, by what they speak.",
           [("", (("kind", "http"),), total[HTTP]),
            ("", (("kind", "websocket"),), total[WEBSOCKET]),
            ("", (("kind", "event_stream"),), total[EVENT_STREAM])])
    family("hio_http_received_bytes_total", "counter", "Bytes received from clients.",
           [("", (), total[RECEIVED])])
    family("hio_http_sent_bytes_total", "counter", "Response body bytes sent.",
           [("", (), total[SENT])])
    family("hio_http_loop_stalls_total", "counter",
           "Times one call held a loop past stall_warning.", [("", (), total[STALLS])])
    family("hio_http_app_pool_queued", "gauge", "App calls waiting for a free thread.",
           [("", (), total[POOL_QUEUED])])
    family("hio_http_app_pool_busy", "gauge", "App threads working on a request.",
           [("", (), total[POOL_BUSY])])
    family("hio_http_workers", "gauge", "Worker processes running.", [("", (), workers)])
    family("hio_http_worker_restarts_total", "counter",
           "Workers started after the first ones: replacements, recycling and reloads.",
           [("", (), restarts)])
    return ("\n".join(lines) + "\n").encode()


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def scrape_handler(scrape: Callable[[], bytes]) -> Callable:
    """A BareServer handler answering every GET or HEAD with a scrape (the single process)."""

    def handle(request) -> CustomResponder:
        if request.method not in ("GET", "HEAD"):
            return CustomResponder(405, [("Allow", "GET, HEAD"),
                                         ("Content-Type", "text/plain")], b"GET only\n")
        return CustomResponder(200, [("Content-Type", CONTENT_TYPE)], scrape())

    return handle


def answer_scrape(listener: socket.socket, scrape: Callable[[], bytes],
                  timeout: float = 2.0) -> None:
    """Answer one client of the supervisor's metrics listener, briefly blocking (scrapes are
    small and rare; a client that does not send its request within `timeout` is dropped)."""
    try:
        client, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        return
    with client:
        client.settimeout(timeout)
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < MAX_SCRAPE_REQUEST:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            method = head.split(b" ", 1)[0]
            if method not in (b"GET", b"HEAD"):
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\n"
                               b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                return
            body = scrape()
            client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: " + CONTENT_TYPE.encode() +
                           b"\r\nContent-Length: " + str(len(body)).encode() +
                           b"\r\nConnection: close\r\n\r\n" + (body if method == b"GET"
                                                               else b""))
        except OSError as ex:
            logger.info("metrics scrape failed: %s", ex)


def scraper(board: Board, slots: Callable[[], Iterable[int]], restarts: Callable[[], int],
            workers: Optional[Callable[[], int]] = None) -> Callable[[], bytes]:
    """A function rendering one scrape of `board`'s live `slots`."""

    def scrape() -> bytes:
        live = list(slots())
        count = workers() if workers is not None else len(live)
        return render(board.totals(live), count, restarts())

    return scrape
