"""Server-Sent Events (text/event-stream, WHATWG HTML "Server-sent events"): encode events and
fan them out to any number of streaming responses. Publishing never blocks and never waits for a
client; a stream says "not yet" (b"") instead of waiting, so it never holds up the loop.

With Falcon::

    events = Broadcaster()
    class Events:
        def on_get(self, req, resp): events.stream(req, resp)
    app.add_route("/events", Events())

then ``events.publish("hi")`` from any thread or doer. Without Falcon:
``BareServer(handler=events.responder)`` (or return ``events.responder(request)`` from a
handler), or ``events.wsgi_app`` as a plain WSGI application.
"""

# Theory of operation
# -------------------
# A Broadcaster encodes each event once and appends the same bytes to the queue of every
# Subscription; it also keeps the last `history` events for clients that reconnect with
# Last-Event-ID. A Subscription is the response body: on each pull it hands over what is queued
# (joined, so one pull is one send), else a heartbeat comment once `heartbeat` seconds passed
# without output, else b"" ("not yet"; the server pulls again on a later pass, within a tock).
# Its first item is always a preamble (a retry field or a comment) so the response head goes
# out at once and the client knows the stream is open. Parked by the server (`park(wake)`), an
# idle Subscription costs nothing per pass: publish() or its end calls `wake`, and the server's
# deadline for it is the next heartbeat.
# A subscriber whose queue would pass `max_queue` (its client stopped reading, so the server
# stopped pulling) is dropped: it gets no more events and its stream ends after what is queued,
# so a reconnecting client resumes from its last id out of the history.
# Threads: publish() may run on any thread. Queue appends and the end flag change only under the
# Broadcaster's lock; the puller pops without it (deque operations are atomic) and looks at the
# queue again after it sees the end, so no event queued before the end is lost.

from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Optional

if TYPE_CHECKING:
    from .responding import CustomResponder

__all__ = ["SSE_HEADERS", "Broadcaster", "Subscription", "format_event", "last_event_id"]

SSE_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"),
               ("Cache-Control", "no-cache"),
               ("X-Accel-Buffering", "no")]  # tells nginx-like proxies not to buffer the stream

HEARTBEAT = b": heartbeat\n\n"
OPENING = b": open\n\n"
JOIN_LIMIT = 64 * 1024  # one pull hands over at most about this much queued output


def format_event(data: Optional[str] = None, event: Optional[str] = None,
                 id: Optional[str] = None, retry: Optional[int] = None,
                 comment: Optional[str] = None) -> bytes:
    """One event as UTF-8 bytes, ending with the blank line that dispatches it.

    Each line of `data` (split at CRLF, CR or LF, as the client splits) becomes a "data:" line;
    `retry` is the reconnection delay in milliseconds; `comment` lines are ignored by clients.
    """
    lines = []
    if comment is not None:
        lines += [":" + (" " + line if line else "") for line in _split_lines(_text(comment))]
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int):
            raise TypeError(f"retry must be an int of milliseconds, not {type(retry).__name__}")
        if retry < 0:
            raise ValueError("retry must not be negative")
        lines.append(f"retry: {retry}")
    if id is not None:
        # A client ignores an id with NUL; CR or LF would end the field and inject others.
        _check_field("id", id, "\0\r\n")
        lines.append(f"id: {id}")
    if event is not None:
        _check_field("event", event, "\r\n")
        lines.append(f"event: {event}")
    if data is not None:
        # "data: " keeps a leading space of the line: the client strips exactly one.
        lines += ["data: " + line for line in _split_lines(_text(data))]
    if not lines:
        raise ValueError("an event needs data, event, id, retry or comment")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def last_event_id(source) -> Optional[str]:
    """The Last-Event-ID header of a WSGI environ, a Falcon request or a hio_http Request;
    None when absent or empty."""
    if isinstance(source, Mapping):
        value = source.get("HTTP_LAST_EVENT_ID")
    elif hasattr(source, "get_header"):  # falcon.Request
        value = source.get_header("Last-Event-ID")
    else:  # hio_http.request.Request
        value = source.header("last-event-id")
    if not value:
        return None
    try:  # header values arrive as latin-1 decoded bytes (PEP 3333); ids are UTF-8
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


class Broadcaster:
    """Fan-out of events to any number of subscribers; publishing never blocks.

    `heartbeat`: seconds of silence after which a stream sends a comment (keeps proxies from
    timing out and reveals clients that went away; 0 or None: never). `max_queue`: events a
    subscriber may have waiting before it is dropped. `history`: events kept for replay to
    clients that reconnect with Last-Event-ID. `retry`: reconnection delay (ms) sent first on
    every stream. `clock`: seconds, for heartbeats (time.monotonic; tests pass their own).
    """

    def __init__(self, heartbeat: Optional[float] = 15.0, max_queue: int = 1000,
                 history: int = 100, retry: Optional[int] = None,
                 clock: Callable[[], float] = time.monotonic):
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if heartbeat is not None and heartbeat < 0:
            raise ValueError("heartbeat must not be negative")
        self.heartbeat = heartbeat or None
        self.max_queue = max_queue
        self.clock = clock
        self.opening = format_event(retry=retry) if retry is not None else OPENING
        self.closed = False
        self._history: collections.deque = collections.deque(maxlen=max(0, history))
        self._subscriptions: set = set()
        self._sequence = 0
        self._lock = threading.Lock()

    @property
    def subscribers(self) -> int:
        """How many subscriptions currently receive events."""
        return len(self._subscriptions)

    def publish(self, data: str, event: Optional[str] = None, id: Optional[str] = None,
                retry: Optional[int] = None) -> str:
        """Queue an event for every subscriber and the history; returns its id (by default the
        next number of a counter). Safe from any thread; never waits for a client. Raises
        RuntimeError once the Broadcaster is closed."""
        with self._lock:
            if self.closed:
                raise RuntimeError("publish on a closed Broadcaster")
            sequence = self._sequence + 1
            if id is None:
                id = str(sequence)
            encoded = format_event(data, event=event, id=id, retry=retry)  # may raise: check first
            self._sequence = sequence
            self._history.append((id, encoded))
            for subscription in list(self._subscriptions):
                if len(subscription.queue) >= self.max_queue:
                    self._drop(subscription)  # its client stopped reading
                else:
                    subscription.queue.append(encoded)
                    subscription.ring()
        return id

    def subscribe(self, last_event_id: Optional[str] = None) -> "Subscription":
        """A new stream of events. With `last_event_id`, the events after it in the history are
        replayed first; an id no longer (or never) in the history replays all of it, since the
        client may have missed any of it. On a closed Broadcaster the stream is already over."""
        with self._lock:
            if self.closed:
                subscription = Subscription(self, opening=None)
                subscription.ended = True
                return subscription
            subscription = Subscription(self, opening=self.opening)
            if last_event_id is not None:
                subscription.queue.extend(self._replay(last_event_id))
            self._subscriptions.add(subscription)
        return subscription

    def close(self) -> None:
        """End every stream cleanly (after what is already queued); publishing is over."""
        with self._lock:
            self.closed = True
            for subscription in list(self._subscriptions):
                self._drop(subscription)

    def stream(self, req, resp) -> None:
        """Answer a Falcon request with a stream of events, honouring Last-Event-ID. Once the
        Broadcaster is closed: 204, which tells an EventSource to stop reconnecting."""
        if self.closed:
            resp.status = 204
            return
        for name, value in SSE_HEADERS:
            resp.set_header(name, value)
        resp.stream = self.subscribe(last_event_id(req))

    def responder(self, request) -> CustomResponder:
        """Answer a hio_http Request (in a BareServer handler) with a stream of events."""
        from .responding import CustomResponder
        if self.closed:
            return CustomResponder(204, [])
        if request.method == "HEAD":
            # The head of a stream, without subscribing. A one-item body that ends, because a
            # CustomResponder keeps pulling an endless body even when it sends none (HEAD).
            return CustomResponder(200, list(SSE_HEADERS), body=iter([self.opening]))
        return CustomResponder(200, list(SSE_HEADERS), body=self.subscribe(last_event_id(request)))

    def wsgi_app(self, environ: dict, start_response) -> Iterator[bytes]:
        """A plain WSGI application serving the stream, for use without a framework."""
        if self.closed:
            start_response("204 No Content", [])
            return iter(())
        subscription = self.subscribe(last_event_id(environ))
        start_response("200 OK", list(SSE_HEADERS))
        return subscription

    def _replay(self, last_event_id: str) -> list:
        events = list(self._history)
        for index in range(len(events) - 1, -1, -1):
            if events[index][0] == last_event_id:
                return [encoded for _, encoded in events[index + 1:]]
        return [encoded for _, encoded in events]

    def _drop(self, subscription: "Subscription") -> None:
        """Stop feeding `subscription` (lock held): its stream ends once its queue is sent."""
        subscription.ended = True
        self._subscriptions.discard(subscription)
        subscription.ring()

    def _forget(self, subscription: "Subscription") -> None:
        with self._lock:
            self._drop(subscription)


class Subscription:
    """One client's stream: an iterator of bytes for a WSGI response body or a CustomResponder.

    Yields queued events as they come, a heartbeat comment after `heartbeat` seconds of silence,
    b"" when nothing is ready, and stops once the Broadcaster closed or dropped it and its queue
    is empty. `close()` (called by the server when the response ends or the client goes away)
    unsubscribes.
    """

    def __init__(self, broadcaster: Broadcaster, opening: Optional[bytes] = OPENING):
        self.broadcaster = broadcaster
        self.opening = opening  # sent first; not counted against max_queue
        self.queue: collections.deque = collections.deque()
        self.ended = False  # no more events will be queued: dropped, or the Broadcaster closed
        self.closed = False
        self.last_output = broadcaster.clock()
        self.wake: Optional[Callable[[], None]] = None  # set while the server has it parked

    def __iter__(self) -> "Subscription":
        return self

    def __next__(self) -> bytes:
        if self.opening is not None and not self.closed:
            opening, self.opening = self.opening, None
            self.last_output = self.broadcaster.clock()
            return (opening + self._take()) if self.queue else opening
        if self.queue:
            return self._take()
        if self.ended or self.closed:
            if self.queue:  # queued between the first look and the end
                return self._take()
            raise StopIteration
        heartbeat = self.broadcaster.heartbeat
        if heartbeat is not None:
            now = self.broadcaster.clock()
            if now - self.last_output >= heartbeat:
                self.last_output = now
                return HEARTBEAT
        return b""

    def park(self, wake: Callable[[], None]) -> Optional[float]:
        """The server will not pull again until `wake()` is called (on the next event or the
        end) or the returned seconds pass (the next heartbeat; None: no heartbeats)."""
        with self.broadcaster._lock:
            ready = bool(self.queue) or self.ended or self.closed
            self.wake = None if ready else wake
        if ready:  # something came between the server's pull and now
            wake()
        heartbeat = self.broadcaster.heartbeat
        if heartbeat is None:
            return None
        return max(0.0, self.last_output + heartbeat - self.broadcaster.clock())

    def ring(self) -> None:
        """Wake the server that parked this stream (the Broadcaster's lock is held)."""
        wake, self.wake = self.wake, None
        if wake is not None:
            wake()

    def _take(self) -> bytes:
        queue = self.queue
        parts = [queue.popleft()]
        size = len(parts[0])
        while queue and size < JOIN_LIMIT:
            part = queue.popleft()
            parts.append(part)
            size += len(part)
        if self.broadcaster.heartbeat is not None:
            self.last_output = self.broadcaster.clock()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Unsubscribe; the stream ends at once, dropping whatever is still queued."""
        if not self.closed:
            self.closed = True
            self.broadcaster._forget(self)
            self.queue.clear()


def _text(value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected str, not {type(value).__name__}")
    return value


def _split_lines(text: str) -> list:
    # The client ends a line at CRLF, lone CR or lone LF; so must we, or a CR would slip through.
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _check_field(name: str, value, forbidden: str) -> None:
    _text(value)
    for character in forbidden:
        if character in value:
            raise ValueError(f"SSE {name} must not contain {character!r}: {value!r}")
