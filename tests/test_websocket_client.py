"""The WebSocket client: against our own server (in one simulated loop, and in a thread over
TLS), against a server we did not write (the `websockets` package's asyncio server), and
against raw sockets that answer what no good server would. Every failure must land on
`ws.error`, never in the loop."""

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import socket
import ssl
import struct
import threading
import tracemalloc
import zlib

import pytest
from websockets.asyncio.server import serve

from hio_http.clienting import (Client, ClientDoer, ClientTimeout, ConnectError, ConnectionLost,
                                ConnectTimeout, ProtocolError)
from hio_http.doing import Doer, Doist
from hio_http.testing import Loop, serve_in_thread
from hio_http.websocket import Room, WebSocketHandler
from hio_http.websocket_client import HandshakeError, WebSocketClient

from conftest import server_context

TIMEOUT = 5.0
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3

# -- our endpoints ------------------------------------------------------------------------------

heard: list = []  # what the server's handlers saw, for the test to check


class Echo(WebSocketHandler):
    subprotocols = ["chat.v2", "chat.v1"]

    def on_open(self, request):
        heard.append(("open", self.subprotocol))

    def on_message(self, message):
        if message == "close me":
            self.close(4000, "as you asked")
        elif isinstance(message, str) and message.startswith("send "):
            self.send("y" * int(message[5:]))
        else:
            self.send(message)

    def on_close(self, code, reason):
        heard.append(("close", code, reason))


class Gatekeeper(Echo):
    def on_connect(self, request):
        return request.header("authorization") == "Bearer open-sesame"


lobby = Room()


class Chat(WebSocketHandler):
    def on_open(self, request):
        lobby.join(self)

    def on_message(self, message):
        lobby.broadcast(message)


ENDPOINTS = {"/ws/echo": Echo, "/ws/gate": Gatekeeper, "/ws/chat": Chat}


def hello_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture(autouse=True)
def fresh():
    heard.clear()


@pytest.fixture
def loop():
    with Loop(hello_app, websockets=ENDPOINTS, ws_max_message=4 << 20) as loop:
        yield loop


# -- against our server, in one simulated loop --------------------------------------------------

def test_echo_text_and_binary_sent_before_and_after_the_handshake(loop):
    ws = loop.client.websocket("/ws/echo")
    assert ws.state == "connecting" and not ws.open
    assert ws.send("queued before the 101") and ws.send(b"\x00\xffbinary")
    loop.run_until(lambda: len(ws.messages) == 2)
    assert ws.open and ws.url.startswith("ws://") and ws.url.endswith("/ws/echo")
    assert list(ws.messages) == ["queued before the 101", b"\x00\xffbinary"]
    ws.messages.clear()
    assert ws.send("héllo ☃") and ws.send(bytearray(b"abc"))
    assert ws.ping(b"still there?")
    loop.run_until(lambda: len(ws.messages) == 2 and ws.pongs)
    assert list(ws.messages) == ["héllo ☃", b"abc"] and list(ws.pongs) == [b"still there?"]
    assert ("server", "hio_http") in [(name.lower(), value) for name, value in ws.headers]
    # The HTTP client beside it still works, on its own connection.
    assert loop.get("/hello").body == b"hello"
    assert ws.error is None and not ws.closed


def test_large_messages_both_ways_with_compression(loop):
    ws = loop.client.websocket("/ws/echo")
    text = "".join(chr(0x41 + i % 26) for i in range(256 * 1024))
    blob = bytes(range(256)) * 1024
    ws.send(text)
    ws.send(blob)
    loop.run_until(lambda: len(ws.messages) == 2)
    assert ws.compressed
    assert ws.messages[0] == text and ws.messages[1] == blob

    plain = loop.client.websocket("/ws/echo", compression=False)
    plain.send(blob)
    loop.run_until(lambda: plain.messages)
    assert not plain.compressed and plain.messages[0] == blob


def test_subprotocol_negotiation(loop):
    first = loop.client.websocket("/ws/echo", subprotocols=["chat.v3", "chat.v1", "chat.v2"])
    none = loop.client.websocket("/ws/echo", subprotocols=["mqtt"])
    loop.run_until(lambda: first.open and none.open)
    assert first.subprotocol == "chat.v1"  # the first the client offers that the server speaks
    assert none.subprotocol is None  # none in common: the handshake still succeeds
    assert sorted(event[1] or "" for event in heard if event[0] == "open") == ["", "chat.v1"]


def test_server_initiated_close_is_seen_with_its_code_and_reason(loop):
    closes = []
    ws = loop.client.websocket("/ws/echo", on_close=lambda code, reason: closes.append(
        (code, reason)))
    ws.send("close me")
    loop.run_until(lambda: ws.closed)
    assert (ws.close_code, ws.close_reason, ws.error) == (4000, "as you asked", None)
    assert closes == [(4000, "as you asked")]
    assert not ws.send("too late") and not ws.ping()
    assert ws not in loop.client.streams


def test_client_initiated_close_reaches_the_handler(loop):
    ws = loop.client.websocket("/ws/echo")
    ws.send("last words")
    ws.close(4001, "done here")  # before the handshake: after the queued message
    assert not ws.send("after close()")
    loop.run_until(lambda: ws.closed)
    assert not ws.messages  # the echo came after our Close: dropped, as browsers do
    assert (ws.close_code, ws.close_reason, ws.error) == (4001, "done here", None)
    assert ("close", 4001, "done here") in heard


def test_closing_the_client_closes_its_websockets_with_going_away(loop):
    ws = loop.client.websocket("/ws/echo")
    loop.run_until(lambda: ws.open)
    loop.client.close()
    assert ws.closed and ws.close_code == 1006 and ws.error is None
    loop.run_until(lambda: any(event[0] == "close" for event in heard))
    assert ("close", 1001, "client closing") in heard


def test_unknown_path_and_refused_handshake_give_the_status(loop):
    missing = loop.client.websocket("/ws/nowhere")
    gate = loop.client.websocket("/ws/gate")
    welcome = loop.client.websocket("/ws/gate", headers={"Authorization": "Bearer open-sesame"})
    closes = []
    hello = WebSocketClient(loop.client, "/hello", on_close=lambda *args: closes.append(args))
    hello.send("never sent")
    loop.run_until(lambda: missing.closed and gate.closed and welcome.open and hello.closed)
    assert isinstance(missing.error, HandshakeError) and missing.error.status == 404
    assert b"no WebSocket endpoint" in missing.error.body and "404" in str(missing.error)
    assert isinstance(gate.error, HandshakeError) and gate.error.status == 403
    assert missing.close_code == gate.close_code == 1006 and not missing.open
    assert welcome.error is None
    assert isinstance(hello.error, HandshakeError) and hello.error.status == 404
    assert closes == [(1006, "")]


def test_a_broadcast_reaches_every_client(loop):
    called = []
    members = [loop.client.websocket("/ws/chat") for _ in range(3)]
    listener = loop.client.websocket("/ws/chat", on_message=called.append,
                                     on_open=lambda: called.append("opened"))
    loop.run_until(lambda: all(ws.open for ws in members + [listener]))
    members[0].send("hello, everyone")
    members[2].send(b"binary news")
    loop.run_until(lambda: all(len(ws.messages) == 2 for ws in members) and len(called) == 3)
    for ws in members:
        assert sorted(ws.messages, key=str) == sorted(["hello, everyone", b"binary news"], key=str)
    assert called[0] == "opened" and sorted(called[1:], key=str) == sorted(
        ["hello, everyone", b"binary news"], key=str)
    assert not listener.messages  # with on_message, messages go to the callback only


def test_a_message_over_max_message_closes_with_1009(loop):
    ws = loop.client.websocket("/ws/echo", max_message=100_000)
    ws.send("send 99999")
    loop.run_until(lambda: ws.messages)
    assert len(ws.messages.popleft()) == 99999
    ws.send("send 100001")
    loop.run_until(lambda: ws.closed)
    assert isinstance(ws.error, ProtocolError) and "max_message" in str(ws.error)
    assert ws.close_code == 1009 and not ws.messages
    loop.run_until(lambda: len(heard) == 2)  # the server read our Close before the hang-up
    assert heard[1] == ("close", 1009, "message too big (limit 100000)")


def test_an_on_message_failure_closes_with_1011_and_stays_in_the_client(loop, caplog):
    def explode(message):
        raise RuntimeError("an application bug the test asked for")

    ws = loop.client.websocket("/ws/echo", on_message=explode)
    ws.send("anything")
    loop.run_until(lambda: ws.closed)
    assert ws.close_code == 1011 and "application bug" in caplog.text
    assert ("close", 1011, "internal error") in heard


def test_invalid_arguments_raise_at_once(loop):
    with pytest.raises(ValueError):
        loop.client.websocket("/ws/echo", headers={"Sec-WebSocket-Key": "mine"})
    with pytest.raises(ValueError):
        loop.client.websocket("/ws/echo", subprotocols=["two words"])
    with pytest.raises(ValueError):
        loop.client.websocket("/ws/echo", headers={"X-Bad": "a\r\nb"})
    ws = loop.client.websocket("/ws/echo")
    with pytest.raises(ValueError):
        ws.close(1006)  # reserved: never on the wire
    with pytest.raises(ValueError):
        ws.ping(b"x" * 126)
    with pytest.raises(TypeError):
        ws.send(42)


# -- our server in a thread, over TLS, the client driven by run_until ----------------------------

def test_wss_echo_against_our_server_in_a_thread(certificate):
    with serve_in_thread(hello_app, websockets=ENDPOINTS,
                         ssl_context=server_context(certificate)) as server:
        client = Client(server.url, tls_context=ssl.create_default_context(cafile=certificate[0]))
        ws = client.websocket("/ws/echo", subprotocols=["chat.v2"])
        ws.send("over TLS")
        ws.send(b"\x01" * 70_000)
        client.run_until(lambda: len(ws.messages) == 2, timeout=TIMEOUT)
        assert ws.url.startswith("wss://") and ws.subprotocol == "chat.v2"
        assert list(ws.messages) == ["over TLS", b"\x01" * 70_000]
        ws.close()
        client.run_until(lambda: ws.closed, timeout=TIMEOUT)
        assert (ws.close_code, ws.error) == (1000, None)

        untrusting = Client(server.url)
        refused = untrusting.websocket("/ws/echo")
        untrusting.run_until(lambda: refused.closed, timeout=TIMEOUT)
        assert isinstance(refused.error, ConnectError)
        assert isinstance(refused.error.__cause__, ssl.SSLCertVerificationError)
        client.close()
        untrusting.close()


# -- against a server we did not write: the websockets package ----------------------------------

@contextlib.contextmanager
def websockets_server(handler, **options):
    """The websockets package's asyncio server on a free port, in a thread with its own event
    loop; yields the port."""
    ready, box = threading.Event(), {}

    async def main():
        box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
        async with serve(handler, "127.0.0.1", 0, **options) as server:
            box["port"] = server.sockets[0].getsockname()[1]
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(TIMEOUT), "the websockets server did not start"
    try:
        yield box["port"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(TIMEOUT)


async def third_party_echo(connection):
    try:
        async for message in connection:
            if message == "close please":
                await connection.close(4002, "closing as asked")
            else:
                await connection.send(message)
    finally:
        heard.append(("close", connection.close_code, connection.close_reason))


def test_websockets_server_echo_compression_and_close_codes():
    with websockets_server(third_party_echo, subprotocols=["chat"]) as port:
        client = Client(f"http://127.0.0.1:{port}")
        ws = client.websocket("/anything", subprotocols=["chat"])
        text = json.dumps({"numbers": list(range(30_000))})  # ~200 KB, compresses well
        ws.send("hello")
        ws.send(b"\x00\x01\x02")
        ws.send(text)
        client.run_until(lambda: len(ws.messages) == 3, timeout=TIMEOUT)
        assert list(ws.messages) == ["hello", b"\x00\x01\x02", text]
        assert ws.subprotocol == "chat" and ws.compressed
        ws.ping(b"hi")
        client.run_until(lambda: ws.pongs, timeout=TIMEOUT)
        assert ws.pongs[0] == b"hi"

        ws.close(4003, "client done")
        client.run_until(lambda: ws.closed, timeout=TIMEOUT)
        assert (ws.close_code, ws.close_reason, ws.error) == (4003, "client done", None)

        other = client.websocket("/other", subprotocols=["chat"])
        other.send("close please")
        client.run_until(lambda: other.closed, timeout=TIMEOUT)
        assert (other.close_code, other.close_reason, other.error) == (
            4002, "closing as asked", None)
        client.close()
    assert ("close", 4003, "client done") in heard
    assert ("close", 4002, "closing as asked") in heard


# -- failures: each lands on ws.error, the loop runs on ----------------------------------------

def test_refused_connection_lands_on_ws_error(refusing_port):
    closes = []
    client = Client(f"http://127.0.0.1:{refusing_port}")
    ws = client.websocket("/ws", on_close=lambda *args: closes.append(args))
    client.run_until(lambda: ws.closed, timeout=TIMEOUT)
    assert isinstance(ws.error, ConnectError)
    assert isinstance(ws.error.__cause__, ConnectionRefusedError)
    assert closes == [(1006, "")] and not ws.open
    client.close()


def test_refused_websockets_never_reach_the_doist(refusing_port):
    class Opener(Doer):
        """A new WebSocket to nowhere every turn."""

        def __init__(self, client, **kwa):
            super().__init__(**kwa)
            self.client, self.sockets = client, []

        def recur(self, tyme):
            self.sockets.append(self.client.websocket("/ws"))
            self.sockets[-1].send("lost")
            return False

    client = Client(f"http://127.0.0.1:{refusing_port}")
    opener = Opener(client)
    client_doer = ClientDoer(client)
    Doist(tock=0.03125, real=False, limit=0.5, doers=[client_doer, opener]).do()
    refused = [ws for ws in opener.sockets if isinstance(ws.error, ConnectError)]
    assert len(refused) >= 10
    assert all(ws.closed for ws in opener.sockets)  # the rest failed when the client closed
    assert client_doer.done is False  # it ran until the limit, never raised


def test_handshake_timeout_on_the_loops_clock():
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody answers
    try:
        client = Client(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=(5.0, 0.5))
        doist = Doist(tock=0.03125, real=False, doers=[ClientDoer(client)])
        doist.enter()
        ws = client.websocket("/ws")
        ticks = 0
        while not ws.closed and ticks < 100:
            doist.recur()
            ticks += 1
        doist.exit()
        assert isinstance(ws.error, ClientTimeout) and not isinstance(ws.error, ConnectTimeout)
        assert 0.5 <= doist.tyme <= 0.6  # simulated time: no waiting at all
    finally:
        silent.close()


# -- raw servers that misbehave on purpose -------------------------------------------------------

@contextlib.contextmanager
def raw_server(handle):
    """One connection accepted in a thread and given to handle(conn); yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    failures = []

    def run():
        conn, _ = listener.accept()
        conn.settimeout(TIMEOUT)
        with conn:
            try:
                handle(conn)
            except Exception as ex:  # surfaced in the test below
                failures.append(ex)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(TIMEOUT)
        listener.close()
    if failures:
        raise failures[0]


def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        assert chunk, "the client hung up during its handshake"
        data += chunk
    return data


def wait_for_hang_up(conn):
    """Until the client closes (a reset too: it may leave our bytes unread)."""
    with contextlib.suppress(ConnectionResetError):
        while conn.recv(65536):
            pass


def accept_token(head):
    key = re.search(rb"(?im)^sec-websocket-key: *(\S+)", head).group(1)
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def switching(head, token=None):
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + (token or accept_token(head)) + b"\r\n\r\n")


def read_frame(conn):
    """One frame from the client, which must mask it: (opcode, unmasked payload)."""
    def exactly(count):
        data = b""
        while len(data) < count:
            chunk = conn.recv(count - len(data))
            assert chunk, "the client hung up mid-frame"
            data += chunk
        return data

    first, second = exactly(2)
    assert second & 0x80, "a client frame must be masked"
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", exactly(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", exactly(8))[0]
    mask = exactly(4)
    payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(exactly(size)))
    return first & 0x0F, payload


def server_frame(first, payload):
    """A frame as a server sends it: unmasked, its length in the shortest form."""
    if len(payload) < 126:
        return bytes([first, len(payload)]) + payload
    if len(payload) < 1 << 16:
        return bytes([first, 126]) + struct.pack("!H", len(payload)) + payload
    return bytes([first, 127]) + struct.pack("!Q", len(payload)) + payload


def test_a_wrong_accept_token_is_a_handshake_error():
    def handle(conn):
        conn.sendall(switching(read_head(conn), token=b"d3JvbmcgdG9rZW4="))
        wait_for_hang_up(conn)

    with raw_server(handle) as port:
        client = Client(f"http://127.0.0.1:{port}")
        ws = client.websocket("/")
        client.run_until(lambda: ws.closed, timeout=TIMEOUT)
        assert isinstance(ws.error, HandshakeError) and ws.error.status is None
        assert "accept" in str(ws.error).lower()
        client.close()


def test_pings_are_answered_and_a_protocol_error_fails_the_connection():
    seen = []

    def handle(conn):
        # The 101, an unsolicited ping and a message, all in one segment.
        conn.sendall(switching(read_head(conn)) + b"\x89\x05hello" + b"\x81\x02hi")
        seen.append(read_frame(conn))  # the pong
        conn.sendall(b"\x81\x82abcd" + bytes([ord("o") ^ ord("a"), ord("k") ^ ord("b")]))
        seen.append(read_frame(conn))  # masked by the server: the client fails with 1002
        wait_for_hang_up(conn)

    with raw_server(handle) as port:
        client = Client(f"http://127.0.0.1:{port}")
        ws = client.websocket("/")
        client.run_until(lambda: ws.closed, timeout=TIMEOUT)
        assert list(ws.messages) == ["hi"]
        assert isinstance(ws.error, ProtocolError) and ws.close_code == 1002
        client.close()
    assert seen[0] == (0xA, b"hello")
    assert seen[1][0] == 0x8 and struct.unpack("!H", seen[1][1][:2])[0] == 1002


def test_a_connection_dropped_without_a_close_frame_is_1006():
    def handle(conn):
        conn.sendall(switching(read_head(conn)) + b"\x82\x03abc")

    with raw_server(handle) as port:
        client = Client(f"http://127.0.0.1:{port}")
        ws = client.websocket("/")
        client.run_until(lambda: ws.closed, timeout=TIMEOUT)
        assert list(ws.messages) == [b"abc"]
        assert ws.close_code == 1006 and isinstance(ws.error, ConnectionLost)
        client.close()


def test_a_compression_bomb_stops_at_max_message():
    deflate = zlib.compressobj(wbits=-15)
    bomb = deflate.compress(b"\0" * (64 << 20)) + deflate.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb[:-4]  # RFC 7692 §7.2.1: the empty block's tail is left off
    seen = []

    def handle(conn):
        head = read_head(conn)
        assert b"permessage-deflate" in head
        conn.sendall(switching(head)[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
                     b"\r\n" + server_frame(0xC2, bomb))  # FIN, RSV1 (compressed), binary
        seen.append(read_frame(conn))  # the client's Close, and it hangs up at once
        wait_for_hang_up(conn)

    with raw_server(handle) as port:
        client = Client(f"http://127.0.0.1:{port}")
        ws = client.websocket("/")
        tracemalloc.start()
        try:
            client.run_until(lambda: ws.closed, timeout=TIMEOUT)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert ws.compressed and ws.close_code == 1009 and isinstance(ws.error, ProtocolError)
        assert peak < 16 << 20  # 64 MiB inflated would have been far more
        client.close()
    assert seen[0][0] == 0x8 and struct.unpack("!H", seen[0][1][:2])[0] == 1009
