"""Rolling restarts behind a real HAProxy (PROXY protocol v2, health checks, retries, option
redispatch): two command-line instances stopped and started in turn under keep-alive load
lose no request. And the drain itself, in process: what an idle connection gets meanwhile."""

import importlib.util
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from hio_http import Doist, Server, ServerDoer

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "rolling" / "rolling.py"
HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists()
                                      else None)


def load_rolling():
    spec = importlib.util.spec_from_file_location("rolling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(HAPROXY is None,
                    reason="haproxy is not installed here (.ci/run installs it; CI runs this test)")
def test_rolling_restart_behind_haproxy_loses_nothing():
    tally = load_rolling().rolling_restart("hio_http", sys.executable, clients=4, rounds=2,
                                           haproxy=HAPROXY, limit=45.0)
    print(f"\nrolling restart behind HAProxy: {tally['sent']} requests, {tally['failed']} "
          f"failed, {tally['not_ok']} non-2xx")
    assert tally["sent"] > 2000
    assert (tally["failed"], tally["not_ok"]) == (0, 0), tally["errors"][:5]


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


class Serving:
    """A server on a Doist in a thread; `stop()` begins a graceful stop, as SIGTERM does."""

    def __init__(self, app, **settings):
        self.server = Server(app, **settings)
        self.server.open()
        self.doer = ServerDoer(self.server)
        doist = Doist(tock=0.01, real=True, limit=30.0)
        self.thread = threading.Thread(target=doist.do, kwargs={"doers": [self.doer]},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.doer.stop()
        self.thread.join(15)
        assert not self.thread.is_alive()


def request(sock, path="/"):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"hello" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def closed_by_peer(sock, timeout):
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False


def test_a_request_on_an_idle_connection_while_draining_is_answered_with_close():
    with Serving(hello, drain_window=5.0, graceful_timeout=10.0) as served:
        sock = socket.create_connection(served.server.address[:2], timeout=5)
        assert b"200 OK" in request(sock)  # an idle keep-alive connection now
        served.doer.stop()
        assert not closed_by_peer(sock, 0.5)  # still open: a request may be on its way
        answer = request(sock)
        assert b"200 OK" in answer and b"Connection: close" in answer
        assert closed_by_peer(sock, 5)
        sock.close()


def test_idle_connections_close_when_the_drain_window_ends():
    with Serving(hello, drain_window=0.6, graceful_timeout=10.0) as served:
        sock = socket.create_connection(served.server.address[:2], timeout=5)
        assert b"200 OK" in request(sock)
        started = time.monotonic()
        served.doer.stop()
        assert closed_by_peer(sock, 5)
        assert 0.5 <= time.monotonic() - started < 3
        sock.close()
        served.thread.join(5)
        assert served.doer.done  # drained, well before the graceful timeout


def test_an_idle_deadline_never_closes_a_connection_whose_unread_bytes_hold_a_request():
    from hio_http.testing import Loop

    with Loop(hello, drain_window=0.0, graceful_timeout=5.0) as loop:
        sock = socket.create_connection(loop.server.address[:2], timeout=5)
        sock.setblocking(False)
        received = bytearray()

        def answered(count):
            try:
                received.extend(sock.recv(65536))
            except BlockingIOError:
                pass
            return received.count(b"hello") >= count

        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        loop.run_until(lambda: answered(1))
        loop.server.shutdown()  # no drain window: the idle connection is due to close now
        sock.sendall(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")  # ...as a request arrives
        # The sweep comes before the loop has read those bytes.
        loop.server.sweep(loop.server.clock() + 1.0)
        loop.run_until(lambda: answered(2))
        second = bytes(received).split(b"hello", 1)[1]
        assert second.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in second
        sock.close()
