"""Server and raw client driven tick by tick in a simulated Doist: deterministic, no threads."""

import socket
from wsgiref.validate import validator

from hio_http.doing import Doist
from hio_http.serving import Server, ServerDoer
from hio_http.testing import run_until


def app(environ, start_response):
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def stream_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def body():
        for word in (b"alpha", b"", b"", b"beta"):  # b"": not ready, come back next tick
            yield word

    return body()


def start(app_, **settings):
    server = Server(validator(app_), **settings)
    doist = Doist(tock=0.25, real=False, doers=[ServerDoer(server)])
    doist.enter()
    return doist, server


def client(server):
    sock = socket.create_connection(server.address[:2], timeout=5)
    sock.setblocking(False)
    return sock


def receive(sock, into):
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return False
    into.append(data)
    return data == b""


def run_exchange():
    doist, server = start(app)
    try:
        sock = client(server)
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        received = []
        ticks = run_until(doist, lambda: receive(sock, received) or b"/one" in b"".join(received))
        sock.sendall(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        ticks_again = run_until(doist, lambda: receive(sock, received)
                                or b"/two" in b"".join(received))
        sock.close()
        return ticks, ticks_again, b"".join(received)
    finally:
        doist.exit()


def test_request_answered_in_a_known_number_of_ticks():
    first = run_exchange()
    assert first == run_exchange() == run_exchange()  # the same ticks, every run
    ticks, ticks_again, data = first
    assert ticks <= 3 and ticks_again <= 2
    assert data.count(b"HTTP/1.1 200 OK") == 2


def test_not_ready_items_resume_on_later_ticks():
    doist, server = start(stream_app)
    try:
        sock = client(server)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = []
        run_until(doist, lambda: receive(sock, received), max_ticks=20)
        data = b"".join(received)
        assert data.endswith(b"5\r\nalpha\r\n4\r\nbeta\r\n0\r\n\r\n")
    finally:
        doist.exit()


def test_idle_timeout_follows_simulated_time():
    doist, server = start(app, idle_timeout=2.0)
    try:
        sock = client(server)
        run_until(doist, lambda: len(server.stewards) == 1, max_ticks=5)
        opened_at = doist.tyme
        received = []
        run_until(doist, lambda: receive(sock, received), max_ticks=100)
        assert 2.0 <= doist.tyme - opened_at <= 3.0  # simulated seconds, not wall time
        assert server.stewards == set()
    finally:
        doist.exit()
