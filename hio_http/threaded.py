"""WSGI responses whose app runs on the server's thread pool (`threads=N`).

The app call, the pulling of its body and its `close()` run on a pool thread, against a `Relay`
that stands in for the connection and only collects what the response sends; the loop forwards
that to the socket. A job pulls no further once `high_water` bytes wait unsent, so a client that
reads slowly costs memory up to that mark and no thread. Nothing here blocks the loop.
"""

# Theory of operation
# -------------------
# The Steward drives a ThreadedResponder like any responder, on the loop:
#   start()  submits the call job: app(environ, start_response), then a first pull.
#   pump()   forwards what the relay collected to the connection, then returns
#              WAITING  while a job runs (its end wakes the steward) or waits for a thread,
#              BLOCKED  while the app's write() waits for the socket to drain (write_timeout),
#              DONE     once a job saw the response end,
#              WAITING  after a job saw b"" ("not yet"): park() lets the body wake us if it can,
#              BLOCKED  while high_water bytes wait unsent (drained() brings us back),
#            and otherwise submits a pull job and returns WAITING.
#   close()  the response is over or the client gone: the relay takes nothing more, a write()
#            waiting for room raises, and the app's close() runs on a pool thread.
# At most one job per response runs at a time, and the loop reads the responder's state only
# between jobs; the relay's bytes cross between threads under its lock.

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional, Union

from .net import FileSpan, Outlet
from .pool import AppPool
from .framing import BLOCKED, DONE, WAITING, ResponseSettings
from .responding import Responder

logger = logging.getLogger("hio_http.server")

__all__ = ["ThreadedResponder", "Relay"]


class ClientGone(ConnectionError):
    """Raised in an app's write() once its client has gone or the response was abandoned."""


class Relay(Outlet):
    """Stands in for a Connection while a pool thread writes a response: `send` and `sendfile`
    only collect, in order, for the loop to `take` and forward. Its `pending` counts the bytes
    not yet on the wire: the connection's, as last seen, and the collected ones."""

    def __init__(self, connection):
        self.tls = connection.tls
        self.lock = threading.Lock()
        self._room: Optional[threading.Condition] = None  # made once a write() waits
        self.chunks: list = []
        self.unsent = connection.pending  # what the socket still held, as the loop last saw it
        self.pending = self.unsent
        self.closed = False
        self.writer_waiting = False  # an app's write() waits for room

    def see_unsent(self, unsent: int) -> None:
        """The loop saw the socket hold `unsent` bytes (under the lock: a write may be adding)."""
        with self.lock:
            self.pending += unsent - self.unsent
            self.unsent = unsent

    def send(self, data) -> None:
        if self.closed or not data:
            return
        with self.lock:
            self.chunks.append(data)
            self.pending += len(data)

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        if self.closed or count <= 0:
            return
        span = FileSpan(fd, offset, count)  # a descriptor of its own: the app may close its file
        with self.lock:
            self.chunks.append(span)

    def take(self, unsent: int) -> list:
        """The collected chunks (the loop forwards them); `unsent` is what the socket holds."""
        with self.lock:
            chunks, self.chunks = self.chunks, []
            self.unsent = self.pending = unsent
            if self._room is not None:
                self._room.notify_all()
        return chunks

    def wait_for_room(self, high_water: int, ask_loop: Callable[[], None]) -> None:
        """Block the calling (pool) thread until less than `high_water` waits unsent; raises
        ClientGone once the relay is closed."""
        while True:
            with self.lock:
                if self.closed:
                    raise ClientGone("the client is gone")
                if self.pending < high_water:
                    self.writer_waiting = False
                    return
                self.writer_waiting = True
            ask_loop()
            with self.lock:
                if not self.closed and self.pending >= high_water:
                    if self._room is None:
                        self._room = threading.Condition(self.lock)
                    self._room.wait()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            chunks, self.chunks = self.chunks, []
            self.pending = self.unsent
            if self._room is not None:
                self._room.notify_all()
        for chunk in chunks:
            if type(chunk) is FileSpan:
                chunk.close()


class ThreadedResponder(Responder):
    """A WSGI Responder whose app calls run on `pool`; `wake()` (from any thread) asks the loop
    to pump it again. The Steward drives it as any responder."""

    def __init__(self, connection, request, settings: ResponseSettings, app, environ: dict,
                 pool: AppPool, wake: Callable[[], None]):
        relay = Relay(connection)
        super().__init__(relay, request, settings, app, environ)  # the framing writes to the relay
        self.socket_connection = connection
        self.relay = relay
        self.pool = pool
        self.wake = wake
        self.running = False  # a job of this response is queued or running
        self.turned_away: Optional[Callable[[], None]] = None  # a job the full pool refused
        self.awaiting_room = False  # turned away, and not yet told that there is room
        self.outcome: Optional[str] = None  # what the last job's pull ended with, unseen
        self.finished = False
        self.close_requested = False
        self.close_started = False

    @property
    def working(self) -> bool:
        """A job of this response runs, waits for a thread, or got further than the loop has
        seen yet: a client's EOF must not cut it short (it may only have shut its side). Not
        so once the body said "not yet": then it waits for data, and an EOF ends it."""
        return (self.running or self.turned_away is not None
                or self.outcome is DONE or self.outcome is BLOCKED)

    @property
    def queued(self) -> bool:
        """It waits for a free thread: reading more from its client can wait too."""
        return self.turned_away is not None

    # -- on the loop --------------------------------------------------------------------------

    def start(self) -> None:
        self._submit(self._run_call)

    def pump(self) -> str:
        self._forward()
        if self.running:
            return BLOCKED if self.relay.writer_waiting else WAITING
        if self.turned_away is not None:
            if self.awaiting_room:
                return WAITING
            job, self.turned_away = self.turned_away, None
            self._submit(job)
            return DONE if self.finished else WAITING
        outcome, self.outcome = self.outcome, None
        if outcome is DONE or self.finished or self.socket_connection.closed:
            self.finished = True
            return DONE
        if outcome is WAITING:  # the body said "not yet": park() decides when to ask again
            return WAITING
        if self.socket_connection.pending >= self.high_water:
            return BLOCKED
        self._submit(self._run_pull)
        return DONE if self.finished else WAITING

    def park(self, wake: Callable[[], None]) -> tuple[bool, Optional[float]]:
        if self.running or self.turned_away is not None:
            return True, None  # the job's end (or a free thread) wakes the steward
        return super().park(wake)

    def close(self) -> None:
        if self.close_started:
            return
        self.relay.close()
        with self.relay.lock:
            if self.running:  # the job closes the app once it returns
                self.close_requested = True
                return
            self.close_started = True
        if getattr(self.result, "close", None) is None:
            self.closed = True
        elif not self.pool.submit(self._close_app, force=True):  # the pool is shut down
            self._close_app()

    def end_now(self) -> None:
        """As any responder's (the body waits for data, so no job runs); what it writes goes
        through the relay, so it is forwarded here."""
        super().end_now()
        self._forward()

    def _forward(self) -> None:
        relay, connection = self.relay, self.socket_connection
        if not relay.chunks and not relay.writer_waiting:
            return
        for chunk in relay.take(connection.pending):
            if type(chunk) is FileSpan:
                connection.sendfile(chunk.fd, chunk.offset, chunk.remaining)
                chunk.close()
            else:
                connection.send(chunk)
        relay.see_unsent(connection.pending)

    def _submit(self, job: Callable[[], None]) -> None:
        if self.pool.closed:
            self.finished = True
            if not self.head_sent:
                self.send_error(503, "the server is shutting down")
                self._forward()
            return
        self.running = True
        self.relay.see_unsent(self.socket_connection.pending)
        if not self.pool.submit(job):
            self.running = False
            self.turned_away = job
            self.awaiting_room = True
            self.pool.notify_when_free(self._room_freed)

    def _room_freed(self) -> None:
        self.awaiting_room = False
        self.wake()

    # -- on a pool thread ---------------------------------------------------------------------

    def _run_call(self) -> None:
        self._run(call=True)

    def _run_pull(self) -> None:
        self._run(call=False)

    def _run(self, call: bool) -> None:
        outcome = DONE
        try:
            if call:
                Responder.start(self)
            outcome = Responder.pump(self)
        except BaseException:  # a fault of the machinery, not the app (the app's is caught)
            logger.exception("internal error answering %s", self.describe())
            self.broken, self.keep_alive = True, False
        with self.relay.lock:
            self.outcome = outcome
            self.running = False
            close_now = (outcome is DONE or self.close_requested) and not self.close_started
            self.close_started = self.close_started or close_now
        if close_now:
            self._close_app()  # PEP 3333: once the iteration is over, on the app's side
        self.wake()

    def write(self, data: Union[bytes, bytearray, memoryview]) -> None:
        """The legacy write(): waits (on the pool thread) while the client is behind."""
        super().write(data)
        self.relay.wait_for_room(self.high_water, self.wake)

    def _close_app(self) -> None:
        Responder.close(self)
