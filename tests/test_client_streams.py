"""Client bodies that are never held whole, over real sockets: streamed uploads (chunked with
trailers, files of known length, b"" pauses, backpressure, 100-continue accepted and refused, no
silent resend), streamed downloads with a slow consumer, and gzip / deflate decoding bounded
against bombs; against hio_http, waitress, the standard library's http.server and raw sockets."""

import gzip
import hashlib
import http.server
import io
import json
import os
import socket
import threading
import time
import zlib

import pytest

from hio_http.clienting import Client, ConnectionLost, ProtocolError
from hio_http.polling import Poller
from hio_http.testing import serve_in_thread

from conftest import ConnectionEvents, stdlib_server, waitress_server

waitress = pytest.importorskip("waitress")


# -- servers ------------------------------------------------------------------------------------

def upload_app(environ, start_response):
    """Reads the whole body and answers what it saw: size, digest, framing and trailers."""
    data = environ["wsgi.input"].read()
    answer = {"size": len(data), "sha": hashlib.sha256(data).hexdigest(),
              "length": environ.get("CONTENT_LENGTH"),
              "chunked": environ.get("HTTP_TRANSFER_ENCODING") == "chunked",
              "expect": environ.get("HTTP_EXPECT"),
              "trailers": environ.get("hio_http.trailers")}
    body = json.dumps(answer).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


class ChunkedHandler(http.server.BaseHTTPRequestHandler):
    """Decodes a chunked body by hand (http.server does not) and answers what it read; a 413
    before the body for anything announcing more than 1000 bytes."""

    protocol_version = "HTTP/1.1"

    def handle_expect_100(self):
        if int(self.headers.get("Content-Length") or 0) > 1000:
            self.send_response(413)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            return False
        return super().handle_expect_100()

    def do_POST(self):
        trailers = []
        if self.headers.get("Transfer-Encoding") == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while (line := self.rfile.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                trailers.append([name.strip(), value.strip()])
            data = b"".join(parts)
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"size": len(data), "sha": hashlib.sha256(data).hexdigest(),
                           "trailers": trailers,
                           "declared": self.headers.get("Trailer")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_POST

    def log_message(self, *args):
        pass


class RawServer:
    """A listening socket answered by `serve(connection)` in a thread, one connection at a
    time: for servers that misbehave on purpose."""

    def __init__(self, serve):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.serve = serve
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with connection:
                connection.settimeout(5)
                try:
                    self.serve(connection)
                except OSError:
                    pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def read_head(connection):
    data = b""
    while b"\r\n\r\n" not in data:
        piece = connection.recv(65536)
        if not piece:
            break
        data += piece
    return data


def pausing_chunks(pieces, pauses):
    """Yields each piece after `pauses` b"" ("not yet"); counts the pauses it made."""
    made = []

    def generate():
        for piece in pieces:
            for _ in range(pauses):
                made.append(1)
                yield b""
            yield piece
    return generate(), made


def wait(client, condition, timeout=10.0):
    client.run_until(condition, timeout=timeout)


# -- uploads ------------------------------------------------------------------------------------

def test_chunked_upload_with_trailers_seen_by_the_app_and_pauses():
    pieces = [os.urandom(1000) for _ in range(20)]
    chunks, pauses = pausing_chunks(pieces, 3)
    with serve_in_thread(upload_app) as server:
        client = Client(server.url)
        response = client.post("/up", body=chunks, trailers=[("X-Checksum", "abc123")])
        wait(client, response)
        client.close()
    assert response.error is None and response.status == 200
    seen = response.json()
    assert seen["size"] == 20000 and seen["sha"] == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert seen["chunked"] and seen["length"] == "20000"  # the server counts a chunked body
    assert seen["trailers"] == [["X-Checksum", "abc123"]]
    assert len(pauses) == 60  # every "not yet" was asked again until the piece came


def test_chunked_upload_with_trailers_to_the_standard_library():
    pieces = [b"alpha", b"", b"beta", b"", b"", b"gamma"]
    with stdlib_server(ChunkedHandler) as url:
        client = Client(url)
        response = client.post("/up", body=iter(pieces), expect_continue=False,
                               trailers=[("X-Sum", "7"), ("X-Parts", "3")])
        wait(client, response)
        client.close()
    assert response.error is None, response.error
    seen = response.json()
    assert seen["size"] == 14 and seen["trailers"] == [["X-Sum", "7"], ["X-Parts", "3"]]
    assert seen["declared"] == "X-Sum, X-Parts"



def test_parts_sent_together_keep_their_order_through_partial_sends():
    """A chunk goes out as size line, data and CRLF in one sendmsg; what the socket does not
    take waits, part by part, behind it."""
    from hio_http.net import Connection
    from hio_http.polling import Poller
    writer, reader = socket.socketpair()
    writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    writer.setblocking(False)
    reader.settimeout(5)
    poller = Poller()
    connection = Connection(writer, None, poller, ConnectionEvents())
    parts = [os.urandom(size) for size in (5, 300_000, 2, 7, 100_000, 2)]
    connection.send_parts(parts[:3])
    cut = connection.pending
    connection.send_parts(parts[3:])
    expected = b"".join(parts)
    received = bytearray()
    deadline = time.monotonic() + 10
    while len(received) < len(expected) and time.monotonic() < deadline:
        received += reader.recv(65536)
        poller.poll(0)
    connection.close()
    reader.close()
    poller.close()
    assert 0 < cut < 300_007  # the first call was cut short inside a part
    assert bytes(received) == expected


def test_file_upload_of_known_length(tmp_path):
    path = tmp_path / "upload.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    for serving in (lambda: serve_in_thread(upload_app), lambda: waitress_server(upload_app)):
        with serving() as target, open(path, "rb") as file:
            url = target if isinstance(target, str) else target.url
            client = Client(url)
            response = client.request("PUT", "/file", body=file)
            wait(client, response)
            client.close()
        seen = response.json()
        assert response.status == 200, response
        assert seen["length"] == str(len(data)) and not seen["chunked"]
        assert seen["sha"] == hashlib.sha256(data).hexdigest()
        assert seen["expect"] == "100-continue"  # above the threshold: the server was asked


def test_iterable_upload_to_waitress_is_chunked():
    with waitress_server(upload_app) as url:
        client = Client(url)
        response = client.post("/up", body=(bytes([i]) * 5000 for i in range(50)))
        wait(client, response)
        client.close()
    seen = response.json()  # waitress de-chunks and drops Transfer-Encoding from the environ
    expected = b"".join(bytes([i]) * 5000 for i in range(50))
    assert seen["size"] == 250000 and seen["sha"] == hashlib.sha256(expected).hexdigest()


def test_upload_pulls_only_what_the_socket_takes():
    """A server that never reads: the client's buffer stays at its high-water mark and the
    source is not drained into memory."""
    pulled = [0]
    release = threading.Event()

    def endless():
        while True:
            pulled[0] += 65536
            yield b"x" * 65536

    def stall(connection):
        read_head(connection)
        release.wait(10)

    with RawServer(stall) as server:
        client = Client(server.url, high_water=128 * 1024)
        response = client.post("/sink", body=endless(), expect_continue=False, timeout=30)
        seen = []

        def settled():
            seen.append(client.unsent)
            return len(seen) > 200
        wait(client, settled)
        release.set()
        client.close()
    assert max(seen) <= 128 * 1024 + 65536 + 16  # one piece past the mark, with its framing
    assert pulled[0] < 64 * 1024 * 1024  # kernel buffers hold a few MiB; the rest never came
    assert response.error is not None  # closed without an answer


def test_an_upload_past_its_turn_budget_goes_on_without_waiting_for_a_timeout():
    """The kernel takes each turn's share whole (a server that reads fast): with nothing left
    queued, the client must still come back at once, not when its loop's wait runs out."""
    piece = b"z" * (256 * 1024)

    def length_app(environ, start_response):
        size = sum(len(block) for block in iter(lambda: environ["wsgi.input"].read(1 << 20), b""))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(size).encode()]

    with serve_in_thread(length_app) as server:
        waits = []

        class TimedPoller(Poller):
            def poll(self, timeout=0.0):
                started = time.monotonic()
                ready = super().poll(timeout)
                if not ready and timeout:
                    waits.append(time.monotonic() - started)  # nothing woke it: it slept out
                return ready

        client = Client(server.url, high_water=64 * 1024)
        client.poller, client.owns_poller = TimedPoller(), True  # its own loop, timed
        client.open()
        response = client.post("/up", body=(piece for _ in range(256)), expect_continue=False,
                               timeout=60)
        wait(client, response, timeout=60)
        client.close()
    assert response.status == 200 and response.body == str(256 * len(piece)).encode()
    # 64 MiB at 1 MiB a turn: without the wake, most turns end in a wait that runs out (over
    # 60 of them); what remains is the app reading the body before it answers
    assert len(waits) < 15, f"{len(waits)} waits ran out, {sum(waits):.2f} s in all"


# -- 100-continue -------------------------------------------------------------------------------

def test_expect_continue_accepted_then_the_body_goes():
    data = os.urandom(2 * 1024 * 1024)
    with serve_in_thread(upload_app) as server:
        client = Client(server.url, continue_timeout=30)
        started = time.monotonic()
        response = client.post("/up", body=io.BytesIO(data))
        wait(client, response)
        client.close()
    assert response.json()["sha"] == hashlib.sha256(data).hexdigest()
    assert response.json()["expect"] == "100-continue"
    assert time.monotonic() - started < 20  # the 100 came; no wait for the 30 s timeout


def test_expect_continue_refused_by_hio_http_stops_the_upload():
    touched = []

    def body():
        touched.append(1)
        yield b"y" * 1000

    with serve_in_thread(upload_app, max_body=1000) as server:
        client = Client(server.url, continue_timeout=30)
        file = io.BytesIO(b"z" * 5000)
        refused = client.post("/up", body=file, expect_continue=True)
        wait(client, refused)
        assert refused.status == 413 and file.tell() == 0  # not a byte was read
        other = Client(server.url, continue_timeout=30)
        chunked = other.post("/up", body=body(), expect_continue=True)
        wait(other, chunked)
        client.close()
        other.close()
    assert chunked.status == 200 and touched == [1]  # accepted: the body was pulled then


def test_expect_continue_refused_by_the_standard_library():
    file = io.BytesIO(os.urandom(5000))
    with stdlib_server(ChunkedHandler) as url:
        client = Client(url, continue_timeout=30)
        response = client.post("/up", body=file, expect_continue=True)
        wait(client, response)
        small = Client(url, continue_timeout=30)
        accepted = small.post("/up", body=io.BytesIO(b"k" * 800), expect_continue=True)
        wait(small, accepted)
        client.close()
        small.close()
    assert response.status == 413 and file.tell() == 0
    assert accepted.status == 200 and accepted.json()["size"] == 800


# -- no silent resend ---------------------------------------------------------------------------

def drop_after_some_body(connection):
    """Reads the head and a little body, then closes without answering."""
    read_head(connection)
    connection.recv(1000)


def test_a_streamed_body_is_not_resent_after_a_reconnect():
    def chunks():
        for _ in range(100):
            yield b"c" * 10000

    with RawServer(drop_after_some_body) as server:
        client = Client(server.url)
        response = client.request("PUT", "/item", body=chunks(), expect_continue=False)
        wait(client, response)
        client.close()
        connections = server.connections
    assert isinstance(response.error, ConnectionLost)
    assert "cannot be sent again" in str(response.error)
    assert connections == 1


def digest_after_a_drop(attempts: list):
    """A RawServer handler: drops the first connection partway through the body, then answers
    the SHA-256 of the body it reads whole (Content-Length framed)."""

    def serve(connection):
        attempts.append(1)
        if len(attempts) == 1:
            drop_after_some_body(connection)
            return
        head = read_head(connection)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = head.split(b"\r\n\r\n", 1)[1]
        while len(body) < length:
            body += connection.recv(65536)
        digest = hashlib.sha256(body).hexdigest().encode()
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                           % (len(digest), digest))

    return serve


def test_a_file_body_is_rewound_and_resent():
    data = os.urandom(200_000)
    attempts = []

    serve = digest_after_a_drop(attempts)

    with RawServer(serve) as server:
        client = Client(server.url)
        response = client.request("PUT", "/item", body=io.BytesIO(data), expect_continue=False)
        wait(client, response)
        client.close()
    assert response.error is None and response.body == hashlib.sha256(data).hexdigest().encode()
    assert len(attempts) == 2


def test_a_file_on_disk_goes_from_its_position_and_again_after_a_reconnect(tmp_path):
    """A regular file is sent by sendfile from where it was positioned; after a connection
    lost mid-body it is sent again from there, and is left positioned at its end."""
    data = os.urandom(3 * 1024 * 1024)
    path = tmp_path / "body.bin"
    path.write_bytes(b"skipped" + data)
    attempts = []

    serve = digest_after_a_drop(attempts)

    with RawServer(serve) as server, open(path, "rb") as file:
        file.seek(len(b"skipped"))
        client = Client(server.url, high_water=64 * 1024)
        response = client.request("PUT", "/item", body=file, expect_continue=False)
        wait(client, response)
        client.close()
        position = file.tell()
    assert response.error is None and response.body == hashlib.sha256(data).hexdigest().encode()
    assert len(attempts) == 2
    assert position == len(b"skipped") + len(data)


# -- streamed downloads -------------------------------------------------------------------------

def big_app(size, piece=32 * 1024):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        block = bytes(range(256)) * (piece // 256)
        return (block for _ in range(size // piece))
    return app


@pytest.mark.parametrize("serving", ["hio_http", "waitress"])
def test_streamed_download_with_a_slow_consumer_stays_bounded(serving):
    """hio_http sends no length here (chunked); waitress sends one (Content-Length)."""
    size = 16 * 1024 * 1024
    high_water = 64 * 1024
    app = big_app(size)
    if serving == "waitress":
        def app(environ, start_response, inner=big_app(size)):
            return inner(environ, lambda status, headers: start_response(
                status, headers + [("Content-Length", str(size))]))
    context = serve_in_thread(app) if serving == "hio_http" else waitress_server(app)
    with context as server:
        client = Client(getattr(server, "url", server), high_water=high_water)
        response = client.get("/big", stream=True)
        digest = hashlib.sha256()
        taken = [0]
        largest = [0]
        turns = [0]

        def consume():
            largest[0] = max(largest[0], response.buffered)
            turns[0] += 1
            if turns[0] % 4 == 0:  # the consumer keeps up with one turn in four
                data = response.take()
                digest.update(data)
                taken[0] += len(data)
            return response.done and response.buffered == 0

        wait(client, consume, timeout=60)
        client.close()
    assert response.error is None and taken[0] == size
    block = bytes(range(256)) * 128
    assert digest.hexdigest() == hashlib.sha256(block * (size // len(block))).hexdigest()
    assert response.body == b""  # nothing gathered
    # Reading paused at the mark: at most one receive (no larger than the mark) past it.
    assert largest[0] <= 2 * high_water


def test_receives_exceed_high_water_only_when_nothing_waits_for_take():
    """A body handed to on_data is read in receives that grow past high_water (fewer calls);
    one that waits for take() never gets a receive larger than high_water."""
    size = 8 * 1024 * 1024
    high_water = 16 * 1024
    with serve_in_thread(big_app(size, piece=1024 * 1024)) as server:
        client = Client(server.url, high_water=high_water)
        asked = []

        def on_data(data):
            asked.append(client._session.link.receive_size)

        handed = client.get("/big", on_data=on_data)
        wait(client, lambda: handed.done)
        assert handed.error is None and len(asked) > 1
        assert max(asked) > high_water
        streamed = client.get("/big", stream=True)
        taken = [0]

        def take_all():
            asked.append(client._session.link.receive_size)
            taken[0] += len(streamed.take())
            return streamed.done and streamed.buffered == 0
        del asked[:]
        wait(client, take_all, timeout=60)
        client.close()
    assert streamed.error is None and taken[0] == size
    assert max(asked) <= high_water


def test_stream_timeout_counts_from_the_last_progress():
    """A body that keeps moving outlives the timeout; one that stalls does not."""
    def trickle(pieces, every):
        for _ in range(pieces):
            due = time.monotonic() + every
            while time.monotonic() < due:
                yield b""  # not yet: the client asks again on a later turn
            yield b"t" * 100

    with serve_in_thread(upload_app) as server:
        client = Client(server.url, timeout=0.5)
        moving = client.post("/up", body=trickle(8, 0.15))
        wait(client, moving)
        stalled = client.post("/up", body=trickle(1, 60))
        wait(client, stalled)
        client.close()
    assert moving.error is None and moving.json()["size"] == 800
    assert type(stalled.error).__name__ == "ClientTimeout"


def test_on_data_and_trailers_of_a_streamed_response():
    def serve(connection):
        read_head(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                           b"Trailer: X-Digest\r\n\r\n5\r\nhello\r\n6\r\n world\r\n"
                           b"0\r\nX-Digest: 42\r\n\r\n")

    with RawServer(serve) as server:
        client = Client(server.url)
        pieces = []
        response = client.get("/t", on_data=pieces.append)
        wait(client, response)
        client.close()
    assert b"".join(pieces) == b"hello world" and response.trailers == [("X-Digest", "42")]
    assert response.body == b""


def test_download_to_a_file(tmp_path):
    size = 2 * 1024 * 1024
    with serve_in_thread(big_app(size)) as server:
        client = Client(server.url)
        target = tmp_path / "download.bin"
        response = client.download("/big", target)
        assert (tmp_path / "download.bin.part").exists() and not target.exists()
        wait(client, response)
        client.close()
    assert response.ok and target.stat().st_size == size
    assert target.read_bytes()[:512] == bytes(range(256)) * 2
    assert not (tmp_path / "download.bin.part").exists()


def test_a_failed_download_leaves_no_file(tmp_path):
    def serve(connection):
        read_head(connection)
        connection.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n")

    with RawServer(serve) as server:
        client = Client(server.url)
        response = client.download("/missing", tmp_path / "x.bin")
        wait(client, response)
        client.close()
    assert response.status == 404 and list(tmp_path.iterdir()) == []


# -- decoding -----------------------------------------------------------------------------------

def coded_app(coding, body):
    if coding == "gzip":
        data = gzip.compress(body)
    elif coding == "deflate":
        data = zlib.compress(body)
    else:  # raw deflate, as some servers send for "deflate"
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = compressor.compress(body) + compressor.flush()
    label = "gzip" if coding == "gzip" else "deflate"

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Encoding", label),
                                  ("Content-Length", str(len(data)))])
        return [data]
    return app


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_coded_responses_from_waitress_are_decoded(coding):
    body = b"a line of text that repeats\n" * 5000
    with waitress_server(coded_app(coding, body)) as url:
        client = Client(url)
        gathered = client.get("/g")
        wait(client, gathered)
        streamed = client.get("/s", stream=True)
        parts = []
        wait(client, lambda: parts.append(streamed.take()) or (streamed.done and not
                                                                streamed.buffered))
        client.close()
    assert gathered.body == body and gathered.header("content-encoding")
    assert b"".join(parts) == body and streamed.error is None


def test_accept_encoding_is_sent_and_can_be_turned_off():
    heads = []

    def serve(connection):
        heads.append(read_head(connection).lower())
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    with RawServer(serve) as server:
        for decompress in (True, False):
            client = Client(server.url, decompress=decompress)
            response = client.get("/")
            wait(client, response)
            client.close()
    assert b"accept-encoding: gzip, deflate\r\n" in heads[0]
    assert b"accept-encoding" not in heads[1]


def bomb_server(size):
    bomb = gzip.compress(b"\0" * size, 9)

    def serve(connection):
        read_head(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(bomb), bomb))
    return serve, len(bomb)


def test_a_gzip_bomb_stops_at_max_body():
    serve, _ = bomb_server(200 * 1024 * 1024)
    with RawServer(serve) as server:
        client = Client(server.url, max_body=1024 * 1024)
        response = client.get("/bomb")
        wait(client, response, timeout=20)
        client.close()
    assert isinstance(response.error, ProtocolError)
    assert "max_body" in str(response.error) and "decoded" in str(response.error)
    assert len(response.body) <= 1024 * 1024


def test_a_streamed_gzip_bomb_is_inflated_only_as_taken():
    serve, compressed = bomb_server(64 * 1024 * 1024)
    with RawServer(serve) as server:
        client = Client(server.url, high_water=64 * 1024)
        response = client.get("/bomb", stream=True)
        wait(client, lambda: response.done)
        held = response.buffered
        first = response.take()
        client.close()
    assert held <= compressed  # still compressed: nothing inflated before it was asked for
    assert len(first) == 64 * 1024  # one take inflates at most the high-water mark


class EndlessBomb:
    """Serves a chunked gzip body of zeros, a MiB of them per ~1 KiB chunk, until the client
    goes away or `most` MiB were sent; counts what it sent."""

    def __init__(self, most=4096):
        self.most = most
        self.sent_mib = 0
        self.cut_short = threading.Event()

    def __call__(self, connection):
        read_head(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                           b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = b"\0" * (1024 * 1024)
        try:
            for _ in range(self.most):
                piece = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
                connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.sent_mib += 1
        except OSError:
            self.cut_short.set()  # the client dropped the connection


@pytest.mark.parametrize("consumer", ["take", "on_data"])
def test_a_streamed_gzip_bomb_stops_at_max_decoded(consumer):
    """A streamed body has no max_body, but a coded one stops at max_decoded: the response
    fails with a clear error and the connection is dropped, so the server stops sending."""
    limit = 8 * 1024 * 1024
    bomb = EndlessBomb()
    received = []
    with RawServer(bomb) as server:
        client = Client(server.url, high_water=64 * 1024, max_decoded=limit)
        if consumer == "take":
            response = client.get("/bomb", stream=True)
            wait(client, lambda: received.append(len(response.take())) or response.done,
                 timeout=30)
        else:
            response = client.get("/bomb", on_data=lambda data: received.append(len(data)))
            wait(client, response, timeout=30)
        assert bomb.cut_short.wait(10)
        after = client.get("/again", stream=True)  # a new connection: the old one is gone
        wait(client, lambda: after.status is not None, timeout=10)
        client.close()
    assert isinstance(response.error, ProtocolError)
    assert "max_decoded" in str(response.error) and "decoded" in str(response.error)
    assert limit - 64 * 1024 <= sum(received) <= limit
    assert bomb.sent_mib < bomb.most
    assert server.connections == 2 and after.status == 200


def test_max_decoded_allows_a_body_of_exactly_its_size():
    data = b"text " * (256 * 1024)  # 1.25 MiB decoded

    def serve(connection):
        read_head(connection)
        coded = gzip.compress(data)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(coded), coded))

    results = {}
    for limit in (len(data), len(data) - 1):
        taken = []
        with RawServer(serve) as server:
            client = Client(server.url, high_water=64 * 1024, max_decoded=limit)
            response = client.get("/", stream=True)
            # All of it arrives (done) before most is decoded: the limit applies as it is taken.
            wait(client, lambda: response.done)
            while piece := response.take():
                taken.append(piece)
            client.close()
        results[limit] = (response.error, b"".join(taken))
    assert results[len(data)] == (None, data)
    error, partial = results[len(data) - 1]
    assert isinstance(error, ProtocolError) and "max_decoded" in str(error)
    assert len(partial) < len(data)


def test_a_truncated_gzip_body_is_an_error():
    data = gzip.compress(b"complete text " * 1000)[:-12]

    def serve(connection):
        read_head(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(data), data))

    with RawServer(serve) as server:
        client = Client(server.url)
        response = client.get("/cut")
        wait(client, response)
        client.close()
    assert isinstance(response.error, ProtocolError) and "gzip" in str(response.error)


def test_benchmark_script_runs_small(tmp_path):
    """scripts/bench/client_streams.py end to end, tiny: every figure is measured."""
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench" / "client_streams.py"
    out = tmp_path / "result.json"
    subprocess.run([sys.executable, str(script), "--size-mib", "8", "--streams", "20",
                    "--stream-mib", "0.25", "--wrk-seconds", "1", "--reps", "1", "--out", str(out)],
                   check=True, capture_output=True, timeout=240)
    result = json.loads(out.read_text())
    assert result["concurrent"]["completed"] == 20 and result["concurrent"]["all_bytes"]
    for name in ("hio_upload", "hio_download", "hio_file_download", "urllib3_upload",
                 "urllib3_download", "urllib3_file_download"):
        assert result[name]["mib_per_s"] > 0 and result[name]["server_cpu_s"] >= 0


def test_a_followed_redirect_does_not_reach_the_stream():
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/old":
            start_response("302 Found", [("Location", "/new"), ("Content-Type", "text/plain")])
            return [b"this body is not the answer"]
        if environ["PATH_INFO"] == "/away":
            start_response("302 Found", [("Location", "http://192.0.2.1/elsewhere"),
                                         ("Content-Type", "text/plain")])
            return [b"left to the caller"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the answer"]

    with serve_in_thread(app) as server:
        client = Client(server.url, max_redirects=3)
        pieces = []
        followed = client.get("/old", on_data=pieces.append)
        wait(client, followed)
        away = client.get("/away", stream=True)
        wait(client, away)
        client.close()
    assert followed.status == 200 and b"".join(pieces) == b"the answer"
    assert len(followed.history) == 1
    assert away.status == 302 and away.take() == b"left to the caller" and away.error is None
