"""WebSockets (RFC 6455) against a real third-party client (the `websockets` package's
synchronous client) and, for what a well-behaved client never sends, raw frames over a socket."""

import base64
import contextlib
import json
import logging
import os
import queue
import socket
import ssl
import struct
import threading
import time
import tracemalloc

import falcon
import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from hio_http import BareServer, Server, ServerDoer
from hio_http.doing import Doer, Doist
from hio_http.testing import serve_in_thread
from hio_http.websocket import Room, WebSocketHandler

from conftest import server_context

# Every test here runs in a few seconds at most; the suite's WebSocket part stays under 30 s.
TIMEOUT = 5.0

# -- endpoints --------------------------------------------------------------------------------

heard: "queue.Queue" = queue.Queue()  # what handlers saw: (event, ...) tuples for the test


class Echo(WebSocketHandler):
    """Echoes messages; a few words ask for something else."""

    subprotocols = ["chat.v2", "chat.v1"]

    def on_open(self, request):
        heard.put(("open", request.path, request.query, self.subprotocol))

    def on_message(self, message):
        if message == "boom":
            raise RuntimeError("a handler failure the test asked for")
        if message == "close me":
            self.close(4000, "as you asked")
            return
        if message == "describe":  # what arrived last, reassembled
            self.send(json.dumps({"type": type(self.last).__name__, "size": len(self.last)}))
            return
        self.last = message
        self.send(message)

    def on_close(self, code, reason):
        heard.put(("close", code, reason))


class Flood(WebSocketHandler):
    """On "flood", sends 64 KiB messages until send() refuses one (a client that never reads)."""

    def on_message(self, message):
        results = []
        most = 0
        for _ in range(2000):
            results.append(self.send(b"x" * 65536))
            most = max(most, self.buffered)
            if not results[-1]:
                break
        heard.put(("flood", results.count(True), results[-1], most, self.closed))

    def on_close(self, code, reason):
        heard.put(("close", code, reason))


class Broken(WebSocketHandler):
    def on_open(self, request):
        raise RuntimeError("a failure on open the test asked for")

    def on_close(self, code, reason):
        heard.put(("close", code, reason))


class Gatekeeper(Echo):
    def on_connect(self, request):
        return request.header("authorization") == "Bearer open-sesame"


news = Room()


class Subscriber(WebSocketHandler):
    def on_open(self, request):
        news.join(self)
        self.send("joined")


ENDPOINTS = {"/ws/echo": Echo, "/ws/flood": Flood, "/ws/gate": Gatekeeper,
             "/ws/news": Subscriber, "/ws/broken": Broken}


def hello_app():
    class Hello:
        def on_get(self, req, resp):
            resp.media = {"hello": "websocket neighbour"}

    app = falcon.App()
    app.add_route("/hello", Hello())
    return app


@pytest.fixture
def server():
    with serve_in_thread(hello_app(), websockets=ENDPOINTS, sweep_interval=0.05) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_events():
    while not heard.empty():
        heard.get_nowait()


def ws_url(server, path="/ws/echo"):
    return server.url.replace("http://", "ws://").replace("https://", "wss://") + path


def wait_for(event, timeout=TIMEOUT):
    """The next recorded handler event named `event` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        item = heard.get(timeout=max(0.01, deadline - time.monotonic()))
        if item[0] == event:
            return item


# -- raw client (for what the real client never sends) -----------------------------------------


class RawClient:
    """A blocking socket that did the opening handshake and reads server frames."""

    def __init__(self, server, path="/ws/echo", headers=b""):
        self.sock = socket.create_connection(server.address[:2], timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
                          b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Key: " + key + b"\r\n"
                          b"Sec-WebSocket-Version: 13\r\n" + headers + b"\r\n")
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "closed during the handshake"
            self.buffer += chunk
        self.head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert self.head.startswith(b"HTTP/1.1 101 "), self.head

    def send_frame(self, opcode, payload, fin=True, masked=True):
        first = (0x80 if fin else 0) | opcode
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", first, (0x80 if masked else 0) | length)
        elif length < 65536:
            header = struct.pack("!BBH", first, (0x80 if masked else 0) | 126, length)
        else:
            header = struct.pack("!BBQ", first, (0x80 if masked else 0) | 127, length)
        if masked:
            mask = os.urandom(4)
            key = (mask * (length // 4 + 1))[:length]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(
                length, "big")
            header += mask
        self.sock.sendall(header + payload)

    def _take(self, count):
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the server closed the connection")
            self.buffer += chunk
        taken, self.buffer = self.buffer[:count], self.buffer[count:]
        return taken

    def read_frame(self):
        """(opcode, payload) of the next frame from the server (never masked)."""
        first, second = self._take(2)
        assert not second & 0x80, "server frames are not masked"
        length = second & 0x7F
        if length == 126:
            length, = struct.unpack("!H", self._take(2))
        elif length == 127:
            length, = struct.unpack("!Q", self._take(8))
        return first & 0x0F, self._take(length)

    def read_close(self):
        """(code, reason) of the server's Close frame, skipping other frames."""
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x8:
                code, = struct.unpack("!H", payload[:2])
                return code, payload[2:].decode()

    def closed_by_server(self):
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


def raw_request(server, head):
    """Send a raw request head; return the whole response (the server closes after it)."""
    with socket.create_connection(server.address[:2], timeout=TIMEOUT) as sock:
        sock.sendall(head)
        response = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return response
            response += chunk


# -- messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["deflate", None])
def test_text_and_binary_messages_echo(server, compression):
    with connect(ws_url(server) + "?room=1", compression=compression) as ws:
        ws.send("hello, wörld")
        assert ws.recv(timeout=TIMEOUT) == "hello, wörld"
        ws.send(b"\x00\xffbinary")
        assert ws.recv(timeout=TIMEOUT) == b"\x00\xffbinary"
        ws.send("")
        assert ws.recv(timeout=TIMEOUT) == ""
    assert wait_for("open")[1:3] == ("/ws/echo", "room=1")
    assert wait_for("close")[1:] == (1000, "")


def test_fragmented_messages_are_reassembled(server):
    with connect(ws_url(server), compression=None) as ws:
        ws.send(["frag", "mented ", "téxt"])  # one message in three frames
        assert ws.recv(timeout=TIMEOUT) == "fragmented téxt"
        ws.send("describe")
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"type": "str", "size": 15}
        ws.send([b"\x01" * 1000, b"\x02" * 1000, b"\x03"])
        assert ws.recv(timeout=TIMEOUT) == b"\x01" * 1000 + b"\x02" * 1000 + b"\x03"
        ws.send("describe")
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"type": "bytes", "size": 2001}


def test_large_messages_both_ways(server):
    text = "0123456789abcdef" * (512 * 1024 // 16)
    data = os.urandom(512 * 1024)
    with connect(ws_url(server), compression=None) as ws:
        ws.send(text)
        assert ws.recv(timeout=TIMEOUT) == text
        ws.send(data)
        assert ws.recv(timeout=TIMEOUT) == data


def test_permessage_deflate_is_negotiated_and_works(server):
    text = "compress me " * 20000  # 240 KB that deflate shrinks a lot
    with connect(ws_url(server), compression="deflate") as ws:
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        for _ in range(3):  # context takeover: later messages reuse the window
            ws.send(text)
            assert ws.recv(timeout=TIMEOUT) == text
        ws.send(["frag", "ments"])
        assert ws.recv(timeout=TIMEOUT) == "fragments"


def test_compression_can_be_turned_off():
    with serve_in_thread(hello_app(), websockets=ENDPOINTS, ws_compression=False) as server:
        with connect(ws_url(server), compression="deflate") as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            ws.send("plain")
            assert ws.recv(timeout=TIMEOUT) == "plain"


def test_subprotocol_negotiation(server):
    # The first protocol the client offers that the handler speaks is chosen.
    with connect(ws_url(server), subprotocols=["mqtt", "chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v1"
    assert wait_for("open")[3] == "chat.v1"
    with connect(ws_url(server), subprotocols=["mqtt"]) as ws:  # none shared: no protocol
        assert ws.subprotocol is None
        ws.send("still works")
        assert ws.recv(timeout=TIMEOUT) == "still works"


def test_ping_answered_with_pong(server):
    with connect(ws_url(server)) as ws:
        assert ws.ping(b"are you there").wait(TIMEOUT)


def test_server_pings_an_idle_client_and_drops_one_that_never_answers():
    with serve_in_thread(hello_app(), websockets=ENDPOINTS, ws_ping_interval=0.3,
                         ws_ping_timeout=0.3, sweep_interval=0.02) as server:
        client = RawClient(server)
        try:
            started = time.monotonic()
            opcode, payload = client.read_frame()
            assert opcode == 0x9 and time.monotonic() - started >= 0.25  # a ping, when idle
            client.send_frame(0xA, payload)  # pong: the connection lives on
            opcode, payload = client.read_frame()
            assert opcode == 0x9  # the next ping, an interval later; this one goes unanswered
            assert client.read_close() == (1011, "keepalive ping timeout")
            assert client.closed_by_server()
        finally:
            client.close()
    assert wait_for("close")[1] == 1011


# -- closing --------------------------------------------------------------------------------------


def test_client_closes_normally(server):
    with connect(ws_url(server)) as ws:
        ws.send("bye soon")
        assert ws.recv(timeout=TIMEOUT) == "bye soon"
        ws.close(1000, "done here")
        assert ws.close_code == 1000  # the server answered the closing handshake
    assert wait_for("close")[1:] == (1000, "done here")


def test_server_initiated_close(server):
    with connect(ws_url(server)) as ws:
        ws.send("close me")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=TIMEOUT)
        assert (ws.close_code, ws.close_reason) == (4000, "as you asked")
    assert wait_for("close")[1:] == (4000, "as you asked")  # the client echoed our code


def test_oversized_message_closes_with_1009():
    with serve_in_thread(hello_app(), websockets=ENDPOINTS, ws_max_message=64 * 1024) as server:
        with connect(ws_url(server), compression=None) as ws:
            ws.send(b"x" * (64 * 1024))  # at the limit: fine
            assert len(ws.recv(timeout=TIMEOUT)) == 64 * 1024
            ws.send(["y" * 40000, "y" * 40000])  # fragments add up past the limit
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=TIMEOUT)
            assert ws.close_code == 1009


def test_compressed_bomb_closes_with_1009_without_inflating_it():
    # 64 MiB of zeros deflate to about 64 KB. The server inflates small slices and stops soon
    # after the 1 MiB limit: the process's memory peak stays far below the bomb's size (the
    # server runs in this process, in a thread, so tracemalloc sees its allocations).
    bomb = bytes(64 << 20)
    with serve_in_thread(hello_app(), websockets=ENDPOINTS) as server:
        with connect(ws_url(server), compression="deflate", max_size=None) as ws:
            tracemalloc.start()
            try:
                ws.send(bomb)
                with pytest.raises(ConnectionClosed):
                    ws.recv(timeout=TIMEOUT)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert ws.close_code == 1009
    assert peak < 48 << 20, f"{peak >> 20} MiB allocated at the peak"


@pytest.mark.parametrize("frame, code", [
    ((0x1, b"unmasked", True, False), 1002),         # RFC 6455 §5.1: clients must mask
    ((0x1, b"bad \xff\xfe utf-8", True, True), 1007),  # §8.1: text must be valid UTF-8
    ((0x3, b"reserved opcode", True, True), 1002),   # §5.2: opcodes 3-7 are reserved
    ((0x9, b"fragmented ping", False, True), 1002),  # §5.4: control frames are never fragmented
    ((0x0, b"continuation of nothing", True, True), 1002),
], ids=["unmasked", "invalid-utf8", "reserved-opcode", "fragmented-control", "orphan-continuation"])
def test_protocol_violations_close_with_the_right_code(server, frame, code):
    client = RawClient(server)
    try:
        opcode, payload, fin, masked = frame
        client.send_frame(opcode, payload, fin=fin, masked=masked)
        assert client.read_close()[0] == code
        assert client.closed_by_server()  # a failed connection is not kept waiting
    finally:
        client.close()
    assert wait_for("close")[1] == code


def test_handler_exception_closes_only_its_connection(server, caplog):
    caplog.set_level(logging.ERROR, "hio_http.websocket")
    with connect(ws_url(server)) as calm, connect(ws_url(server)) as failing:
        failing.send("boom")
        with pytest.raises(ConnectionClosed):
            failing.recv(timeout=TIMEOUT)
        assert failing.close_code == 1011
        calm.send("still here")
        assert calm.recv(timeout=TIMEOUT) == "still here"
    assert "a handler failure the test asked for" in caplog.text
    assert requests.get(server.url + "/hello", timeout=TIMEOUT).ok


def test_exception_in_on_open_closes_with_1011(server, caplog):
    caplog.set_level(logging.ERROR, "hio_http.websocket")
    with connect(ws_url(server, "/ws/broken")) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=TIMEOUT)
        assert ws.close_code == 1011
    assert wait_for("close")[1] == 1011
    assert "a failure on open the test asked for" in caplog.text


def test_graceful_shutdown_closes_websockets_with_1001():
    server = Server(hello_app(), websockets=ENDPOINTS)
    server.open()
    server_doer = ServerDoer(server)
    doist = Doist(tock=0.01, real=True, limit=20.0)
    thread = threading.Thread(target=doist.do, kwargs={"doers": [server_doer]}, daemon=True)
    thread.start()
    try:
        with connect(ws_url(server)) as first, connect(ws_url(server)) as second:
            first.send("hi")
            assert first.recv(timeout=TIMEOUT) == "hi"
            server_doer.stop()  # as SIGTERM does
            for ws in (first, second):
                with pytest.raises(ConnectionClosed):
                    ws.recv(timeout=TIMEOUT)
                assert (ws.close_code, ws.close_reason) == (1001, "server shutting down")
        thread.join(TIMEOUT)
        assert not thread.is_alive() and server_doer.done  # drained, not timed out
    finally:
        server_doer.stop()
        thread.join(TIMEOUT)
        server.close()


# -- handshakes and neighbours --------------------------------------------------------------------


def test_wsgi_app_and_websockets_share_a_port(server):
    with requests.Session() as http, connect(ws_url(server)) as ws:
        assert http.get(server.url + "/hello", timeout=TIMEOUT).json() == {
            "hello": "websocket neighbour"}
        ws.send("over the same port")
        assert ws.recv(timeout=TIMEOUT) == "over the same port"
        assert http.get(server.url + "/hello", timeout=TIMEOUT).ok  # keep-alive still fine


def test_bare_server_serves_websockets():
    with serve_in_thread(None, cls=BareServer, websockets=ENDPOINTS) as server:
        with connect(ws_url(server)) as ws:
            ws.send("bare")
            assert ws.recv(timeout=TIMEOUT) == "bare"
        assert requests.get(server.url + "/nothing", timeout=TIMEOUT).status_code == 404


def test_unknown_path_gets_404(server):
    with pytest.raises(InvalidStatus) as caught:
        connect(ws_url(server, "/ws/nowhere"))
    assert caught.value.response.status_code == 404


def test_refused_by_on_connect_gets_403(server):
    with pytest.raises(InvalidStatus) as caught:
        connect(ws_url(server, "/ws/gate"))
    assert caught.value.response.status_code == 403
    with connect(ws_url(server, "/ws/gate"),
                 additional_headers={"Authorization": "Bearer open-sesame"}) as ws:
        ws.send("let in")
        assert ws.recv(timeout=TIMEOUT) == "let in"


HANDSHAKE = (b"GET /ws/echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


@pytest.mark.parametrize("head, status", [
    (HANDSHAKE + b"Sec-WebSocket-Version: 8\r\n\r\n", b"426"),
    (HANDSHAKE + b"\r\n", b"400"),
    (HANDSHAKE.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"")
     + b"Sec-WebSocket-Version: 13\r\n\r\n", b"400"),
    (HANDSHAKE.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"short")
     + b"Sec-WebSocket-Version: 13\r\n\r\n", b"400"),
    (HANDSHAKE.replace(b"GET", b"POST").replace(b"Host", b"Content-Length: 0\r\nHost")
     + b"Sec-WebSocket-Version: 13\r\n\r\n", b"400"),
], ids=["wrong-version", "no-version", "no-key", "short-key", "not-get"])
def test_bad_handshakes_are_refused(server, head, status):
    response = raw_request(server, head)
    assert response.startswith(b"HTTP/1.1 " + status + b" "), response
    assert b"Connection: close" in response
    if status == b"426":
        assert b"Sec-WebSocket-Version: 13\r\n" in response


def test_other_upgrades_are_plain_http_and_end_the_connection(server):
    response = raw_request(server, b"GET /hello HTTP/1.1\r\nHost: localhost\r\n"
                                   b"Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in response


def test_wss_over_tls(certificate):
    with serve_in_thread(hello_app(), websockets=ENDPOINTS,
                         ssl_context=server_context(certificate)) as server:
        client_context = ssl.create_default_context(cafile=certificate[0])
        with connect(ws_url(server), ssl=client_context) as ws:
            ws.send("secret")
            assert ws.recv(timeout=TIMEOUT) == "secret"


# -- many connections, other threads, slow readers -------------------------------------------------


def test_broadcast_from_other_threads_reaches_every_connection(server):
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(ws_url(server, "/ws/news"))) for _ in range(25)]
        for ws in clients:
            assert ws.recv(timeout=TIMEOUT) == "joined"
        assert len(news) == 25
        publishers = [threading.Thread(target=lambda n=n: news.broadcast(f"news {n}"))
                      for n in range(3)]
        for publisher in publishers:
            publisher.start()
        for publisher in publishers:
            publisher.join()
        for ws in clients:
            assert sorted(ws.recv(timeout=TIMEOUT) for _ in range(3)) == [
                "news 0", "news 1", "news 2"]
    deadline = time.monotonic() + TIMEOUT
    while len(news) and time.monotonic() < deadline:  # members leave as they close
        time.sleep(0.01)
    assert len(news) == 0


def test_broadcast_from_a_doer_in_the_same_loop():
    stop = threading.Event()

    class Ticker(Doer):
        def __init__(self, **kwa):
            super().__init__(**kwa)
            self.count = 0

        def recur(self, tyme):
            if len(news):
                self.count += 1
                news.broadcast(f"tick {self.count}")
            return stop.is_set()

    server = Server(hello_app(), websockets=ENDPOINTS)
    server.open()
    server_doer = ServerDoer(server)
    doist = Doist(tock=0.01, real=True, limit=20.0)
    thread = threading.Thread(target=doist.do, kwargs={"doers": [server_doer, Ticker(tock=0.05)]},
                              daemon=True)
    thread.start()
    try:
        with connect(ws_url(server, "/ws/news")) as ws:
            assert ws.recv(timeout=TIMEOUT) == "joined"
            ticks = [ws.recv(timeout=TIMEOUT) for _ in range(3)]
            numbers = [int(tick.split()[1]) for tick in ticks]
            assert numbers == sorted(numbers) and len(set(numbers)) == 3
    finally:
        stop.set()
        server_doer.stop()
        thread.join(TIMEOUT)
        server.close()


def test_client_that_stops_reading_pauses_reading_and_loses_nothing(server):
    # The client sends and never reads: once the echoes pile up the server stops reading, so
    # the client's sends block (TCP pushes back) instead of the server's memory growing.
    client = RawClient(server)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    message = bytes(range(256)) * 256  # 64 KiB
    sent = 0
    client.sock.settimeout(1.0)
    try:
        with contextlib.suppress(socket.timeout):
            while sent < 1000:
                client.send_frame(0x2, message)
                sent += 1
        assert sent < 1000, "the server kept reading from a client that never reads"
        client.sock.settimeout(TIMEOUT)
        for _ in range(sent - 1):  # now it reads: every echo arrives, in order
            opcode, payload = client.read_frame()
            assert (opcode, payload) == (0x2, message)
    finally:
        client.close()


def test_send_queue_is_bounded_for_a_slow_reader():
    with serve_in_thread(hello_app(), websockets=ENDPOINTS, ws_max_queue=256 * 1024,
                         ws_ping_timeout=0.5, sweep_interval=0.05) as server:
        client = RawClient(server, "/ws/flood")
        try:
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.send_frame(0x1, b"flood")
            _, queued, last, most, closed = wait_for("flood")
            assert last is False and closed  # refused, and the connection is closing...
            assert most <= 256 * 1024 + 65536 + 64  # ...with at most the bound waiting
            assert wait_for("close")[1] == 1006  # it never read our Close frame either
        finally:
            client.close()
