"""An idle server sleeps: under a real-time Doist the ServerDoer runs only when a deadline sweep
is due, a response waits on the app, or a stop began; everything else wakes it through the
Poller. These tests count its turns and check nothing is answered late because of a nap."""

import http.client
import socket
import threading
import time

import falcon
import pytest

from hio_http import BareServer, Doist, Server, ServerDoer
from hio_http.sse import Broadcaster


class CountingServerDoer(ServerDoer):
    turns = 0

    def recur(self, tyme):
        self.turns += 1
        return super().recur(tyme)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"hi"]


def slow_stream(environ, start_response):
    """Says "not yet" (b"") for 0.3 s, then answers: a response parked on the app."""
    until = time.monotonic() + 0.3
    start_response("200 OK", [("Content-Type", "text/plain")])
    while time.monotonic() < until:
        yield b""
    yield b"done"


def router(environ, start_response):
    app = slow_stream if environ["PATH_INFO"] == "/slow" else hello
    return app(environ, start_response)


@pytest.fixture
def running():
    """running(**settings) -> (server, doer): a Server (or the `server=` given) under a
    real-time Doist (tock 0.01) in a background thread, stopped through `doer.stop()` at the
    end."""
    started = []

    def start(server=None, **settings):
        if server is None:
            server = Server(router, host="127.0.0.1", port=0, **settings)
        doer = CountingServerDoer(server)
        doist = Doist(tock=0.01, real=True, doers=[doer])
        thread = threading.Thread(target=doist.do, kwargs={"limit": 60.0}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 5.0
        while not server.opened and time.monotonic() < deadline:
            time.sleep(0.01)
        started.append((doer, thread))
        return server, doer

    yield start
    for doer, thread in started:
        doer.stop()
        thread.join(5.0)
        assert not thread.is_alive(), "the server did not stop within 5 s of stop()"


def get(connection, path="/"):
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read()


def test_idle_connections_cost_no_turns_and_are_answered_at_once(running):
    server, doer = running()
    host, port = server.address[:2]
    clients = [http.client.HTTPConnection(host, port, timeout=5) for _ in range(20)]
    try:
        for client in clients:
            assert get(client) == (200, b"hi")
        before = doer.turns
        time.sleep(1.0)
        idle_turns = doer.turns - before
        # Every 0.01 s would be ~100 turns; it sleeps until the earliest deadline (75 s away).
        assert idle_turns <= 3, f"{idle_turns} turns in 1 s with 20 idle connections"
        start = time.monotonic()
        assert get(clients[7]) == (200, b"hi")
        assert time.monotonic() - start < 0.2
    finally:
        for client in clients:
            client.close()


def test_a_response_parked_on_the_app_is_resumed_every_tick_while_it_waits(running):
    server, doer = running()
    client = http.client.HTTPConnection(*server.address[:2], timeout=5)
    try:
        assert get(client) == (200, b"hi")
        time.sleep(0.3)  # the doer is asleep now
        before, start = doer.turns, time.monotonic()
        assert get(client, "/slow") == (200, b"done")
        elapsed = time.monotonic() - start
        assert 0.3 <= elapsed < 1.0, f"answered after {elapsed:.2f} s"
        assert doer.turns - before >= 10  # it was pulled on every tick (0.01 s) meanwhile
    finally:
        client.close()


def test_a_deadline_set_while_asleep_is_kept_on_time(running):
    server, doer = running(idle_timeout=0.5)
    time.sleep(0.7)  # no connections, no deadlines: the doer sleeps its longest nap
    sock = socket.create_connection(server.address[:2], timeout=5)
    opened = time.monotonic()
    try:
        assert sock.recv(1) == b""  # the server closes the idle connection
    finally:
        sock.close()
    closed_after = time.monotonic() - opened
    # Not at once (a stale tyme from before the nap), not after the nap (no wake for it).
    assert 0.45 <= closed_after < 1.5, f"closed {closed_after:.2f} s after connecting"


def test_stop_wakes_a_sleeping_server(running):
    server, doer = running()
    time.sleep(0.3)
    stopped = time.monotonic()
    doer.stop()
    deadline = stopped + 5.0
    while not doer.done and time.monotonic() < deadline:
        time.sleep(0.005)
    assert doer.done
    assert time.monotonic() - stopped < 0.2


def event_server(kind, events):
    if kind == "bare":
        return BareServer(handler=events.responder, host="127.0.0.1", port=0)
    app = falcon.App()

    class Events:
        def on_get(self, req, resp):
            events.stream(req, resp)

    app.add_route("/events", Events())
    return Server(app, host="127.0.0.1", port=0)


def subscribe(server, count):
    socks = []
    for _ in range(count):
        sock = socket.create_connection(server.address[:2], timeout=5)
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        socks.append(sock)
    for sock in socks:  # the head and the opening comment
        received = b""
        while b": open\n\n" not in received:
            received += sock.recv(4096)
    return socks


def read_until(sock, marker, timeout=3.0):
    sock.settimeout(timeout)
    received = b""
    while marker not in received:
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    return received


@pytest.mark.parametrize("kind", ["bare", "falcon"])
def test_idle_event_streams_cost_no_turns_and_wake_on_publish(running, kind):
    events = Broadcaster(heartbeat=None)
    server, doer = running(server=event_server(kind, events))
    socks = subscribe(server, 200)
    try:
        time.sleep(0.2)
        before = doer.turns
        time.sleep(1.0)
        idle_turns = doer.turns - before
        # Polled, 200 parked streams would keep the doer at every tick (~100 turns).
        assert idle_turns <= 3, f"{idle_turns} turns in 1 s with 200 idle event streams"
        published = time.monotonic()
        threading.Thread(target=events.publish, args=("tick",)).start()
        for sock in socks:
            assert b"data: tick\n\n" in read_until(sock, b"data: tick\n\n")
        assert time.monotonic() - published < 1.0
        events.publish("tock")  # from this thread too, while the doer sleeps again
        assert b"data: tock\n\n" in read_until(socks[-1], b"data: tock\n\n")
    finally:
        for sock in socks:
            sock.close()


def test_a_parked_stream_still_gets_its_heartbeat(running):
    events = Broadcaster(heartbeat=0.3)
    server, doer = running(server=event_server("bare", events))
    (sock,) = subscribe(server, 1)
    try:
        opened = time.monotonic()
        assert b": heartbeat" in read_until(sock, b": heartbeat")
        # due 0.3 s after the opening; deadlines are met within sweep_interval (0.5 s)
        assert 0.25 <= time.monotonic() - opened < 1.2
        assert b": heartbeat" in read_until(sock, b": heartbeat")  # and again
    finally:
        sock.close()
