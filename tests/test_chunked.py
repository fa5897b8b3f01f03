"""Chunked request bodies over real sockets: whitespace where RFC 9112 §7.1.1 allows it in chunk
extensions is accepted, every spelling the grammar does not allow gets 400 and a closed
connection (each is a request-smuggling vector between hops that read it differently), and
pipelining after a chunked body goes on."""

import json
import socket
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import raw_connect, read_until_closed

HEAD = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def echo_app(environ, start_response):
    """Answers with the body it read and the trailer fields, as JSON."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    answer = json.dumps({"path": environ["PATH_INFO"], "body": body.decode("latin-1"),
                         "trailers": environ["hio_http.trailers"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(answer)))])
    return [answer]


def read_responses(sock, count, timeout=5.0):
    """`count` whole responses (Content-Length framed) as (status line, JSON or raw body)."""
    sock.settimeout(timeout)
    data, responses = b"", []
    deadline = time.monotonic() + timeout
    while len(responses) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1")
            length = next(int(line.split(":", 1)[1]) for line in head.split("\r\n")
                          if line.lower().startswith("content-length:"))
            if len(data) >= head_end + 4 + length:
                body = data[head_end + 4:head_end + 4 + length]
                responses.append((head.split("\r\n")[0], body))
                data = data[head_end + 4 + length:]
                continue
        assert time.monotonic() < deadline, f"only {len(responses)} of {count} responses"
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(responses)} of {count} responses"
        data += chunk
    return responses


@pytest.fixture
def server(serve):
    return serve(echo_app)


# ---- whitespace the grammar allows ----

BWS_BODIES = [
    # (id, chunked body, body the app must see, trailers)
    ("spaces around ; and =", b'6 ; a ; b="q;x \\" y"\r\nhello \r\n5;c = d\r\nworld\r\n0\r\n\r\n',
     "hello world", []),
    ("tabs", b"3\t;\tname\t=\tvalue\r\nabc\r\n0\t;\tlast\r\n\r\n", "abc", []),
    ("space before ; only", b"4 ;x\r\ndata\r\n0\r\n\r\n", "data", []),
    ("quoted value with obs-text and escapes",
     b'2;q="\xe9\\\\ \\"\t"\r\nok\r\n0\r\n\r\n', "ok", []),
    ("many extensions", b"1" + b" ; e = v" * 100 + b"\r\nz\r\n0\r\n\r\n", "z", []),
    ("last chunk with extensions and trailers",
     b"2\r\nhi\r\n000 ; done = \"yes\"\r\nX-Sum:  42 \r\nX-Empty:\r\n\r\n", "hi",
     [["X-Sum", "42"], ["X-Empty", ""]]),
    ("upper-case and zero-padded sizes", b"00A\r\n0123456789\r\n0\r\n\r\n", "0123456789", []),
]


@pytest.mark.parametrize("chunked, body, trailers", [case[1:] for case in BWS_BODIES],
                         ids=[case[0] for case in BWS_BODIES])
def test_whitespace_in_chunk_extensions_is_accepted(server, chunked, body, trailers):
    sock = raw_connect(server)
    sock.sendall(HEAD + chunked)
    [(status, answer)] = read_responses(sock, 1)
    assert status == "HTTP/1.1 200 OK"
    assert json.loads(answer) == {"path": "/up", "body": body, "trailers": trailers}


def test_a_pipelined_request_after_a_chunked_one_with_extensions_is_served(server):
    sock = raw_connect(server)
    sock.sendall(HEAD + b"5 ; a = b\r\nfirst\r\n0 ; z\r\nT: v\r\n\r\n"
                 + b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
                 + HEAD.replace(b"/up", b"/third") + b"1 ;x\r\n3\r\n0\r\n\r\n"
                 + b"POST /fourth HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nlast")
    answers = [json.loads(body) for _, body in read_responses(sock, 4)]
    assert answers == [
        {"path": "/up", "body": "first", "trailers": [["T", "v"]]},
        {"path": "/second", "body": "", "trailers": []},
        {"path": "/third", "body": "3", "trailers": []},
        {"path": "/fourth", "body": "last", "trailers": []},
    ]


def test_expect_continue_then_a_chunked_body_with_extensions(server):
    sock = raw_connect(server)
    sock.sendall(HEAD.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
    sock.settimeout(5)
    assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    sock.sendall(b"4 ; a=1\r\nbody\r\n0\r\n\r\n")
    [(status, answer)] = read_responses(sock, 1)
    assert json.loads(answer)["body"] == "body"


# ---- what the grammar does not allow: 400, Connection: close, closed ----

SMUGGLING = [
    ("bare LF after size", b"5\nhello\r\n0\r\n\r\n"),
    ("bare CR after size", b"5\rhello\r\n0\r\n\r\n"),
    ("bare CR in extension", b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
    ("bare LF in extension", b"5;a\nb\r\nhello\r\n0\r\n\r\n"),
    ("bare LF after data", b"5\r\nhello\n0\r\n\r\n"),
    ("data longer than its size", b"5\r\nhello!\r\n0\r\n\r\n"),
    ("plus sign", b"+5\r\nhello\r\n0\r\n\r\n"),
    ("minus sign", b"-5\r\nhello\r\n0\r\n\r\n"),
    ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
    ("underscore in size", b"0_5\r\nhello\r\n0\r\n\r\n"),
    ("non-hex size", b"5g\r\nhello\r\n0\r\n\r\n"),
    ("empty size", b"\r\nhello\r\n0\r\n\r\n"),
    ("space before size", b" 5\r\nhello\r\n0\r\n\r\n"),
    ("space after size without extension", b"5 \r\nhello\r\n0\r\n\r\n"),
    ("space inside size", b"5 5\r\n" + b"x" * 0x55 + b"\r\n0\r\n\r\n"),
    ("unterminated quoted-string", b'5;a="hello\r\nhello\r\n0\r\n\r\n'),
    ("quoted-string as name", b'5;"a"\r\nhello\r\n0\r\n\r\n'),
    ("empty extension name", b"5;\r\nhello\r\n0\r\n\r\n"),
    ("empty extension value", b"5;a=\r\nhello\r\n0\r\n\r\n"),
    ("control byte in extension", b"5;a=\x01\r\nhello\r\n0\r\n\r\n"),
    ("NUL in quoted extension", b'5;a="\x00"\r\nhello\r\n0\r\n\r\n'),
    ("DEL in extension", b"5;a\x7f\r\nhello\r\n0\r\n\r\n"),
    ("whitespace after extension", b"5;a=b \r\nhello\r\n0\r\n\r\n"),
    ("over-long chunk line", b"5;a=" + b"v" * 9000 + b"\r\nhello\r\n0\r\n\r\n"),
    ("trailer without colon", b"0\r\nX-Sum 42\r\n\r\n"),
    ("obs-fold in trailer", b"0\r\nX-Sum: 4\r\n 2\r\n\r\n"),
    ("space before colon in trailer", b"0\r\nX-Sum : 42\r\n\r\n"),
    ("Content-Length trailer", b"0\r\nContent-Length: 5\r\n\r\nhello"),
    ("Transfer-Encoding trailer", b"0\r\nTransfer-Encoding: chunked\r\n\r\n"),
]


@pytest.mark.parametrize("chunked", [case[1] for case in SMUGGLING],
                         ids=[case[0] for case in SMUGGLING])
def test_chunked_framing_outside_the_grammar_gets_400_and_close(server, chunked):
    sock = raw_connect(server)
    # A request that would be served if the bad one were read as anything but an error.
    sock.sendall(HEAD + chunked + b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
    response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 400 "), response[:200]
    head, _, _ = response.partition(b"\r\n\r\n")
    assert b"\r\nConnection: close" in head
    assert b"/smuggled" not in response and response.count(b"HTTP/1.1 ") == 1
    assert requests.get(server.url, timeout=5).status_code == 200  # the rest still served


@pytest.mark.parametrize("size", [b"3e9 ; big", b"1" + b"0" * 20, b"f" * 64],
                         ids=["just past", "past 64 bits", "64 digits"])
def test_chunk_size_past_max_body_gets_413_before_its_data(serve, size):
    server = serve(echo_app, max_body=1000)  # 0x3e9 is 1001
    sock = raw_connect(server)
    sock.sendall(HEAD + size + b"\r\n")  # no data follows: the size alone is refused
    response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 413 "), response[:200]
    assert b"\r\nConnection: close" in response.partition(b"\r\n\r\n")[0]


# ---- any chunking and spacing of a body gives that body ----

BWS = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t"])
TOKEN = st.text("abcxyzABC019!#$%&'*+-.^_`|~", min_size=1, max_size=6).map(str.encode)
QUOTED = st.lists(st.sampled_from([b"a", b" ", b"\t", b";", b"=", b"\\\"", b"\\\\", b"\xe9"]),
                  max_size=6).map(lambda parts: b'"' + b"".join(parts) + b'"')


@st.composite
def extensions(draw):
    """chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ), spaced at random."""
    out = b""
    for _ in range(draw(st.integers(0, 3))):
        out += draw(BWS) + b";" + draw(BWS) + draw(TOKEN)
        if draw(st.booleans()):
            out += draw(BWS) + b"=" + draw(BWS) + draw(st.one_of(TOKEN, QUOTED))
    return out


@st.composite
def chunked(draw, body):
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=6)))
    out = b""
    for start, end in zip([0] + cuts, cuts + [len(body)]):
        if end > start:
            size = draw(st.sampled_from([b"%x", b"%X", b"00%x"])) % (end - start)
            out += size + draw(extensions()) + b"\r\n" + body[start:end] + b"\r\n"
    return out + b"0" + draw(extensions()) + b"\r\n\r\n"


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=300), st.data())
def test_any_chunking_and_spacing_of_a_body_reaches_the_app_as_that_body(server, body, data):
    stream = HEAD + data.draw(chunked(body), label="chunked body")
    stream += b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    cuts = sorted(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=5), label="cuts"))
    sock = raw_connect(server)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for start, end in zip([0] + cuts, cuts + [len(stream)]):
            sock.sendall(stream[start:end])
        first, second = read_responses(sock, 2)
        assert json.loads(first[1])["body"] == body.decode("latin-1")
        assert json.loads(second[1])["path"] == "/next"
    finally:
        sock.close()


def test_large_chunks_are_parsed_in_the_pieces_they_arrive_in(serve, monkeypatch):
    """Chunk data is sure to be body: it goes to the parser as it arrives, not in the small
    slices that bound how many pipelined heads one read can queue."""
    from hio_http.requesting import Requestant

    feeds = []
    feed = Requestant.feed

    def counted_feed(self, data):
        feeds.append(len(data))
        return feed(self, data)

    def length_app(environ, start_response):
        size = len(environ["wsgi.input"].read())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(size).encode()]

    monkeypatch.setattr(Requestant, "feed", counted_feed)
    server = serve(length_app, validate=False)
    chunk = b"y" * (1 << 20)
    body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(4)) + b"0\r\n\r\n"
    with raw_connect(server) as sock:
        sock.sendall(HEAD + body)
        ((status, answer),) = read_responses(sock, 1, timeout=20)
    assert status == "HTTP/1.1 200 OK" and answer == str(4 << 20).encode()
    assert len(feeds) < 200, f"{len(feeds)} feeds for 4 MiB"  # 4 KiB slices: over 1,000
