"""openServer and ServerDoer: open, serve, always close; under our Doist and under hio's."""

import socket
import threading
import time

import pytest
import requests

from hio_http.doing import Doer, Doist
from hio_http.serving import Server, ServerDoer, openServer

from conftest import is_closed


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"hi"]


def serve_once(server, request, half_close=False):
    """Send `request` on a raw socket and service `server` by hand until it closes."""
    with socket.create_connection(server.address[:2], timeout=5) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        received = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            server.service()
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                break
            received += chunk
        return received


def test_open_server_listens_on_a_free_port_and_serves_by_hand():
    with openServer(app=app) as server:
        host, port = server.address[:2]
        assert host == "127.0.0.1" and port > 0
        assert server.url == f"http://127.0.0.1:{port}"
        data = serve_once(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"hi")


def test_open_server_closes_everything_even_when_the_block_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with openServer(app=app) as server:
            address = server.address[:2]
            client = socket.create_connection(address, timeout=5)
            server.service()  # accept it
            assert len(server.stewards) == 1
            raise RuntimeError("boom")
    assert is_closed(client)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2)


def test_half_closed_client_still_gets_its_answer():
    with openServer(app=app) as server:
        received = serve_once(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", half_close=True)
        assert received.startswith(b"HTTP/1.1 200 OK") and received.endswith(b"hi")
        assert server.stewards == set()


def test_client_gone_mid_body_frees_the_connection_at_once(serve):
    server = serve(app, body_timeout=30)
    sock = socket.create_connection(server.address[:2], timeout=5)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    sock.shutdown(socket.SHUT_WR)
    assert is_closed(sock, timeout=3)  # not after the 30 s body timeout


class Counter(Doer):
    def __init__(self, **kwa):
        super().__init__(**kwa)
        self.turns = 0

    def recur(self, tyme):
        self.turns += 1
        return False


def test_server_and_user_doer_share_one_real_time_doist():
    counter = Counter(tock=0.0)  # every pass: it must progress while requests are served
    doist = Doist(tock=0.05, real=True)
    server = Server(app, poller=doist.poller)
    server.open()
    results = []

    def client():
        for _ in range(20):
            results.append(requests.get(server.url, timeout=5).text)

    thread = threading.Thread(target=client)
    thread.start()

    class Until(Doer):
        def recur(self, tyme):
            if not thread.is_alive():
                doist.remove([server_doer, counter, self])
            return False

    server_doer = ServerDoer(server)
    doist.do(doers=[server_doer, counter, Until()], limit=20)
    thread.join()
    assert results == ["hi"] * 20
    assert counter.turns >= 3
    assert server.acceptor is None  # closed by the doer's exit


def test_server_doer_under_hio_doist():
    hio_doing = pytest.importorskip(
        "hio.base.doing", reason="the hio package is not installable on this Python")
    server = Server(app)
    results = []

    class Client(Doer):
        """A nonblocking raw client doer, so everything runs in hio's single loop."""

        def enter(self):
            self.sock = None
            self.received = b""

        def recur(self, tyme):
            if self.sock is None:
                self.sock = socket.create_connection(server.address[:2], timeout=5)
                self.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                self.sock.setblocking(False)
                return False
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return False
            self.received += chunk
            if chunk:
                return False
            results.append(self.received)
            return True

        def exit(self):
            if self.sock is not None:
                self.sock.close()

    server_doer = ServerDoer(server)
    client = Client()
    hio_doing.Doist(tock=0.01, real=True, limit=1.5, doers=[server_doer, client]).do()
    assert client.done is True
    assert results and results[0].startswith(b"HTTP/1.1 200 OK") and results[0].endswith(b"hi")
    assert server.acceptor is None
