"""The nonblocking client: its response and event-stream parsers on their own (including
property tests on arbitrary bytes and splits), then over real sockets against our server (in
one simulated loop, no threads), the standard library's http.server, waitress, and raw socket
servers that misbehave on purpose."""

import contextlib
import http.server
import json
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import falcon
import pytest
from hypothesis import given, settings, strategies as st

from hio_http.clienting import (
    Client, ClientDoer, ClientError, ClientTimeout, ConnectError, ConnectTimeout, ConnectionLost,
    Data, End, Event, EventParser, Head, Interim, ProtocolError, ResponseParser, TooManyRedirects)
from hio_http.doing import Doer, Doist
from hio_http.responding import CustomResponder
from hio_http.serving import BareServer
from hio_http.sse import Broadcaster
from hio_http.testing import Loop, serve_in_thread

from conftest import server_context, stdlib_server, waitress_server

waitress = pytest.importorskip("waitress")

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


# -- helpers ------------------------------------------------------------------------------------

def parse(chunks, methods=("GET",), eof=False, as_session=False):
    """Feed `chunks` to a ResponseParser expecting `methods`; (events, error or None).
    `as_session`: take events after every chunk and offer each chunk to `take_body` first,
    as the client's session does."""
    parser = ResponseParser()
    for method in methods:
        parser.expect(method)
    events, error = [], None
    try:
        for chunk in chunks:
            if as_session and parser.take_body(chunk):
                events.append(Data(chunk))
                continue
            parser.feed(chunk)
            if as_session:
                while (event := parser.next_event()) is not None:
                    events.append(event)
        if eof:
            parser.feed_eof()
        while (event := parser.next_event()) is not None:
            events.append(event)
    except ClientError as ex:
        error = ex
    return merge(events), error


def merge(events):
    """Adjacent Data events joined, so different splits compare equal."""
    merged = []
    for event in events:
        if isinstance(event, Data) and merged and isinstance(merged[-1], Data):
            merged[-1] = Data(merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


def splits(data, cuts):
    cuts = sorted({cut % (len(data) + 1) for cut in cuts})
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


@contextlib.contextmanager
def raw_server(handle):
    """A thread accepting connections on a free port, calling handle(conn, index) for each
    (one at a time). Yields the port; closes everything on the way out."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()
    connections = []

    def run():
        index = 0
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (socket.timeout, OSError):
                continue
            connections.append(conn)
            conn.settimeout(5)
            try:
                handle(conn, index)
            except OSError:
                pass
            index += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in connections:
            conn.close()


def read_requests(conn, count, buffer=b""):
    """Read until `count` request heads (no bodies) are in; returns (heads, rest)."""
    while buffer.count(b"\r\n\r\n") < count:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buffer += chunk
    parts = buffer.split(b"\r\n\r\n")
    return parts[:count], b"\r\n\r\n".join(parts[count:])


def reply(body, extra=b""):
    return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body))


def echo_app(environ, start_response):
    """JSON of what arrived; REMOTE_PORT tells connections apart."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    answer = json.dumps({"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
                         "query": environ.get("QUERY_STRING", ""),
                         "port": environ["REMOTE_PORT"], "body": body.decode(),
                         "type": environ.get("CONTENT_TYPE", "")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(answer)))])
    return [answer]


# -- the response parser ------------------------------------------------------------------------

@pytest.mark.parametrize("as_session", [False, True])
def test_content_length_response_at_every_split(as_session):
    wire = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    for cut in range(len(wire) + 1):
        for second in range(cut, len(wire) + 1):
            chunks = [wire[:cut], wire[cut:second], wire[second:]]
            events, error = parse(chunks, as_session=as_session)
            assert error is None
            assert events == [Head(200, "OK", "1.1", [("Content-Type", "text/plain"),
                                                     ("Content-Length", "5")]),
                              Data(b"hello"), End([], True)]


def test_take_body_takes_only_what_leaves_the_body_unfinished():
    parser = ResponseParser()
    parser.expect("GET")
    parser.expect("GET")
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
    assert not parser.take_body(b"ab")  # the Head event still waits
    assert isinstance(parser.next_event(), Head)
    assert parser.take_body(b"ab") and parser.take_body(b"cd")
    assert not parser.take_body(b"ef")  # the last bytes end the response: feed them
    parser.feed(b"ef")
    assert parser.next_event() == Data(b"ef")
    assert parser.next_event() == End([], True)
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(parser.next_event(), Head)
    assert not parser.take_body(b"2\r\nhi\r\n")  # chunked: llhttp reads it


def test_chunked_response_with_trailers():
    wire = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nChecksum: abc\r\n\r\n")
    events, error = parse([wire[i:i + 3] for i in range(0, len(wire), 3)])
    assert error is None
    assert events[1:] == [Data(b"hello world"), End([("Checksum", "abc")], True)]


def test_close_delimited_body_ends_at_eof():
    wire = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    events, error = parse([wire], eof=False)
    assert events[1:] == [Data(b"until the end")] and error is None
    events, error = parse([wire], eof=True)
    assert events[1:] == [Data(b"until the end"), End([], False)] and error is None


def test_eof_inside_a_framed_body_is_a_lost_connection():
    events, error = parse([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"], eof=True)
    assert isinstance(error, ConnectionLost)
    events, error = parse([b"HTTP/1.1 200 OK\r\nContent-Le"], eof=True)
    assert isinstance(error, ConnectionLost) and events == []
    assert parse([], eof=True) == ([], None)  # a clean close between responses


def test_head_204_and_304_have_no_body_whatever_their_headers_say():
    wire = (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
            b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"
            b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    for step in (1, 7, len(wire)):
        events, error = parse([wire[i:i + step] for i in range(0, len(wire), step)],
                              methods=("HEAD", "GET", "GET", "GET"))
        assert error is None
        statuses = [e.status for e in events if isinstance(e, Head)]
        assert statuses == [200, 204, 304, 200]
        assert [e for e in events if isinstance(e, Data)] == [Data(b"ok")]
        assert sum(isinstance(e, End) for e in events) == 4


def test_head_behind_other_responses_and_close_delimited_head():
    wire = (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"
            b"HTTP/1.1 200 OK\r\n\r\n"  # a HEAD answer without framing: still only a head
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz")
    events, error = parse([wire], methods=("GET", "HEAD", "HEAD", "GET"))
    assert error is None
    assert [e for e in events if isinstance(e, Data)] == [Data(b"abc"), Data(b"z")]
    assert [e.keep_alive for e in events if isinstance(e, End)] == [True, True, True, True]


def test_interim_responses_come_before_the_final_one():
    wire = (b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    events, error = parse([wire], methods=("POST",))
    assert error is None
    assert events == [Interim(100, "Continue", []),
                      Interim(103, "Early Hints", [("Link", "</style.css>; rel=preload")]),
                      Head(201, "Created", "1.1", [("Content-Length", "0")]), End([], True)]


def test_connection_close_ends_the_stream_and_later_bytes_are_ignored():
    wire = (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    events, error = parse([wire], methods=("GET", "GET"))
    assert error is None
    assert events[-1] == End([], False) and sum(isinstance(e, Head) for e in events) == 1


@pytest.mark.parametrize("wire", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",  # bare LF
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"HTTP/2 200\r\n\r\n",
])
def test_malformed_responses_raise_protocol_error(wire):
    events, error = parse([wire])
    assert isinstance(error, ProtocolError)


def test_header_limits():
    many = b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n"
    assert isinstance(parse([many])[1], ProtocolError)
    endless = [b"HTTP/1.1 200 OK\r\nX: "] + [b"a" * 8192] * 10  # a field line that never ends
    events, error = parse(endless)
    assert isinstance(error, ProtocolError) and "header section" in str(error)
    # Long bodies in chunked framing do not count against the head.
    body = b"".join(b"%x\r\n%s\r\n" % (40000, b"b" * 40000) for _ in range(4))
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"
    events, error = parse([wire[i:i + 40003] for i in range(0, len(wire), 40003)])
    assert error is None and len(events[1].data) == 160000


def test_a_response_nobody_asked_for_is_an_error():
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ProtocolError):
        parser.next_event()


# Property tests: arbitrary bytes, and arbitrary splits of valid responses.

@settings(max_examples=300, deadline=2000)
@given(st.lists(st.binary(max_size=300), max_size=8),
       st.lists(st.sampled_from(["GET", "HEAD", "POST"]), min_size=1, max_size=3),
       st.booleans())
def test_arbitrary_bytes_raise_only_client_errors(chunks, methods, eof):
    parse([b"HTTP/1.1 " + chunks[0] if chunks else b"", *chunks[1:]], methods, eof)
    parse(chunks, methods, eof)  # no exception but ProtocolError/ConnectionLost gets here


field_names = st.sampled_from(["X-A", "Content-Type", "ETag", "x-long-" + "n" * 40, "Vary"])
field_values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=30)


@st.composite
def responses(draw):
    """(method, wire bytes, expected events) of one valid response."""
    method = draw(st.sampled_from(["GET", "GET", "HEAD", "POST"]))
    status = draw(st.sampled_from([200, 201, 204, 304, 404, 500]))
    headers = draw(st.lists(st.tuples(field_names, field_values), max_size=5))
    body = draw(st.binary(max_size=200))
    framing = draw(st.sampled_from(["length", "chunked"]))
    interim = draw(st.booleans())
    bodiless = method == "HEAD" or status in (204, 304)
    fields = list(headers)
    wire = b""
    if interim:
        wire += b"HTTP/1.1 100 Continue\r\n\r\n"
    if framing == "length":
        fields.append(("Content-Length", str(len(body))))
    else:
        fields.append(("Transfer-Encoding", "chunked"))
    wire += b"HTTP/1.1 %d Reason\r\n" % status
    wire += b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in fields) + b"\r\n"
    sent = b"" if bodiless else body
    if framing == "chunked" and not bodiless:
        pieces = [sent[i:i + 50] for i in range(0, len(sent), 50)]
        wire += b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        wire += sent
    expected = [Interim(100, "Continue", [])] if interim else []
    expected.append(Head(status, "Reason", "1.1", fields))
    if sent:
        expected.append(Data(sent))
    expected.append(End([], True))
    return method, wire, expected


@settings(max_examples=200, deadline=2000)
@given(st.lists(responses(), min_size=1, max_size=4), st.lists(st.integers(0, 5000), max_size=12))
def test_any_split_of_valid_pipelined_responses_parses_the_same(exchanges, cuts):
    methods = [method for method, _, _ in exchanges]
    wire = b"".join(w for _, w, _ in exchanges)
    expected = [event for _, _, events in exchanges for event in events]
    for as_session in (False, True):
        events, error = parse(splits(wire, cuts), methods, as_session=as_session)
        assert error is None
        assert events == expected


# -- the event-stream parser --------------------------------------------------------------------

def stream_events(chunks, last_event_id=""):
    parser = EventParser(last_event_id)
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events, parser


def test_event_stream_fields_comments_and_multiline_data():
    wire = (b"\xef\xbb\xbf: a comment\n"
            b"retry: 1500\n"
            b"id: 7\nevent: update\ndata: first\ndata:second\ndata\n\n"
            b"data: no id change\n\n"
            b"id\ndata: id cleared\n\n"
            b"id: bad\0id\nretry: 12x\nunknown: field\ndata:  two spaces\n\n"
            b"event: only-a-type\n\n"
            b"data: pending at the end")
    events, parser = stream_events([wire])
    assert events == [
        Event("first\nsecond\n", "update", "7", 1500),
        Event("no id change", "message", "7"),
        Event("id cleared", "message", ""),
        Event(" two spaces", "message", ""),
    ]
    assert parser.retry == 1500 and parser.last_event_id == ""


def test_event_stream_line_endings_split_anywhere():
    wire = "data: a\r\ndata: b\rdata: c\n\rid: é\r\n\r\ndata: ünï\r\r".encode()
    expected = [Event("a\nb\nc", "message", ""), Event("ünï", "message", "é")]
    for cut in range(len(wire) + 1):
        assert stream_events([wire[:cut], wire[cut:]])[0] == expected
    assert stream_events([bytes([b]) for b in wire])[0] == expected


def test_event_stream_bom_only_at_the_start_and_bounded_lines():
    events, _ = stream_events([b"\xef\xbb", b"\xbfdata: x\n\n\xef\xbb\xbfdata: y\n\n"])
    assert events == [Event("x")]  # a later BOM is part of the field name: unknown, ignored
    with pytest.raises(ProtocolError):
        EventParser(max_event=100).feed(b"data: " + b"x" * 200)


@settings(max_examples=200, deadline=2000)
@given(st.lists(st.tuples(st.text(max_size=20), st.sampled_from(["", "tick"]),
                          st.text(st.characters(blacklist_categories=("Cs",),
                                                       blacklist_characters="\0\r\n"), max_size=5)),
                max_size=5),
       st.sampled_from(["\n", "\r", "\r\n"]), st.lists(st.integers(0, 500), max_size=6))
def test_event_stream_any_split_gives_the_same_events(items, eol, cuts):
    wire = ""
    for data, kind, ident in items:
        lines = [f"data: {line}" for line in data.replace("\r\n", "\n").replace("\r", "\n")
                 .split("\n")]
        lines += [f"event: {kind}"] if kind else []
        lines += [f"id: {ident}"]
        wire += eol.join(lines) + eol + eol
    wire = wire.encode()
    whole, _ = stream_events([wire])
    assert len(whole) == len(items)
    assert stream_events(splits(wire, cuts))[0] == whole


# -- against our own server, in one simulated loop ----------------------------------------------

def test_keep_alive_reuse_and_pipelining_order_in_loop():
    with Loop(echo_app) as loop:
        first = loop.get("/first")
        assert first.status == 200 and first.json()["path"] == "/first"
        responses = [loop.request("GET", f"/item/{i}?n={i}") for i in range(20)]
        loop.run_until(lambda: all(r.done for r in responses))
        answers = [r.json() for r in responses]
        assert [a["path"] for a in answers] == [f"/item/{i}" for i in range(20)]
        assert [a["query"] for a in answers] == [f"n={i}" for i in range(20)]
        assert {a["port"] for a in answers} == {first.json()["port"]}
        assert loop.client.connections_opened == 1


def test_post_json_head_and_bodies_in_loop():
    with Loop(echo_app) as loop:
        post = loop.fetch("POST", "/things", json={"name": "x"})
        assert post.json()["body"] == '{"name":"x"}' and post.json()["type"] == "application/json"
        put = loop.fetch("PUT", "/things/1", body="text body",
                         headers={"Content-Type": "text/plain"})
        assert put.json()["body"] == "text body"
        head = loop.fetch("HEAD", "/things")
        assert head.status == 200 and head.body == b"" and head.header("content-length")
        after = loop.get("/after")
        assert after.json()["path"] == "/after"
        assert loop.client.connections_opened == 1


def test_expect_100_continue_in_loop():
    with Loop(echo_app) as loop:
        response = loop.fetch("POST", "/upload", body=b"x" * 5000,
                              headers={"Expect": "100-continue"})
        assert response.status == 200 and response.json()["body"] == "x" * 5000
        assert loop.tyme < 0.5  # the body went at the 100, not after the wait for it


def redirect_app():
    app = falcon.App()

    class Jump:
        def on_get(self, req, resp, code):
            raise falcon.HTTPStatus(f"{code} Moved", headers={"Location": "/target?from=" + code})

        on_post = on_get

    class Target:
        def on_get(self, req, resp):
            resp.media = {"method": req.method, "query": req.query_string}

        def on_post(self, req, resp):
            resp.media = {"method": req.method, "body": req.bounded_stream.read().decode()}

    class Loop_:
        def on_get(self, req, resp):
            raise falcon.HTTPStatus("302 Found", headers={"Location": "/loop"})

    class Away:
        def on_get(self, req, resp):
            raise falcon.HTTPStatus("302 Found", headers={"Location": "http://127.0.0.2:9/x"})

    app.add_route("/jump/{code}", Jump())
    app.add_route("/target", Target())
    app.add_route("/loop", Loop_())
    app.add_route("/away", Away())
    return app


def test_redirects_are_opt_in_bounded_and_same_origin():
    app = redirect_app()
    with Loop(app) as loop:
        response = loop.get("/jump/302")
        assert response.status == 302 and response.error is None  # not followed by default
    with Loop(app, client_settings={"max_redirects": 3}) as loop:
        response = loop.get("/jump/301")
        assert response.status == 200 and response.json() == {"method": "GET", "query": "from=301"}
        assert [r.status for r in response.history] == [301]
        assert response.url.endswith("/target?from=301")
        see_other = loop.fetch("POST", "/jump/303", body=b"data")
        assert see_other.json() == {"method": "GET", "query": "from=303"}
        kept = loop.fetch("POST", "/jump/307", body=b"data")
        assert kept.json() == {"method": "POST", "body": "data"}
        endless = loop.get("/loop")
        assert isinstance(endless.error, TooManyRedirects) and endless.status == 302
        assert len(endless.history) == 3
        away = loop.get("/away")
        assert away.status == 302 and away.error is None and away.history == []
        assert loop.client.connections_opened == 1


def test_response_timeout_on_the_loops_clock_then_a_fresh_connection():
    def handler(request):
        if request.path == "/never":
            return None  # "not yet", forever
        return CustomResponder(data={"path": request.path})

    with Loop(cls=BareServer, handler=handler, client_settings={"timeout": 1.0}) as loop:
        stuck = loop.fetch("GET", "/never")
        assert isinstance(stuck.error, ClientTimeout) and stuck.status is None
        assert 1.0 <= loop.tyme <= 1.0 + 3 * loop.doist.tock
        fine = loop.get("/fine")
        assert fine.json() == {"path": "/fine"}
        assert loop.client.connections_opened == 2  # the stuck one was closed


def test_requests_behind_a_timed_out_one_are_retried():
    def handler(request):
        if request.path == "/never":
            return None
        return CustomResponder(data={"path": request.path})

    with Loop(cls=BareServer, handler=handler) as loop:
        loop.get("/warm")  # a persistent connection: the next ones are pipelined
        stuck = loop.request("GET", "/never", timeout=0.5)
        behind = [loop.request("GET", f"/behind/{i}") for i in range(3)]
        loop.run_until(lambda: all(r.done for r in [stuck, *behind]))
        assert isinstance(stuck.error, ClientTimeout)
        assert [r.json()["path"] for r in behind] == [f"/behind/{i}" for i in range(3)]


def test_body_larger_than_max_body_fails_and_the_client_goes_on():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"x" * 5000] * int(environ["QUERY_STRING"] or 1)

    with Loop(app, client_settings={"max_body": 10000}) as loop:
        big = loop.get("/?3")
        assert isinstance(big.error, ProtocolError) and "max_body" in str(big.error)
        small = loop.get("/?1")
        assert small.error is None and len(small.body) == 5000


def test_server_sent_events_from_a_broadcaster_in_loop():
    events = Broadcaster(heartbeat=None)
    with Loop(events.wsgi_app) as loop:
        stream = loop.client.events("/events")
        loop.run_until(lambda: stream.connected)
        events.publish("one")
        events.publish("two\nlines", event="multi")
        loop.run_until(lambda: len(stream.events) == 2)
        assert list(stream.events) == [Event("one", "message", "1"),
                                       Event("two\nlines", "multi", "2")]
        assert stream.last_event_id == "2"
        # Meanwhile ordinary requests go on another connection.
        events.close()  # streams end; reconnecting gets 204, which ends the EventStream
        loop.run_until(lambda: stream.closed)
        assert stream.error is None and stream.reconnects == 1


def test_event_stream_reconnects_with_last_event_id():
    seen = []

    def app(environ, start_response):
        seen.append(environ.get("HTTP_LAST_EVENT_ID"))
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        number = len(seen)
        return [f"retry: 250\nid: {number}\ndata: hello {number}\n\n".encode()]

    with Loop(app) as loop:
        stream = loop.client.events("/feed")
        loop.run_until(lambda: len(stream.events) >= 3)
        assert [e.data for e in list(stream.events)[:3]] == ["hello 1", "hello 2", "hello 3"]
        assert seen[:3] == [None, "1", "2"]
        assert stream.retry == 250 and loop.tyme >= 0.5  # two waits of 250 ms
        stream.close()


def test_event_stream_refuses_what_is_not_a_stream():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"data: no\n\n"]

    with Loop(app) as loop:
        stream = loop.client.events("/")
        loop.run_until(lambda: stream.closed)
        assert isinstance(stream.error, ProtocolError) and not stream.events


# -- against servers we did not write -----------------------------------------------------------

class StdlibHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{self.path} {self.client_address[1]}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if self.request_version == "HTTP/1.1" and self.protocol_version == "HTTP/1.1":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()  # HTTP/1.0: no length, the body ends when the connection closes
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class StdlibHandler11(StdlibHandler):
    protocol_version = "HTTP/1.1"


def test_stdlib_http10_close_delimited():
    with stdlib_server(StdlibHandler) as url:
        client = Client(url)
        responses = [client.get(f"/n/{i}") for i in range(4)]
        client.run_until(lambda: all(r.done for r in responses), timeout=5)
        assert [r.error for r in responses] == [None] * 4
        assert [r.version for r in responses] == ["1.0"] * 4
        assert [r.text.split()[0] for r in responses] == [f"/n/{i}" for i in range(4)]
        assert client.connections_opened == 4  # HTTP/1.0: one request per connection
        client.close()


def test_stdlib_http11_keep_alive_and_pipelining():
    with stdlib_server(StdlibHandler11) as url:
        client = Client(url)
        responses = [client.get(f"/n/{i}") for i in range(6)]
        client.run_until(lambda: all(r.done for r in responses), timeout=5)
        texts = [r.text.split() for r in responses]
        assert [t[0] for t in texts] == [f"/n/{i}" for i in range(6)]
        assert len({t[1] for t in texts}) == 1 and client.connections_opened == 1
        client.close()


def test_waitress_chunked_streaming_and_keep_alive():
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return iter([b"one ", b"two ", b"", b"three"])  # no length: waitress chunks it
        return echo_app(environ, start_response)

    with waitress_server(app) as url:
        client = Client(url)
        streamed = client.get("/stream")
        client.run_until(streamed, timeout=5)
        assert streamed.body == b"one two three"
        assert streamed.header("transfer-encoding") == "chunked"
        before = client.connections_opened
        echoes = [client.post("/echo", body=f"b{i}") for i in range(3)]
        client.run_until(lambda: all(r.done for r in echoes), timeout=5)
        assert [r.json()["body"] for r in echoes] == ["b0", "b1", "b2"]
        assert len({r.json()["port"] for r in echoes}) == 1
        assert client.connections_opened == before + 1
        client.close()


def test_waitress_serves_a_broadcaster_stream():
    events = Broadcaster(heartbeat=None)

    def threaded(environ, start_response):
        # A threaded server may block its worker: wait a little instead of spinning on b"".
        for chunk in events.wsgi_app(environ, start_response):
            if chunk:
                yield chunk
            else:
                time.sleep(0.005)

    with waitress_server(threaded) as url:
        client = Client(url)
        stream = client.events("/events", retry=50)
        client.run_until(lambda: stream.connected, timeout=5)
        events.publish("hello", event="greeting")
        events.publish("world")
        client.run_until(lambda: len(stream.events) == 2, timeout=5)
        assert list(stream.events) == [Event("hello", "greeting", "1"),
                                       Event("world", "message", "2")]
        events.close()
        client.run_until(lambda: stream.closed, timeout=5)
        client.close()


def test_our_server_in_a_thread_with_tls(certificate):
    with serve_in_thread(echo_app, ssl_context=server_context(certificate)) as server:
        assert server.url.startswith("https://")
        strict = Client(server.url)
        refused = strict.get("/")
        strict.run_until(refused, timeout=5)
        assert isinstance(refused.error, ConnectError)
        assert isinstance(refused.error.__cause__, ssl.SSLCertVerificationError)
        strict.close()

        trusting = Client(server.url, tls_context=ssl.create_default_context(cafile=certificate[0]))
        responses = [trusting.get(f"/secure/{i}") for i in range(3)]
        trusting.run_until(lambda: all(r.done for r in responses), timeout=5)
        assert [r.json()["path"] for r in responses] == [f"/secure/{i}" for i in range(3)]
        assert trusting.connections_opened == 1
        trusting.close()

        lax = Client(server.url, verify=False)
        response = lax.get("/lax")
        lax.run_until(response, timeout=5)
        assert response.status == 200
        lax.close()


def test_server_name_is_what_the_certificate_is_checked_against(certificate):
    """Connecting to an address while checking the certificate for a name (hio's certedhost)."""
    trusted = ssl.create_default_context(cafile=certificate[0])
    with serve_in_thread(echo_app, ssl_context=server_context(certificate)) as server:
        named = Client(server.url, tls_context=trusted, server_name="localhost")
        response = named.get("/named")
        named.run_until(response, timeout=5)
        assert response.status == 200
        named.close()
        wrong = Client(server.url, tls_context=trusted, server_name="elsewhere.example")
        refused = wrong.get("/named")
        wrong.run_until(refused, timeout=5)
        assert isinstance(refused.error, ConnectError)
        assert isinstance(refused.error.__cause__, ssl.SSLCertVerificationError)
        wrong.close()


# -- failures: each lands on its response, the loop runs on ----------------------------------------

def test_refused_connection(refusing_port):
    client = Client(f"http://127.0.0.1:{refusing_port}")
    responses = [client.get("/"), client.post("/", body=b"x")]
    client.run_until(lambda: all(r.done for r in responses), timeout=5)
    for response in responses:
        assert isinstance(response.error, ConnectError)
        assert isinstance(response.error.__cause__, ConnectionRefusedError)
        with pytest.raises(ConnectError):
            response.raise_for_error()
    client.close()


def test_connect_timeout_when_the_tls_handshake_never_answers():
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody speaks TLS
    try:
        client = Client(f"https://127.0.0.1:{silent.getsockname()[1]}", timeout=(0.5, 5.0))
        doist = Doist(tock=0.03125, real=False, doers=[ClientDoer(client)])
        doist.enter()
        response = client.get("/")
        ticks = 0
        while not response.done and ticks < 100:
            doist.recur()
            ticks += 1
        doist.exit()
        assert isinstance(response.error, ConnectTimeout)
        assert isinstance(response.error, ClientTimeout)
        assert isinstance(response.error, ConnectError)
        assert 0.5 <= doist.tyme <= 0.6  # simulated time: no waiting at all
    finally:
        silent.close()


def test_reset_in_the_middle_of_a_response():
    def handle(conn, index):
        read_requests(conn, 1)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        time.sleep(0.2)  # let the client read the start before the reset
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    with raw_server(handle) as port:
        client = Client(f"http://127.0.0.1:{port}")
        response = client.get("/")
        client.run_until(response, timeout=5)
        assert isinstance(response.error, ConnectionLost)
        assert response.status == 200 and response.body == b"partial"
        client.close()


def test_truncated_body_and_malformed_responses():
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nonly this",
               b"this is not HTTP at all\r\n\r\n",
               b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc"]

    def handle(conn, index):
        read_requests(conn, 1)
        conn.sendall(answers[index])
        conn.close()

    with raw_server(handle) as port:
        client = Client(f"http://127.0.0.1:{port}")
        truncated = client.post("/", body=b"1")
        client.run_until(truncated, timeout=5)
        garbage = client.post("/", body=b"2")
        client.run_until(garbage, timeout=5)
        duplicate = client.post("/", body=b"3")
        client.run_until(duplicate, timeout=5)
        assert isinstance(truncated.error, ConnectionLost) and truncated.body == b"only this"
        assert isinstance(garbage.error, ProtocolError)
        assert isinstance(duplicate.error, ProtocolError)
        client.close()


def test_closed_before_answering_retries_get_but_not_post():
    def handle(conn, index):
        read_requests(conn, 1)
        if index % 2 == 0:
            conn.close()  # read it, then hang up without a word
        else:
            conn.sendall(reply(b"second try", b"Connection: close\r\n"))
            conn.close()

    with raw_server(handle) as port:
        client = Client(f"http://127.0.0.1:{port}")
        get = client.get("/")
        client.run_until(get, timeout=5)
        assert get.error is None and get.body == b"second try"
        post = client.post("/", body=b"charge the card")
        client.run_until(post, timeout=5)
        assert isinstance(post.error, ConnectionLost) and "not idempotent" in str(post.error)
        assert client.connections_opened == 3
        client.close()


def test_requests_are_pipelined_once_the_connection_is_persistent():
    def handle(conn, index):
        heads, rest = read_requests(conn, 1)
        conn.sendall(reply(b"first"))
        heads, rest = read_requests(conn, 3, rest)  # answers only once all three are in
        paths = [head.split(b" ")[1] for head in heads]
        conn.sendall(b"".join(reply(path) for path in paths))
        read_requests(conn, 1, rest)

    with raw_server(handle) as port:
        client = Client(f"http://127.0.0.1:{port}")
        responses = [client.get(path) for path in ("/0", "/1", "/2", "/3")]
        client.run_until(lambda: all(r.done for r in responses), timeout=5)
        assert [r.body for r in responses] == [b"first", b"/1", b"/2", b"/3"]
        client.close()


def test_errors_never_reach_the_doist(refusing_port):
    class Boom(Doer):
        """Requests that all fail, each turn, while the loop runs on."""

        def __init__(self, client, **kwa):
            super().__init__(**kwa)
            self.client, self.responses = client, []

        def recur(self, tyme):
            self.responses.append(self.client.get("/"))
            return False

    client = Client(f"http://127.0.0.1:{refusing_port}")
    boom = Boom(client)
    client_doer = ClientDoer(client)
    doist = Doist(tock=0.03125, real=False, limit=0.5, doers=[client_doer, boom])
    doist.do()
    refused = [r for r in boom.responses if isinstance(r.error, ConnectError)]
    assert len(refused) >= 10
    assert all(r.done for r in boom.responses)  # the rest failed when the client closed
    assert client_doer.done is False  # it ran until the limit, never raised


def test_client_doer_under_hio_doist():
    hio_doing = pytest.importorskip("hio.base.doing")

    with serve_in_thread(echo_app) as server:
        client = Client(server.url)
        response = client.get("/from-hio")

        class Until(ClientDoer):
            def recur(self, tyme):
                super().recur(tyme)
                return response.done

        hio_doing.Doist(tock=0.01, real=True, limit=5.0, doers=[Until(client)]).do()
        assert response.json()["path"] == "/from-hio"


def test_a_host_name_is_resolved_off_the_loop():
    with serve_in_thread(echo_app) as server:
        client = Client(f"http://localhost:{server.address[1]}")  # may try ::1 first: refused
        response = client.get("/named")
        client.run_until(response, timeout=5)
        assert response.json()["path"] == "/named"
        client.close()


def test_invalid_requests_raise_at_once():
    client = Client("http://127.0.0.1:1")
    with pytest.raises(ValueError):
        client.get("/", headers={"X-Bad": "a\r\nInjected: 1"})
    with pytest.raises(ValueError):
        client.get("/ spaces")
    with pytest.raises(ValueError):
        client.request("GE T", "/")
    with pytest.raises(ValueError):
        client.post("/", headers={"Content-Length": "5"}, body=b"x")
    with pytest.raises(ValueError):
        client.get("http://elsewhere.example/")
    with pytest.raises(ValueError):
        Client("ftp://127.0.0.1/")
    client.close()


def test_header_values_str_bytes_like_or_int_go_out_as_those_bytes():
    """CESR-style headers: an int Content-Length matching the body, a bytearray attachment
    sent byte for byte (never as the text "bytearray(b'...')"), memoryview and str."""
    heads = []

    def handle(conn, index):
        head, rest = read_requests(conn, 1)
        while len(rest) < 5:
            rest += conn.recv(65536)
        heads.append(head[0] + b"\r\n\r\n" + rest)
        conn.sendall(reply(b"ok"))

    with raw_server(handle) as port:
        client = Client(f"http://127.0.0.1:{port}")
        response = client.post("/", body=bytearray(b"{\"a\"}"), headers={
            "Content-Type": b"application/cesr+json", "Content-Length": 5,
            "CESR-ATTACHMENT": bytearray(b"-AAB\xe9AAA"), "X-View": memoryview(b"v"),
            "X-Text": "t"})
        client.run_until(response, timeout=5)
        assert response.ok
        client.close()
    wire = heads[0]
    assert b"\r\nContent-Type: application/cesr+json\r\n" in wire
    assert b"\r\nCESR-ATTACHMENT: -AAB\xe9AAA\r\n" in wire
    assert b"\r\nX-View: v\r\nX-Text: t\r\n" in wire
    assert wire.count(b"Content-Length") == 1 and b"\r\nContent-Length: 5\r\n" in wire
    assert wire.endswith(b'\r\n\r\n{"a"}') and b"bytearray" not in wire


@pytest.mark.parametrize("value", [None, 1.5, True, ["a"], object()])
def test_header_value_of_another_type_is_a_type_error_from_request(value):
    client = Client("http://127.0.0.1:1")
    with pytest.raises(TypeError, match="value must be str, bytes-like or int"):
        client.get("/", headers={"X-Odd": value})
    with pytest.raises(TypeError, match="value must be str, bytes-like or int"):
        Client("http://127.0.0.1:1", headers=[("X-Odd", value)])
    assert not client.queue
    client.close()


# -- the example script -------------------------------------------------------------------------

def test_client_daemon_example_polls_its_own_server():
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "client_daemon_example.py"), "--limit", "1.2",
         "--interval", "0.25"], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("serving on http://127.0.0.1:")
    polls = [line for line in lines if "GET /status -> 200" in line]
    assert len(polls) >= 4
    assert "{'hits': 1}" in polls[0] and "{'hits': 4}" in polls[3]
    assert lines[-1] == "done; the client opened 1 connection(s)"


def test_a_client_moves_to_a_doers_clock_with_its_connection_up():
    """Its connection is ready (no deadline of its own) and its next request still has one."""
    with serve_in_thread(echo_app) as server:
        client = Client(server.url, timeout=2.0)
        first = client.get("/first")
        client.run_until(first, timeout=5)
        doist = Doist(tock=0.01, real=True, limit=5.0, doers=[ClientDoer(client)])
        doist.enter()  # the ClientDoer sets the client on the Doist's tyme
        second = client.get("/second")
        while not second.done and doist.tyme < 5.0:
            doist.recur()
        doist.exit()
        assert second.json()["path"] == "/second"
        assert client.connections_opened == 1  # the same keep-alive connection
        client.close()
