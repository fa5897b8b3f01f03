"""Server-Sent Events: the wire format (checked by a parser written from the WHATWG algorithm),
the Broadcaster's queues, heartbeats, replay and drops on a fake clock, and real streams over
sockets from a Falcon app, a plain WSGI app and a bare handler, up to 1,000 subscribers at once."""

import codecs
import contextlib
import resource
import selectors
import socket
import statistics
import threading
import time

import falcon
import falcon.testing
import httptools
import pytest
from hypothesis import given, strategies as st

from hio_http.requesting import Request
from hio_http.responding import CustomResponder
from hio_http.serving import BareServer
from hio_http.sse import SSE_HEADERS, Broadcaster, format_event, last_event_id
from hio_http.testing import serve_in_thread

from conftest import raw_connect, read_until_closed


# -- a client-side reader, written from the spec, not from the module under test ---------------

class EventStreamParser:
    """The WHATWG "interpret an event stream" steps: UTF-8, lines ending in CRLF, CR or LF."""

    def __init__(self):
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buffer = ""
        self.started = False
        self.events = []  # dicts: type, data, id (the last event id when dispatched)
        self.comments = []  # (monotonic arrival time, text)
        self.retry = None
        self.last_id = ""
        self._data = None
        self._type = ""

    def feed(self, data: bytes) -> None:
        text = self.decoder.decode(data)
        if not self.started and text:
            self.started = True
            text = text.removeprefix("\ufeff")
        self.buffer += text
        while True:
            ends = [i for i in (self.buffer.find("\r"), self.buffer.find("\n")) if i >= 0]
            if not ends:
                return
            end = min(ends)
            if self.buffer[end] == "\r" and end == len(self.buffer) - 1:
                return  # a CR at the very end may be the start of a CRLF
            skip = 2 if self.buffer.startswith("\r\n", end) else 1
            line, self.buffer = self.buffer[:end], self.buffer[end + skip:]
            self._line(line)

    def _line(self, line: str) -> None:
        if not line:
            self._dispatch()
            return
        if line.startswith(":"):
            self.comments.append((time.monotonic(), line[1:]))
            return
        field, colon, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            self._data = (self._data or []) + [value]
        elif field == "event":
            self._type = value
        elif field == "id" and "\0" not in value:
            self.last_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)

    def _dispatch(self) -> None:
        data, self._data = self._data, None
        event_type, self._type = self._type, ""
        if data is not None:
            self.events.append({"type": event_type or "message", "data": "\n".join(data),
                                "id": self.last_id})


def parse(encoded: bytes) -> EventStreamParser:
    parser = EventStreamParser()
    parser.feed(encoded)
    return parser


class StreamReader:
    """An HTTP/1.1 response (chunked or not, several on one connection) feeding the SSE parser."""

    def __init__(self):
        self.parser = httptools.HttpResponseParser(self)
        self.stream = EventStreamParser()
        self.status = None
        self.headers = {}
        self.completed = 0  # responses that ended properly (e.g. the terminating chunk)
        self.eof = False

    @property
    def events(self):
        return self.stream.events

    def data(self):
        return [event["data"] for event in self.events]

    def heartbeats(self):
        return [at for at, text in self.stream.comments if text.strip() == "heartbeat"]

    def feed(self, data: bytes) -> None:
        if data:
            self.parser.feed_data(data)
        else:
            self.eof = True

    def on_message_begin(self):
        self.status, self.headers = None, {}

    def on_header(self, name, value):
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self):
        self.status = self.parser.get_status_code()

    def on_body(self, body):
        self.stream.feed(body)

    def on_message_complete(self):
        self.completed += 1


class StreamClient(StreamReader):
    """A blocking socket that asks for a stream and reads it until a condition holds."""

    def __init__(self, server, path="/events", headers=(), receive_buffer=None):
        super().__init__()
        family = socket.AF_INET6 if ":" in server.address[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if receive_buffer:  # before connecting, so the advertised window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(5)
        self.sock.connect(server.address[:2])
        self.get(path, headers)

    def get(self, path="/events", headers=()):
        lines = [f"GET {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers)]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))

    def wait_for(self, condition, timeout=5.0, what="condition"):
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.eof:
                raise AssertionError(f"{what} not met within {timeout} s (eof={self.eof}, "
                                     f"{len(self.events)} events)")
            self.sock.settimeout(min(remaining, 0.5))
            try:
                self.feed(self.sock.recv(65536))
            except socket.timeout:
                continue

    def wait_open(self):
        self.wait_for(lambda: self.stream.comments or self.stream.retry is not None,
                      what="stream opened")

    def close(self):
        self.sock.close()


def wait_until(condition, timeout=5.0, what="condition"):
    """Poll `condition` until it holds, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.01)


# -- format_event --------------------------------------------------------------------------------

def test_format_single_line_event():
    assert format_event("hello") == b"data: hello\n\n"


def test_format_multi_line_data_makes_one_data_line_each():
    encoded = format_event("one\ntwo\r\nthree\rfour\n")
    assert encoded == b"data: one\ndata: two\ndata: three\ndata: four\ndata: \n\n"
    assert parse(encoded).events == [{"type": "message", "data": "one\ntwo\nthree\nfour\n",
                                      "id": ""}]


def test_format_all_fields_and_comments():
    encoded = format_event(" lead", event="update", id="42", retry=2500, comment="a\nb")
    assert encoded == b": a\n: b\nretry: 2500\nid: 42\nevent: update\ndata:  lead\n\n"
    parsed = parse(encoded)
    assert parsed.events == [{"type": "update", "data": " lead", "id": "42"}]
    assert parsed.retry == 2500 and [text for _, text in parsed.comments] == [" a", " b"]
    assert format_event(comment="") == b":\n\n" and format_event(data="") == b"data: \n\n"


def test_format_encodes_utf8():
    encoded = format_event("héllo ☃ 🎉", id="é")
    assert "héllo ☃ 🎉".encode("utf-8") in encoded
    assert parse(encoded).events[0] == {"type": "message", "data": "héllo ☃ 🎉", "id": "é"}


@pytest.mark.parametrize("bad_id", ["a\nb", "a\rb", "a\0b", "\r\n"])
def test_format_rejects_ids_with_nul_cr_or_lf(bad_id):
    with pytest.raises(ValueError):
        format_event("x", id=bad_id)


@pytest.mark.parametrize("bad_event", ["a\nb", "a\rb"])
def test_format_rejects_event_names_with_cr_or_lf(bad_event):
    with pytest.raises(ValueError):
        format_event("x", event=bad_event)


def test_format_rejects_bad_retry_types_and_empty_events():
    with pytest.raises(ValueError):
        format_event("x", retry=-1)
    for bad in (1.5, "10", True):
        with pytest.raises(TypeError):
            format_event("x", retry=bad)
    with pytest.raises(TypeError):
        format_event(b"bytes")
    with pytest.raises(ValueError):
        format_event()


@given(data=st.text(), event=st.text().filter(lambda s: not set(s) & set("\r\n")),
       event_id=st.text().filter(lambda s: not set(s) & set("\0\r\n")))
def test_any_event_round_trips_through_a_spec_parser(data, event, event_id):
    parsed = parse(format_event(data, event=event, id=event_id))
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert parsed.events == [{"type": event or "message", "data": expected, "id": event_id}]


# -- last_event_id -------------------------------------------------------------------------------

def test_last_event_id_from_environ_falcon_and_bare_requests():
    assert last_event_id({"HTTP_LAST_EVENT_ID": "17"}) == "17"
    assert last_event_id({}) is None and last_event_id({"HTTP_LAST_EVENT_ID": ""}) is None
    # header values arrive latin-1 decoded; an id sent as UTF-8 comes back whole
    assert last_event_id({"HTTP_LAST_EVENT_ID": "é".encode("utf-8").decode("latin-1")}) == "é"
    assert last_event_id(falcon.testing.create_req(headers={"Last-Event-ID": "9"})) == "9"
    assert last_event_id(falcon.testing.create_req()) is None
    assert last_event_id(Request(headers=[("last-event-id", "abc")])) == "abc"
    assert last_event_id(Request(headers=[])) is None


# -- Broadcaster and Subscription on a fake clock ------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def drain(subscription) -> bytes:
    """Everything a subscription has ready now (up to its "not yet")."""
    out = []
    for chunk in subscription:
        if not chunk:
            break
        out.append(chunk)
    return b"".join(out)


def test_subscription_opens_then_yields_events_in_order_and_not_yet_between():
    broadcaster = Broadcaster(heartbeat=None)
    subscription = broadcaster.subscribe()
    assert next(subscription) == b": open\n\n"  # at once, so the response head goes out
    assert next(subscription) == b""
    assert broadcaster.publish("a") == "1"
    assert broadcaster.publish("b", event="note") == "2"
    assert broadcaster.publish("c", id="custom") == "custom"
    assert next(subscription) == (b"id: 1\ndata: a\n\n" b"id: 2\nevent: note\ndata: b\n\n"
                                  b"id: custom\ndata: c\n\n")
    assert next(subscription) == b""
    assert broadcaster.subscribers == 1


def test_configured_retry_comes_first():
    subscription = Broadcaster(retry=3000).subscribe()
    assert next(subscription) == b"retry: 3000\n\n"


def test_heartbeat_only_after_silence():
    clock = FakeClock()
    broadcaster = Broadcaster(heartbeat=15, clock=clock)
    subscription = broadcaster.subscribe()
    drain(subscription)
    clock.now += 14.9
    assert next(subscription) == b""
    clock.now += 0.1
    assert next(subscription) == b": heartbeat\n\n"
    assert next(subscription) == b""
    clock.now += 10
    broadcaster.publish("news")
    assert b"news" in next(subscription)  # output resets the silence
    clock.now += 14.9
    assert next(subscription) == b""
    clock.now += 0.1
    assert next(subscription) == b": heartbeat\n\n"


def test_no_heartbeat_when_disabled():
    clock = FakeClock()
    subscription = Broadcaster(heartbeat=0, clock=clock).subscribe()
    drain(subscription)
    clock.now += 1e6
    assert next(subscription) == b""


def test_last_event_id_replays_what_came_after_it():
    broadcaster = Broadcaster(history=3)
    for text in "abcde":
        broadcaster.publish(text)
    assert parse(drain(broadcaster.subscribe("3"))).events == [
        {"type": "message", "data": "d", "id": "4"}, {"type": "message", "data": "e", "id": "5"}]
    assert parse(drain(broadcaster.subscribe("5"))).events == []
    # too old for the history (or unknown): all of the history, the client may have missed it
    assert [e["data"] for e in parse(drain(broadcaster.subscribe("1"))).events] == ["c", "d", "e"]
    assert parse(drain(broadcaster.subscribe())).events == []  # a new client: live events only


def test_subscriber_that_falls_behind_is_dropped_and_its_stream_ends():
    broadcaster = Broadcaster(max_queue=3, heartbeat=None)
    slow, fast = broadcaster.subscribe(), broadcaster.subscribe()
    for number in range(1, 8):
        broadcaster.publish(str(number))
        drain(fast)
    assert broadcaster.subscribers == 1
    # what was queued before the drop still goes out, then the stream ends
    events = parse(b"".join(slow)).events
    assert [event["id"] for event in events][:3] == ["1", "2", "3"] and len(events) <= 4
    with pytest.raises(StopIteration):
        next(slow)
    broadcaster.publish("8")
    assert parse(drain(fast)).events[-1]["data"] == "8"


def test_close_unsubscribes_and_ends_the_stream():
    broadcaster = Broadcaster()
    subscription = broadcaster.subscribe()
    broadcaster.publish("pending")
    subscription.close()
    assert broadcaster.subscribers == 0
    with pytest.raises(StopIteration):
        next(subscription)
    subscription.close()  # twice is harmless


def test_broadcaster_close_ends_every_stream_after_what_is_queued():
    broadcaster = Broadcaster()
    first, second = broadcaster.subscribe(), broadcaster.subscribe()
    broadcaster.publish("last words")
    broadcaster.close()
    assert broadcaster.subscribers == 0
    for subscription in (first, second):
        assert parse(b"".join(subscription)).events[-1]["data"] == "last words"
    assert list(broadcaster.subscribe()) == []  # already over
    with pytest.raises(RuntimeError):
        broadcaster.publish("too late")


def test_publishing_from_many_threads_loses_and_reorders_nothing():
    broadcaster = Broadcaster(max_queue=100_000, heartbeat=None)
    subscription = broadcaster.subscribe()
    threads_count, per_thread = 4, 500
    start = threading.Barrier(threads_count)

    def publisher(number):
        start.wait(timeout=5)
        for sequence in range(per_thread):
            broadcaster.publish(f"{number}:{sequence}")

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    parser = EventStreamParser()
    deadline = time.monotonic() + 10
    while len(parser.events) < threads_count * per_thread and time.monotonic() < deadline:
        parser.feed(next(subscription))
    for thread in threads:
        thread.join(timeout=5)
    received = [tuple(map(int, event["data"].split(":"))) for event in parser.events]
    assert len(received) == threads_count * per_thread
    for number in range(threads_count):
        assert [s for n, s in received if n == number] == list(range(per_thread))
    assert sorted(int(event["id"]) for event in parser.events) == list(
        range(1, threads_count * per_thread + 1))


# -- real streams over sockets: Falcon, plain WSGI and a bare handler ---------------------------

def falcon_app(broadcaster):
    class Events:
        def on_get(self, req, resp):
            broadcaster.stream(req, resp)

    class Ping:
        def on_get(self, req, resp):
            resp.content_type = falcon.MEDIA_TEXT
            resp.text = "pong"

    app = falcon.App()
    app.add_route("/events", Events())
    app.add_route("/ping", Ping())
    return app


def plain_app(broadcaster):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/events":
            return broadcaster.wsgi_app(environ, start_response)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [b"pong"]
    return app


def bare_handler(broadcaster):
    def handler(request):
        if request.path == "/events":
            return broadcaster.responder(request)
        return CustomResponder(200, [("Content-Type", "text/plain")], b"pong")
    return handler


@pytest.fixture(params=["falcon", "wsgi", "bare"])
def stream_server(request, serve):
    """start(broadcaster, **settings) -> a server in a background thread streaming /events."""
    world = request.param
    with contextlib.ExitStack() as stack:
        def start(broadcaster, **settings):
            if world == "falcon":
                return serve(falcon_app(broadcaster), **settings)
            if world == "wsgi":
                return serve(plain_app(broadcaster), **settings)
            return stack.enter_context(serve_in_thread(
                None, cls=BareServer, handler=bare_handler(broadcaster), **settings))
        yield start


def test_events_arrive_in_order_as_published(stream_server):
    broadcaster = Broadcaster()
    server = stream_server(broadcaster)
    client = StreamClient(server)
    try:
        client.wait_open()  # before anything is published: the head goes out at once
        assert client.status == 200
        for name, value in SSE_HEADERS:
            assert client.headers[name.lower()] == value
        assert client.headers["transfer-encoding"] == "chunked"
        wait_until(lambda: broadcaster.subscribers == 1, what="subscribed")
        for number in range(1, 4):  # one at a time, each arriving before the next is sent
            broadcaster.publish(f"event {number}\nsecond line ☃", event="tick")
            client.wait_for(lambda: len(client.events) == number, what=f"event {number}")
        for number in range(4, 54):  # a burst
            broadcaster.publish(f"event {number}")
        client.wait_for(lambda: len(client.events) == 53, what="the burst")
        assert client.events[0] == {"type": "tick", "data": "event 1\nsecond line ☃", "id": "1"}
        assert [event["id"] for event in client.events] == [str(n) for n in range(1, 54)]
        assert client.data()[3:] == [f"event {n}" for n in range(4, 54)]
    finally:
        client.close()


def test_heartbeats_appear_when_idle(stream_server):
    broadcaster = Broadcaster(heartbeat=0.2)
    server = stream_server(broadcaster)
    client = StreamClient(server)
    try:
        client.wait_open()
        opened = time.monotonic()
        client.wait_for(lambda: len(client.heartbeats()) >= 3, timeout=3, what="3 heartbeats")
        beats = [opened] + client.heartbeats()
        gaps = [later - earlier for earlier, later in zip(beats, beats[1:])]
        assert all(gap > 0.1 for gap in gaps[1:]), gaps  # paced by the heartbeat, no flood
        assert client.events == []
    finally:
        client.close()


def test_last_event_id_replays_missed_events(stream_server):
    broadcaster = Broadcaster()
    server = stream_server(broadcaster)
    first = StreamClient(server)
    first.wait_open()
    for text in ("a", "b", "c"):
        broadcaster.publish(text)
    first.wait_for(lambda: len(first.events) == 3, what="first three")
    first.close()
    broadcaster.publish("d")
    broadcaster.publish("e")
    again = StreamClient(server, headers=[("Last-Event-ID", first.stream.last_id)])
    try:
        again.wait_for(lambda: len(again.events) == 2, what="replay")
        assert [(e["id"], e["data"]) for e in again.events] == [("4", "d"), ("5", "e")]
        broadcaster.publish("f")
        again.wait_for(lambda: len(again.events) == 3, what="live after replay")
        assert again.data() == ["d", "e", "f"]
    finally:
        again.close()


def test_non_reading_subscriber_is_dropped_while_others_continue(stream_server):
    broadcaster = Broadcaster(max_queue=4, history=1000, heartbeat=None)
    server = stream_server(broadcaster)
    slow = StreamClient(server, receive_buffer=4096)
    reader = StreamClient(server)
    try:
        slow.wait_open()
        reader.wait_open()
        wait_until(lambda: broadcaster.subscribers == 2, what="both subscribed")
        payload = "x" * 32 * 1024
        published = 0
        while broadcaster.subscribers == 2:
            assert published < 500, "the subscriber that stopped reading was never dropped"
            published += 1
            broadcaster.publish(payload)
            reader.wait_for(lambda: len(reader.events) == published, what=f"event {published}")
        print(f"dropped after {published} events of 32 KiB")
        for _ in range(3):  # the others go on after the drop
            published += 1
            broadcaster.publish(f"after the drop {published}")
        reader.wait_for(lambda: len(reader.events) == published, what="events after the drop")
        assert [event["id"] for event in reader.events] == [str(n) for n in range(1, published + 1)]
        # When the slow client reads again it gets an unbroken prefix, then a proper end.
        slow.wait_for(lambda: slow.completed == 1, timeout=10, what="end of the dropped stream")
        received = [int(event["id"]) for event in slow.events]
        assert received == list(range(1, len(received) + 1)) and len(received) < published
        # and reconnecting with its last id (as an EventSource does) catches it up
        slow.get(headers=[("Last-Event-ID", slow.stream.last_id)])
        slow.wait_for(lambda: len(slow.events) == published, what="catching up")
        assert [int(event["id"]) for event in slow.events] == list(range(1, published + 1))
    finally:
        slow.close()
        reader.close()


def test_closing_the_client_unsubscribes(stream_server):
    # The server learns that a client went away when writing to it fails: the heartbeat does it.
    broadcaster = Broadcaster(heartbeat=0.2)
    server = stream_server(broadcaster)
    clients = [StreamClient(server) for _ in range(3)]
    for client in clients:
        client.wait_open()
    wait_until(lambda: broadcaster.subscribers == 3, what="three subscribed")
    clients[0].close()
    wait_until(lambda: broadcaster.subscribers == 2, what="one gone")
    for client in clients[1:]:
        client.close()
    wait_until(lambda: broadcaster.subscribers == 0, what="all gone")


def test_broadcaster_close_ends_streams_cleanly_then_answers_204(stream_server):
    broadcaster = Broadcaster()
    server = stream_server(broadcaster)
    client = StreamClient(server)
    try:
        client.wait_open()
        wait_until(lambda: broadcaster.subscribers == 1, what="subscribed")
        broadcaster.publish("goodbye")
        broadcaster.close()
        client.wait_for(lambda: client.completed == 1, what="the end of the stream")
        assert client.data() == ["goodbye"]
        # the connection is still good; 204 tells an EventSource not to reconnect
        client.get()
        client.wait_for(lambda: client.completed == 2, what="the 204")
        assert client.status == 204
    finally:
        client.close()


def test_head_of_a_stream_ends_and_does_not_subscribe(stream_server, request):
    broadcaster = Broadcaster(heartbeat=0.2)
    server = stream_server(broadcaster)
    sock = raw_connect(server)
    try:
        sock.sendall(b"HEAD /events HTTP/1.1\r\nHost: test\r\n\r\n"
                     b"GET /ping HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        reply = read_until_closed(sock, timeout=3)
    finally:
        sock.close()
    head, _, rest = reply.partition(b"\r\n\r\n")
    if "falcon" in request.node.name:  # Falcon answers HEAD only where on_head is defined
        assert head.startswith(b"HTTP/1.1 405 "), reply
    else:
        assert head.startswith(b"HTTP/1.1 200 "), reply
        assert b"Content-Type: text/event-stream; charset=utf-8" in head
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(b"pong"), reply  # not stuck
    wait_until(lambda: broadcaster.subscribers == 0, what="no subscriber left")


def test_the_falcon_example_in_the_module_docstring_streams(serve):
    import hio_http.sse
    text = hio_http.sse.__doc__.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    example = "\n".join(line[4:] for line in text.splitlines())
    namespace = {"Broadcaster": Broadcaster, "app": falcon.App()}
    exec(example, namespace)
    server = serve(namespace["app"])
    client = StreamClient(server)
    try:
        client.wait_open()
        wait_until(lambda: namespace["events"].subscribers == 1, what="subscribed")
        namespace["events"].publish("hi")
        client.wait_for(lambda: client.data() == ["hi"], what="the example's event")
    finally:
        client.close()


# -- scale -----------------------------------------------------------------------------------

def raise_open_files_limit(needed=4096):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else max(soft, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < 2 * 1000 + 200:
        pytest.skip(f"needs about 2,200 open files; the hard limit is {hard}")


def timed_get(server):
    """One plain GET on a fresh connection; returns its latency in seconds."""
    started = time.monotonic()
    with socket.create_connection(server.address[:2], timeout=5) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"pong"), reply[:200]
    return time.monotonic() - started


@pytest.mark.slow
def test_thousand_subscribers_each_get_every_event_and_gets_stay_prompt(serve):
    raise_open_files_limit()
    count, rounds = 1000, 5
    broadcaster = Broadcaster(heartbeat=0.5)
    # A publish from this thread cannot wake the server's loop; waiting streams are pulled on
    # each pass of the Doist, so the tock bounds how late an event leaves: keep it small.
    # max_connections leaves room for the plain GETs beside the 1,000 streams.
    server = serve(falcon_app(broadcaster), tock=0.005, max_connections=count + 100)
    selector = selectors.DefaultSelector()
    readers = []
    try:
        started = time.monotonic()
        for _ in range(count):
            sock = socket.create_connection(server.address[:2], timeout=5)
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n")
            sock.setblocking(False)
            reader = StreamReader()
            readers.append((sock, reader))
            selector.register(sock, selectors.EVENT_READ, reader)

        def pump_until(condition, timeout, what):
            deadline = time.monotonic() + timeout
            while not condition():
                if time.monotonic() > deadline:
                    raise AssertionError(f"{what} not met within {timeout} s")
                for key, _ in selector.select(timeout=0.05):
                    try:
                        key.data.feed(key.fileobj.recv(65536))
                    except BlockingIOError:
                        pass

        pump_until(lambda: all(r.stream.comments for _, r in readers), 15, "all streams open")
        assert broadcaster.subscribers == count
        print(f"\n{count} streams open in {time.monotonic() - started:.2f} s")

        latencies, failures, stop = [], [], threading.Event()

        def getter():
            try:
                while not stop.is_set():
                    latencies.append(timed_get(server))
            except BaseException as ex:  # surfaced below
                failures.append(ex)

        get_thread = threading.Thread(target=getter, daemon=True)
        get_thread.start()
        fan_outs = []
        for number in range(1, rounds + 1):
            published = time.monotonic()
            broadcaster.publish(f"broadcast {number}", event="tick")
            pump_until(lambda: all(len(r.events) >= number for _, r in readers), 10,
                       f"every stream has event {number}")
            fan_outs.append(time.monotonic() - published)
            pause = time.monotonic() + 0.1  # spread the broadcast out, so GETs overlap it
            pump_until(lambda: time.monotonic() > pause, 1, "a pause")
        stop.set()
        get_thread.join(timeout=10)
        assert not get_thread.is_alive() and not failures, failures
        assert len(latencies) >= 5, "too few GETs overlapped the broadcast"
        expected = [{"type": "tick", "data": f"broadcast {n}", "id": str(n)}
                    for n in range(1, rounds + 1)]
        assert all(reader.events == expected for _, reader in readers)
        print(f"fan-out to {count} streams: " + ", ".join(f"{t * 1000:.0f}" for t in fan_outs)
              + " ms")
        print(f"{len(latencies)} GETs during the broadcast: p50 "
              f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
        assert max(latencies) < 1.0
    finally:
        for sock, _ in readers:
            selector.unregister(sock)
            sock.close()
        selector.close()
    closed = time.monotonic()
    wait_until(lambda: broadcaster.subscribers == 0, timeout=10, what="every stream unsubscribed")
    print(f"all {count} subscriptions gone {time.monotonic() - closed:.2f} s after the clients "
          "closed")
