"""Bare handlers: Steward subclasses and handler functions answering with CustomResponder,
over several ticks, streaming, beside a WSGI app and a user doer in one Doist."""

import http.client
import logging
import threading
import types

import pytest
import requests

from hio_http.doing import Doer, Doist
from hio_http.responding import CustomResponder
from hio_http.serving import BareServer, Server, ServerDoer, Steward
from hio_http.testing import serve_in_thread

from conftest import raw_connect, read_until_closed


class Greeter(Steward):
    def respond(self, request):
        if request.path == "/hello":
            return CustomResponder(200, {"Content-Type": "text/plain"}, b"hello, bare world")
        if request.path == "/json":
            return CustomResponder(data={"method": request.method, "query": request.query,
                                         "body": request.body.read().decode()})
        if request.path == "/boom":
            raise ValueError("handler bug")
        return None if request.path == "/never" else CustomResponder(404, body=b"nope")


def test_steward_subclass_answers_with_custom_responders():
    with serve_in_thread(cls=BareServer, steward=Greeter) as server:
        session = requests.Session()
        hello = session.get(server.url + "/hello", timeout=5)
        assert (hello.status_code, hello.text) == (200, "hello, bare world")
        assert hello.headers["Content-Length"] == "17" and hello.headers["Server"] == "hio_http"
        posted = session.post(server.url + "/json?x=1", data=b"payload", timeout=5)
        assert posted.headers["Content-Type"] == "application/json"
        assert posted.json() == {"method": "POST", "query": "x=1", "body": "payload"}
        assert session.get(server.url + "/other", timeout=5).status_code == 404


def test_handler_exception_is_a_500_on_that_connection_only():
    with serve_in_thread(cls=BareServer, steward=Greeter) as server:
        assert requests.get(server.url + "/boom", timeout=5).status_code == 500
        assert requests.get(server.url + "/hello", timeout=5).status_code == 200


def test_bare_server_shares_the_strict_rules():
    with serve_in_thread(cls=BareServer, steward=Greeter, max_body=10) as server:
        sock = raw_connect(server)
        sock.sendall(b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 413 ")
        sock = raw_connect(server)
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /json HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n")
        data = read_until_closed(sock)
        assert data.index(b"hello, bare world") < data.index(b'"method":"GET"')


class Jobs(Doer):
    """Another doer in the same Doist: finishes jobs one tock after they are asked for."""

    def __init__(self, **kwa):
        super().__init__(**kwa)
        self.asked, self.done_jobs = [], {}

    def recur(self, tyme):
        for job in self.asked:
            self.done_jobs[job] = f"result of {job}"
        self.asked = []
        return False


def test_handler_waits_for_another_doer_over_several_ticks():
    jobs = Jobs(tock=0.05)

    def handler(request):
        job = request.query
        if job in jobs.done_jobs:
            return CustomResponder(data={"job": job, "result": jobs.done_jobs[job]})
        if job not in jobs.asked:
            jobs.asked.append(job)
        return None  # not yet: asked again on the next pass

    doist = Doist(tock=0.01, real=True)
    server = BareServer(handler=handler, poller=doist.poller)
    server.open()
    answers = []

    def client():
        session = requests.Session()
        for name in ("a", "b", "c"):
            answers.append(session.get(f"{server.url}/job?{name}", timeout=5).json())

    thread = threading.Thread(target=client)
    thread.start()
    stop = StopWhen(doist, lambda: not thread.is_alive())
    doist.do(doers=[ServerDoer(server), jobs, stop], limit=20)
    thread.join()
    assert answers == [{"job": n, "result": f"result of {n}"} for n in "abc"]


class StopWhen(Doer):
    """Ends its Doist's run once `condition()` holds."""

    def __init__(self, doist, condition, **kwa):
        super().__init__(**kwa)
        self.doist, self.condition = doist, condition

    def recur(self, tyme):
        if self.condition():
            self.doist.remove(list(self.doist.doers))
        return False


def test_steward_streams_with_not_yet_items():
    def handler(request):
        def ticks():
            for word in (b"one", b"", b"", b"two", b"", b"three"):
                yield word
        return CustomResponder(200, [("Content-Type", "text/plain")], ticks())

    with serve_in_thread(cls=BareServer, handler=handler) as server:
        connection = http.client.HTTPConnection(*server.address[:2], timeout=5)
        connection.request("GET", "/")
        response = connection.getresponse()
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.read() == b"onetwothree"


def test_wsgi_and_bare_servers_and_a_user_doer_in_one_doist():
    def wsgi_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"from wsgi"]

    doist = Doist(tock=0.01, real=True)
    wsgi = Server(wsgi_app, poller=doist.poller).open()
    bare = BareServer(steward=Greeter, poller=doist.poller).open()
    jobs = Jobs(tock=0.01)
    counted = []

    class Counter(Doer):
        def recur(self, tyme):
            counted.append(tyme)
            return False

    results = []

    def client():
        session = requests.Session()
        for _ in range(10):
            results.append(session.get(wsgi.url, timeout=5).text)
            results.append(session.get(bare.url + "/hello", timeout=5).text)

    thread = threading.Thread(target=client)
    thread.start()
    doers = [ServerDoer(wsgi), ServerDoer(bare), jobs, Counter(tock=0.0),
             StopWhen(doist, lambda: not thread.is_alive())]
    doist.do(doers=doers, limit=20)
    thread.join()
    assert results == ["from wsgi", "hello, bare world"] * 10
    assert len(counted) >= 2
    assert wsgi.acceptor is None and bare.acceptor is None


def test_head_on_a_streamed_bare_response_ends_at_once():
    def handler(request):
        def forever():
            while True:
                yield b""  # never ready: a HEAD must not wait for it
        return CustomResponder(200, [("Content-Type", "text/plain")], forever())

    with serve_in_thread(cls=BareServer, handler=handler) as server:
        sock = raw_connect(server)
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n")
        data = read_until_closed(sock)
        assert data.count(b"HTTP/1.1 200 OK") == 2


def test_connection_close_from_a_bare_handler_ends_the_connection_sent_once():
    def handler(request):
        return CustomResponder(201, {"Connection": "close", "Content-Type": "text/plain"},
                               b"made")

    with serve_in_thread(cls=BareServer, handler=handler) as server:
        sock = raw_connect(server)
        sock.sendall(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                     b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = read_until_closed(sock).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 201 Created\r\n")
        assert head.lower().count(b"\r\nconnection:") == 1 and b"Connection: close" in head
        assert body == b"made"  # the pipelined GET got no answer: the connection closed


def test_bare_header_values_may_be_str_bytes_like_or_int_and_bodies_bytes_like():
    """CESR-style headers: an int Content-Length and a bytearray value go out as those exact
    bytes; bodies and streamed items may be bytearray or memoryview."""
    attachment = bytearray(b"-AAB\xe9AAA")  # latin-1 byte 0xe9 kept as it is

    def handler(request):
        headers = {"Content-Type": b"application/cesr", "Content-Length": 5,
                   "CESR-ATTACHMENT": attachment, "X-Count": memoryview(b"7")}
        if request.path == "/stream":
            def items():
                yield bytearray()
                yield bytearray(b"str")
                yield memoryview(b"eam")
            return CustomResponder(200, [("X-Kind", b"stream")], items())
        return CustomResponder(200, headers, bytearray(b"hello"))

    with serve_in_thread(cls=BareServer, handler=handler) as server:
        sock = raw_connect(server)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /stream HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n")
        data = read_until_closed(sock)
        assert b"\r\nContent-Type: application/cesr\r\n" in data
        assert b"\r\nContent-Length: 5\r\n" in data and b"\r\nX-Count: 7\r\n" in data
        assert b"\r\nCESR-ATTACHMENT: -AAB\xe9AAA\r\n" in data
        assert b"bytearray" not in data
        assert b"\r\n\r\nhello" in data
        assert data.endswith(b"3\r\nstr\r\n3\r\neam\r\n0\r\n\r\n")


@pytest.mark.parametrize("headers, body, complaint", [
    ({"X-Bad": 1.5}, b"", "X-Bad value must be str, bytes-like or int, not float"),
    ({"X-Bad": None}, b"", "X-Bad value must be str, bytes-like or int, not NoneType"),
    ({}, "text", "body must be bytes-like or an iterable of bytes-like items, not str"),
    ({}, iter(["text"]), "the response body yielded str, not a bytes-like object"),
])
def test_bare_header_or_body_of_another_type_is_a_500_with_a_clear_log(caplog, headers, body,
                                                                        complaint):
    def handler(request):
        if request.path == "/good":
            return CustomResponder(200, body=b"fine")
        return CustomResponder(200, headers, body)

    with serve_in_thread(cls=BareServer, handler=handler) as server:
        with caplog.at_level(logging.ERROR, logger="hio_http"):
            assert requests.get(server.url + "/bad", timeout=5).status_code == 500
        assert requests.get(server.url + "/good", timeout=5).text == "fine"
    assert complaint in caplog.text


def test_one_answer_made_once_serves_many_requests():
    """A CustomResponder holds no connection: one made at import time answers every request,
    plain or gzipped, GET or HEAD, on one keep-alive connection and on others."""
    answer = CustomResponder(200, [("Content-Type", "text/plain")], b"same " * 400,
                             compress=True)

    with serve_in_thread(cls=BareServer, handler=lambda request: answer) as server:
        session = requests.Session()
        for _ in range(3):
            plain = session.get(server.url, headers={"Accept-Encoding": "identity"}, timeout=5)
            assert (plain.content, plain.headers.get("Content-Encoding")) == (b"same " * 400,
                                                                              None)
            zipped = session.get(server.url, headers={"Accept-Encoding": "gzip"}, timeout=5)
            assert zipped.headers["Content-Encoding"] == "gzip"
            assert zipped.content == b"same " * 400  # requests inflates it
            head = session.head(server.url, headers={"Accept-Encoding": "identity"}, timeout=5)
            assert head.headers["Content-Length"] == "2000" and head.content == b""
        sock = raw_connect(server)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_until_closed(sock).endswith(b"\r\n\r\n" + b"same " * 400)


def test_an_answer_that_is_no_responder_is_a_500_saying_so(caplog):
    def handler(request):
        return {"not": "an answer"} if request.path == "/bad" else CustomResponder(body=b"ok")

    with serve_in_thread(cls=BareServer, handler=handler) as server:
        with caplog.at_level(logging.ERROR, logger="hio_http"):
            assert requests.get(server.url + "/bad", timeout=5).status_code == 500
        assert requests.get(server.url + "/good", timeout=5).text == "ok"
    # The pure build's own check, or the compiled build's check of respond()'s return type:
    # either way a 500 and a log naming what was returned.
    assert ("an answer must be a CustomResponder, a responder or None, not dict" in caplog.text
            or "object expected; got dict" in caplog.text)


def test_bare_headers_may_be_any_mapping():
    headers = types.MappingProxyType({"Content-Type": "text/plain", "X-Count": 3})

    with serve_in_thread(cls=BareServer, handler=lambda request: CustomResponder(
            200, headers, b"mapped")) as server:
        answer = requests.get(server.url, timeout=5)
    assert (answer.text, answer.headers["X-Count"]) == ("mapped", "3")
    assert answer.headers["Content-Type"] == "text/plain"
