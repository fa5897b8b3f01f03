"""The WSGI server over real sockets: framing, keep-alive, pipelining, app errors, environ."""

import gc
import http.client
import json
import logging
import socket
import threading
import time

import pytest
import requests

from hio_http.net import Connection
from hio_http.stewarding import Steward

from conftest import is_closed, raw_connect, read_until_closed


def hello_app(environ, start_response):
    body = b"Hello, world!"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def streaming_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"one ", b"two ", b"three"])


def environ_app(environ, start_response):
    keys = ["REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "RAW_URI",
            "REQUEST_URI", "CONTENT_TYPE", "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT",
            "SERVER_PROTOCOL", "SERVER_SOFTWARE", "REMOTE_ADDR", "REMOTE_PORT",
            "wsgi.url_scheme", "wsgi.input_terminated", "wsgi.multithread",
            "wsgi.multiprocess", "wsgi.run_once"]
    seen = {key: environ.get(key) for key in keys}
    seen["http"] = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    seen["body"] = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode(
        "latin-1")
    seen["file_wrapper"] = callable(environ.get("wsgi.file_wrapper"))
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def test_get_with_requests(serve):
    server = serve(hello_app)
    response = requests.get(server.url + "/", timeout=5)
    assert response.status_code == 200
    assert response.text == "Hello, world!"
    assert response.headers["Content-Length"] == "13"
    assert response.headers["Server"] == "hio_http"
    assert response.headers["Date"].endswith(" GMT")


def test_keep_alive_reuses_one_connection(serve):
    server = serve(hello_app)
    connection = http.client.HTTPConnection(*server.address[:2], timeout=5)
    peers = set()
    for _ in range(3):
        connection.request("GET", "/")
        response = connection.getresponse()
        assert response.read() == b"Hello, world!"
        assert response.getheader("Connection") is None
        peers.add(connection.sock.getsockname())
    assert len(peers) == 1
    connection.close()


def test_every_head_is_right_however_many_different_ones_an_app_sends(serve):
    """Heads are remembered for reuse, in a bounded table: more distinct heads than it holds,
    mixed with one that repeats, each go out exactly as the app gave them."""
    def app(environ, start_response):
        seq = environ["PATH_INFO"][1:]
        body = b"same" if seq == "same" else seq.encode() * 2
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Seq", seq),
                                  ("Content-Length", str(len(body)))])
        return [body]

    server = serve(app)
    sock = raw_connect(server, timeout=10)
    paths = [str(n) if n % 7 else "same" for n in range(5000)]
    received = b""
    for batch in range(0, len(paths), 50):
        sock.sendall(b"".join(f"GET /{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                              for path in paths[batch:batch + 50]))
        for path in paths[batch:batch + 50]:
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
            head, _, received = received.partition(b"\r\n\r\n")
            fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
            expected = b"same" if path == "same" else path.encode() * 2
            while len(received) < len(expected):
                received += sock.recv(65536)
            body, received = received[:len(expected)], received[len(expected):]
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert fields[b"X-Seq"] == path.encode() and body == expected
            assert fields[b"Content-Length"] == str(len(expected)).encode()
            assert fields[b"Content-Type"] == b"text/plain" and b"Date" in fields
    sock.close()


def test_unknown_length_is_chunked_on_http11(serve):
    server = serve(streaming_app)
    sock = raw_connect(server)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert b"Content-Length" not in head
    assert body == b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"


def test_unknown_length_is_close_delimited_on_http10(serve):
    server = serve(streaming_app)
    sock = raw_connect(server)
    sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    data = read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in head
    assert b"chunked" not in head
    assert body == b"one two three"


def test_http10_keep_alive_when_asked_and_length_known(serve):
    server = serve(hello_app)
    sock = raw_connect(server)
    for _ in range(2):
        sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.getheader("Connection") == "keep-alive"
        assert response.read() == b"Hello, world!"
    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")  # no keep-alive: the server closes after
    data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"Hello, world!")


def test_single_item_list_gets_content_length_in_one_write(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"sized"]

    server = serve(app, validate=False)  # the validator hides the list behind an iterator
    response = requests.get(server.url, timeout=5)
    assert response.headers["Content-Length"] == "5"
    assert "Transfer-Encoding" not in response.headers


def test_head_has_no_body_but_keeps_length(serve):
    server = serve(hello_app)
    sock = raw_connect(server)
    sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n"
                 b"Connection: close\r\n\r\n")
    data = read_until_closed(sock)
    first, second = data.split(b"HTTP/1.1 200 OK")[1:]
    assert b"Content-Length: 13" in first and first.endswith(b"\r\n\r\n")
    assert second.endswith(b"\r\n\r\nHello, world!")


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_bodiless_statuses_send_no_body(serve, status):
    def app(environ, start_response):
        start_response(status, [])
        return [b""]

    server = serve(app)
    sock = raw_connect(server)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n"
                 b"Connection: close\r\n\r\n")
    data = read_until_closed(sock)
    assert data.count(status.encode()) == 2
    assert b"chunked" not in data and b"Content-Length" not in data
    assert data.endswith(b"\r\n\r\n")


def test_short_body_closes_connection_instead_of_hanging(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "100")])
        return iter([b"only ten b"])

    server = serve(app, validate=False)  # the validator itself would object to the lie
    connection = http.client.HTTPConnection(*server.address[:2], timeout=5)
    connection.request("GET", "/")
    response = connection.getresponse()
    with pytest.raises(http.client.IncompleteRead):
        response.read()


def test_long_body_is_cut_at_content_length(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "4")])
        return iter([b"abcdef", b"ghi"])

    server = serve(app, validate=False)
    sock = raw_connect(server)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = read_until_closed(sock)
    assert data.endswith(b"\r\n\r\nabcd")


def test_connection_close_from_app_ends_the_connection_and_is_sent_once(serve):
    """An app's `Connection: close` is honoured, not refused: its response is whole, the header
    appears once, and a request pipelined behind it is not answered on this connection."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close"),
                                  ("Content-Length", "4")])
        return [b"done"]

    server = serve(app, validate=False)
    sock = raw_connect(server)
    sock.sendall(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                 b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    data = read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head.lower().count(b"\r\nconnection:") == 1
    assert b"\r\nConnection: close" in head
    assert body == b"done"  # nothing after it: the pipelined GET was not answered
    assert is_closed(sock)


@pytest.mark.parametrize("name, value", [
    ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"), ("TE", "trailers"),
    ("Trailer", "X-Sum"), ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"),
    ("Connection", "keep-alive"),
])
def test_other_hop_by_hop_headers_from_app_are_dropped_with_one_warning(serve, caplog,
                                                                       monkeypatch, name, value):
    """The server frames the body and keeps the connection: the app's field is dropped, the
    response is served as usual on a connection that stays open, and the drop is logged once."""
    from hio_http import framing
    monkeypatch.setattr(framing, "_warned_hop_by_hop", set())  # as in a fresh process

    def app(environ, start_response):
        start_response("200 OK", [(name, value), ("Content-Length", "2")])
        return [b"ok"]

    server = serve(app, validate=False)
    connection = http.client.HTTPConnection(*server.address[:2], timeout=5)
    with caplog.at_level(logging.WARNING, logger="hio_http"):
        for _ in range(3):
            connection.request("GET", "/")
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"ok")
            assert response.getheader(name) is None or name == "Connection"
            assert response.getheader("Connection") in (None, "keep-alive")
            assert not response.will_close
    connection.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and f"hop-by-hop header {name!r}" in r.getMessage()]
    assert len(warnings) == 1


def test_body_items_may_be_any_bytes_like_object(serve):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(memoryview(b"w"))

        def body():
            yield bytearray(b"")  # "not yet", as b"" is
            yield bytearray(b"a")
            yield memoryview(b"bc")
            yield b"d"
        return body()

    server = serve(app, validate=False)
    response = requests.get(server.url, timeout=5)
    assert (response.status_code, response.content) == (200, b"wabcd")


@pytest.mark.parametrize("item", ["text", 42, None])
def test_body_item_that_is_not_bytes_like_is_a_500_with_a_clear_log(serve, caplog, item):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [item]

    server = serve(app, validate=False)
    with caplog.at_level(logging.ERROR, logger="hio_http"):
        assert requests.get(server.url, timeout=5).status_code == 500
        assert requests.get(server.url, timeout=5).status_code == 500
    assert f"the app yielded {type(item).__name__}, not a bytes-like object" in caplog.text


@pytest.mark.parametrize("bad, complaint", [
    (("X-Note", "caf\u00e9 \u2615"), "not latin-1 text"),
    (("X-Note", "a\r\nSet-Cookie: stolen=1"), "must not contain CR, LF or NUL"),
    (("Bad Name", "x"), "invalid response header name"),
])
def test_bad_header_from_app_is_refused_every_time_not_only_the_first(serve, caplog, bad,
                                                                       complaint):
    """A bad header pair gets a 500 and a clear log line on every request, and the good
    requests between them are not disturbed."""
    def app(environ, start_response):
        headers = [("Content-Type", "text/plain"), ("Content-Length", "2")]
        if environ["PATH_INFO"] == "/bad":
            headers.append(bad)
        start_response("200 OK", headers)
        return [b"ok"]

    server = serve(app, validate=False)
    with caplog.at_level(logging.ERROR, logger="hio_http"):
        for _ in range(3):
            assert requests.get(server.url + "/bad", timeout=5).status_code == 500
            good = requests.get(server.url + "/good", timeout=5)
            assert good.status_code == 200 and good.text == "ok"
            assert good.headers["Content-Type"] == "text/plain"
    refusals = [r for r in caplog.records if r.exc_info and complaint in str(r.exc_info[1])]
    assert len(refusals) == 3


def test_app_exception_before_start_is_500_without_traceback(serve, caplog):
    def app(environ, start_response):
        raise RuntimeError("secret detail")

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="hio_http"):
        response = requests.get(server.url, timeout=5)
    assert response.status_code == 500
    assert response.headers["Connection"] == "close"
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "secret detail" in caplog.text  # the traceback goes to the log
    assert requests.get(server.url, timeout=5).status_code == 500  # still serving


def test_app_exception_after_head_truncates_chunked_response(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield b"partial"
            raise RuntimeError("mid-stream")

        return body()

    server = serve(app)
    sock = raw_connect(server)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = read_until_closed(sock)
    assert b"7\r\npartial\r\n" in data
    assert not data.endswith(b"0\r\n\r\n")  # never a complete-looking response


def test_pipelined_requests_are_answered_in_order(serve):
    def app(environ, start_response):
        body = environ["PATH_INFO"].encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    server = serve(app)
    sock = raw_connect(server)
    sock.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(20))
                 + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = read_until_closed(sock)
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in data.split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies == [b"/%d" % i for i in range(20)] + [b"/last"]


def test_client_connection_close_is_honoured(serve):
    server = serve(hello_app)
    sock = raw_connect(server)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = read_until_closed(sock)
    assert b"Connection: close" in data
    assert data.endswith(b"Hello, world!")


def test_a_waiting_last_response_sends_what_it_has_at_once(serve):
    """The last response of a connection may be held back for the FIN (Connection.cork),
    but not while its body waits for more: the client gets the first part meanwhile."""
    got_first = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first "
        while not got_first.is_set():
            yield b""  # not yet
        yield b"second"

    server = serve(app)
    sock = raw_connect(server)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    sock.settimeout(5)
    received = b""
    while b"first " not in received:
        chunk = sock.recv(4096)
        assert chunk, "closed before the first part came"
        received += chunk
    got_first.set()
    received += read_until_closed(sock)
    assert received.endswith(b"6\r\nsecond\r\n0\r\n\r\n")


def test_a_closed_connection_is_freed_without_the_cycle_collector(serve):
    """A server accepting a new connection per request would otherwise leave the collector a
    cycle per connection to find (steward and connection, parser and Requestant)."""
    server = serve(hello_app, validate=False)
    gc.disable()
    try:
        sock = raw_connect(server)
        deadline = time.monotonic() + 5
        while not server.stewards and time.monotonic() < deadline:
            time.sleep(0.01)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_until_closed(sock).endswith(b"Hello, world!")

        def alive():  # this server's stewards and connections the collector still tracks
            return [type(thing).__name__ for thing in gc.get_objects()
                    if isinstance(thing, Steward) and thing.server is server
                    or isinstance(thing, Connection)
                    and getattr(thing.handler, "server", None) is server]
        while alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert alive() == []
    finally:
        gc.enable()


def test_expect_100_continue(serve):
    server = serve(environ_app)
    sock = raw_connect(server)
    sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    sock.settimeout(5)
    interim = sock.recv(1024)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(b"hello")
    response = http.client.HTTPResponse(sock)
    response.begin()
    assert response.status == 200
    assert json.loads(response.read())["body"] == "hello"


def test_other_expectation_gets_417(serve):
    server = serve(environ_app)
    sock = raw_connect(server)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: magic\r\n\r\n")
    data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 417 ")
    assert b"Connection: close" in data


def test_other_expectation_gets_417_without_a_body_too(serve):
    server = serve(environ_app)
    sock = raw_connect(server)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n")
    data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 417 ") and b"Connection: close" in data


def test_two_content_types_get_400(serve):
    server = serve(environ_app)
    sock = raw_connect(server)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 400 ") and b"Content-Type" in data


def test_http_1_2_is_answered_as_http_1_1(serve):
    server = serve(environ_app)
    sock = raw_connect(server)
    sock.sendall(b"GET /v HTTP/1.2\r\nHost: x\r\n\r\nGET /w HTTP/1.2\r\nHost: x\r\n"
                 b"Connection: close\r\n\r\n")
    data = read_until_closed(sock)
    assert data.count(b"HTTP/1.1 200 OK") == 2  # kept alive, as 1.1 is
    assert data.count(b'"SERVER_PROTOCOL": "HTTP/1.1"') == 2


def test_environ(serve):
    server = serve(environ_app, root_path="/app")
    sock = raw_connect(server)
    sock.sendall(b"POST /app/caf%C3%A9/x%2Fy?a=1&b=%20 HTTP/1.1\r\nHost: example.org\r\n"
                 b"Content-Type: text/plain\r\nContent-Length: 4\r\nX-Multi: one\r\n"
                 b"X-Multi: two\r\nX_Spoof: yes\r\nConnection: close\r\n\r\nbody")
    data = read_until_closed(sock)
    seen = json.loads(data.split(b"\r\n\r\n", 1)[1])
    host, port = server.address[:2]
    assert seen["REQUEST_METHOD"] == "POST"
    assert seen["SCRIPT_NAME"] == "/app"
    assert seen["PATH_INFO"] == "/caf\u00c3\u00a9/x/y"  # decoded bytes carried as latin-1
    assert seen["QUERY_STRING"] == "a=1&b=%20"
    assert seen["RAW_URI"] == seen["REQUEST_URI"] == "/app/caf%C3%A9/x%2Fy?a=1&b=%20"
    assert seen["CONTENT_TYPE"] == "text/plain" and seen["CONTENT_LENGTH"] == "4"
    assert "HTTP_CONTENT_TYPE" not in seen["http"] and "HTTP_CONTENT_LENGTH" not in seen["http"]
    assert seen["http"]["HTTP_HOST"] == "example.org"
    assert seen["http"]["HTTP_X_MULTI"] == "one, two"
    assert "HTTP_X_SPOOF" not in seen["http"]  # underscores could impersonate dashes
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == (host, str(port))
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert seen["REMOTE_ADDR"] == "127.0.0.1" and seen["REMOTE_PORT"].isdigit()
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["wsgi.input_terminated"] is True
    assert (seen["wsgi.multithread"], seen["wsgi.multiprocess"], seen["wsgi.run_once"]) == (
        False, False, False)
    assert seen["file_wrapper"] is True
    assert seen["body"] == "body"


def test_chunked_request_body_reaches_app_with_length(serve):
    server = serve(environ_app)
    sock = raw_connect(server)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Connection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    seen = json.loads(read_until_closed(sock).split(b"\r\n\r\n", 1)[1])
    assert seen["body"] == "abcde"
    assert seen["CONTENT_LENGTH"] == "5"


def test_write_callable_and_close_are_honoured(serve):
    closed = []

    class Body:
        def __iter__(self):
            yield b" and iterable"

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written")
        return Body()

    server = serve(app)
    response = requests.get(server.url, timeout=5)
    assert response.text == "written and iterable"
    deadline = time.monotonic() + 5  # close() follows the last bytes, on the server's thread
    while not closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed == [True]


def test_file_wrapper_serves_a_file(serve, tmp_path):
    payload = bytes(range(256)) * 1000
    path = tmp_path / "blob.bin"
    path.write_bytes(payload)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(payload)))])
        return environ["wsgi.file_wrapper"](open(path, "rb"), 8192)

    server = serve(app)
    assert requests.get(server.url, timeout=5).content == payload


def test_one_bad_connection_does_not_disturb_another(serve):
    server = serve(hello_app)
    good = http.client.HTTPConnection(*server.address[:2], timeout=5)
    good.request("GET", "/")
    assert good.getresponse().read() == b"Hello, world!"
    bad = raw_connect(server)
    bad.sendall(b"\x00\x01garbage\r\n\r\n")
    assert read_until_closed(bad).startswith(b"HTTP/1.1 400 ")
    good.request("GET", "/")
    assert good.getresponse().read() == b"Hello, world!"


def test_client_reset_mid_request_leaves_server_serving(serve):
    server = serve(hello_app)
    sock = raw_connect(server)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npartial")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # RST
    assert requests.get(server.url, timeout=5).text == "Hello, world!"
