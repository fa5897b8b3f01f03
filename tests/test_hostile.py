"""Hostile and malformed requests over real sockets: the right status, Connection: close, then
the connection closes, and the server keeps serving everyone else."""

import socket
import time

import pytest
import requests

from conftest import is_closed, raw_connect, read_until_closed


def ok_app(environ, start_response):
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


HOSTILE = [
    # (id, bytes, status)
    ("target too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("header section too large",
     b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 70000 + b"\r\n\r\n", 431),
    ("too many header fields",
     b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(150))
     + b"\r\n", 431),
    ("declared body too large",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413),
    ("chunked body too large",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"100000\r\n" + b"z" * 0x100000 + b"\r\n" + b"100000\r\n" + b"z" * 0x100000 + b"\r\n",
     413),
    ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ("Content-Length not digits",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400),
    ("Content-Length and Transfer-Encoding",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    ("duplicate Content-Length",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("differing Content-Length",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("unsupported Transfer-Encoding",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("unsupported version", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("bare LF", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n", 400),
    ("NUL in header value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: o\x00ne\r\n\r\n", 400),
    ("whitespace before colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A : one\r\n\r\n", 400),
    ("missing Host on HTTP/1.1", b"GET / HTTP/1.1\r\nX-A: one\r\n\r\n", 400),
    ("bad chunk size",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
     400),
]


@pytest.mark.parametrize("data, status", [case[1:] for case in HOSTILE],
                         ids=[case[0] for case in HOSTILE])
def test_hostile_request_gets_status_and_close(serve, data, status):
    server = serve(ok_app, max_body=1_000_000)
    sock = raw_connect(server)
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may answer and close before it has read everything we send
    response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 %d " % status), response[:200]
    head = response.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nConnection: close\r\n" in head + b"\r\n"
    assert requests.get(server.url, timeout=5).text == "ok"  # everyone else still served


def test_error_after_good_pipelined_requests_comes_in_order(serve):
    server = serve(ok_app)
    sock = raw_connect(server)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"GET / HTTP/9.9\r\nHost: x\r\n\r\n")
    data = read_until_closed(sock)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b"HTTP/1.1 505 ") > data.rindex(b"HTTP/1.1 200 OK")


def test_idle_keep_alive_connection_is_closed(serve):
    server = serve(ok_app, idle_timeout=0.3)
    sock = raw_connect(server)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(5)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
    started = time.monotonic()
    assert is_closed(sock, timeout=5)
    assert 0.2 <= time.monotonic() - started < 3


def test_slowloris_header_gets_408_and_close_while_others_are_served(serve):
    server = serve(ok_app, header_timeout=0.5)
    slow = raw_connect(server)
    slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    for _ in range(3):
        started = time.monotonic()
        assert requests.get(server.url, timeout=5).text == "ok"
        assert time.monotonic() - started < 0.5
    data = read_until_closed(slow, timeout=5)
    assert data.startswith(b"HTTP/1.1 408 ")


def test_stalled_body_gets_408(serve):
    server = serve(ok_app, body_timeout=0.4)
    sock = raw_connect(server)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    data = read_until_closed(sock, timeout=5)
    assert data.startswith(b"HTTP/1.1 408 ")


def test_client_that_never_reads_is_dropped_at_write_timeout(serve):
    chunk = b"x" * 65536

    def big_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (chunk for _ in range(2000))  # 128 MiB, far beyond any socket buffer

    server = serve(big_app, write_timeout=0.5)
    sock = raw_connect(server)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(2.0)  # never read: the server must give up on us
    assert is_closed_after_draining(sock)
    assert requests.get(server.url, timeout=5).status_code == 200


def is_closed_after_draining(sock, limit=64 * 1024 * 1024):
    """Drain what the kernel buffered; True if the stream then ends well short of 128 MiB."""
    received = len(read_until_closed(sock, limit=limit, timeout=5))
    return received < limit


def test_connection_limit_makes_new_connections_wait(serve):
    server = serve(ok_app, max_connections=2)
    first, second = raw_connect(server), raw_connect(server)
    for sock in (first, second):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
    third = raw_connect(server)  # the kernel's backlog takes it
    third.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    third.settimeout(0.5)
    with pytest.raises(socket.timeout):
        third.recv(4096)  # not accepted yet
    first.close()
    assert read_until_closed(third, timeout=5).startswith(b"HTTP/1.1 200 OK")
