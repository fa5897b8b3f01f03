"""Cooperative streaming: sendfile for file wrappers, bounded memory for clients that stop
reading, and "not yet" items that never hold up other connections."""

import hashlib
import logging
import os
import socket
import threading
import time

import pytest
import requests

from conftest import raw_connect, server_context


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with open(path, "wb") as out:
        for _ in range(20):
            out.write(block)
    return path


def file_app(path):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(path, "rb"), 65536)
    return app


@pytest.fixture
def sendfile_calls(monkeypatch):
    """Counts the bytes the server sends through os.sendfile (the server runs in-process)."""
    sent = []
    real = os.sendfile

    def counting(out_fd, in_fd, offset, count):
        result = real(out_fd, in_fd, offset, count)
        sent.append(result)
        return result

    monkeypatch.setattr(os, "sendfile", counting)
    return sent


def sha256_of(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_file_wrapper_goes_out_by_sendfile_on_plain_tcp(serve, big_file, sendfile_calls):
    server = serve(file_app(big_file), validate=False)  # the validator would hide the wrapper
    response = requests.get(server.url, timeout=20)
    assert response.headers["Content-Length"] == str(20 << 20)
    assert hashlib.sha256(response.content).hexdigest() == sha256_of(big_file)
    assert sum(sendfile_calls) == 20 << 20


def test_file_wrapper_head_sends_length_only(serve, big_file, sendfile_calls):
    server = serve(file_app(big_file), validate=False)
    response = requests.head(server.url, timeout=5)
    assert response.headers["Content-Length"] == str(20 << 20)
    assert response.content == b""
    assert sendfile_calls == []


def test_file_wrapper_under_tls_is_read_in_blocks(serve, big_file, sendfile_calls, certificate):
    cert = certificate[0]
    server = serve(file_app(big_file), validate=False, ssl_context=server_context(certificate))
    response = requests.get(server.url, verify=cert, timeout=20)
    assert hashlib.sha256(response.content).hexdigest() == sha256_of(big_file)
    assert sendfile_calls == []


def test_client_that_stops_reading_costs_bounded_memory(serve):
    item = 64 * 1024
    pulled = []

    def endless_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def body():
            for _ in range(1600):  # 100 MiB
                pulled.append(item)
                yield b"x" * item

        return body()

    server = serve(endless_app, write_timeout=30)
    stalled = raw_connect(server)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    stalled.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.5)  # let the kernel buffers fill: from then on nothing moves
    steady = sum(pulled)
    pending = [s.connection.pending for s in server.stewards]
    time.sleep(0.3)
    assert sum(pulled) == steady, "the server kept pulling the body of a stalled client"
    # Bound: one high-water mark (64 KiB) plus one item in our buffer; the rest sits in the
    # kernel's socket buffers (a few MiB on loopback), far below the 100 MiB of the body.
    assert max(pending) <= 64 * 1024 + item
    assert steady < 16 * 1024 * 1024
    stalled.close()


def test_stalled_stream_does_not_slow_other_clients(serve):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/big":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return (b"y" * 65536 for _ in range(1600))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server = serve(app)
    stalled = raw_connect(server)
    stalled.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    session = requests.Session()
    started = time.monotonic()
    for _ in range(200):
        assert session.get(server.url + "/small", timeout=5).text == "ok"
    elapsed = time.monotonic() - started
    stalled.close()
    assert elapsed < 3.0, f"200 small requests took {elapsed:.2f} s beside a stalled stream"


def test_not_yet_items_resume_without_blocking_others(serve):
    release = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/poll":
            start_response("200 OK", [("Content-Type", "text/plain")])

            def long_poll():
                while not release.is_set():
                    yield b""  # not yet: the server comes back on a later pass
                yield b"released"

            return long_poll()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server = serve(app)
    polls = [raw_connect(server) for _ in range(20)]
    for sock in polls:
        sock.sendall(b"GET /poll HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    session = requests.Session()
    for _ in range(20):
        assert session.get(server.url + "/", timeout=2).text == "ok"
    release.set()
    for sock in polls:
        sock.settimeout(5)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.endswith(b"8\r\nreleased\r\n0\r\n\r\n")


def test_client_gone_during_a_parked_response_frees_it_at_once(serve):
    closed = threading.Event()

    class Forever:
        def __iter__(self):
            while True:
                yield b""

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Forever()

    server = serve(app, validate=False)  # the validator's wrapper would hide our close()
    sock = raw_connect(server)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    sock.close()
    assert closed.wait(3), "the app's iterable was not closed when its client left"


def test_client_reset_during_a_sendfile_download_is_no_internal_error(serve, big_file, caplog):
    server = serve(file_app(big_file), validate=False)
    with caplog.at_level(logging.ERROR, logger="hio_http"):
        for _ in range(10):
            sock = raw_connect(server)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(1000)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # RST with most of the file unsent
        assert requests.get(server.url, timeout=20).status_code == 200
    assert "internal error" not in caplog.text
