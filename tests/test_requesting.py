"""Behaviour of `Requestant`: valid requests, pipelining, splitting, limits, hostile bytes."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings, strategies as st

from hio_http.requesting import Limits, Request, RequestError, Requestant

GET = b"GET /a%20b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"
POST = b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world"
CHUNKED = (b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nChecksum: abc\r\nX-T:  v \r\n\r\n")


def feed_all(data: bytes, limits: Limits | None = None, piece: int = 0) -> list[Request]:
    """Feed `data` whole (piece=0) or in `piece`-byte slices; return completed requests."""
    requestant = Requestant(limits)
    if piece:
        for start in range(0, len(data), piece):
            requestant.feed(data[start:start + piece])
    else:
        requestant.feed(data)
    return list(requestant.requests)


def error_of(data: bytes, limits: Limits | None = None, piece: int = 0) -> RequestError:
    with pytest.raises(RequestError) as caught:
        feed_all(data, limits, piece)
    return caught.value


def summary(request: Request) -> tuple:
    """Everything public about a request, body bytes included, for comparisons."""
    return (request.method, request.target, request.path, request.query, request.version,
            request.headers, request.trailers, request.body.read(), request.body_size,
            request.content_length, request.chunked, request.keep_alive,
            request.expect_continue, request.upgrade, request.complete)


# ---- valid requests ----

def test_simple_get():
    [request] = feed_all(GET)
    assert (request.method, request.target, request.path, request.query) == (
        "GET", "/a%20b?x=1&y=2", "/a%20b", "x=1&y=2")
    assert request.version == "1.1"
    assert request.headers == [("Host", "example.com"), ("Accept", "*/*")]
    assert request.header("host") == "example.com"
    assert request.header("X-Missing") is None
    assert request.header("X-Missing", "d") == "d"
    assert request.body.read() == b"" and request.body_size == 0
    assert request.content_length is None and not request.chunked
    assert request.keep_alive and request.complete
    assert not request.expect_continue and request.upgrade is None
    assert request.trailers == []


def test_post_with_content_length():
    [request] = feed_all(POST)
    assert request.method == "POST"
    assert request.content_length == 11 and request.body_size == 11
    assert isinstance(request.body, io.BytesIO)
    assert request.body.read() == b"hello world"


def test_header_values_stripped_names_as_sent_repeats_kept():
    data = (b"GET / HTTP/1.1\r\nHost: h\r\nX-Tag:  one \t\r\nx-tag:two\r\n"
            b"X-Empty:\r\nX-Latin: caf\xe9\r\n\r\n")
    [request] = feed_all(data)
    assert request.headers == [("Host", "h"), ("X-Tag", "one"), ("x-tag", "two"),
                               ("X-Empty", ""), ("X-Latin", "caf\u00e9")]
    assert request.header("X-TAG") == "one"


@pytest.mark.parametrize("target, path, query", [
    ("/", "/", ""),
    ("/p?", "/p", ""),
    ("/p?a=1?b", "/p", "a=1?b"),
    ("//double", "//double", ""),
    ("http://example.com/p/q?x=1", "/p/q", "x=1"),
    ("http://example.com", "/", ""),
    ("http://example.com?x", "/", "x"),
    ("http://user@example.com:8080/p", "/p", ""),
])
def test_target_forms(target, path, query):
    [request] = feed_all(b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % target.encode())
    assert (request.target, request.path, request.query) == (target, path, query)


def test_options_asterisk_form():
    [request] = feed_all(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (request.method, request.target, request.path, request.query) == (
        "OPTIONS", "*", "*", "")


def test_pipelined_requests_in_one_feed():
    requests = feed_all(GET + POST + CHUNKED + GET)
    assert [r.method for r in requests] == ["GET", "POST", "POST", "GET"]
    assert [r.body.read() for r in requests] == [b"", b"hello world", b"hello world", b""]
    assert all(r.complete for r in requests)


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64])
def test_split_feeding_matches_whole(piece):
    stream = GET + POST + CHUNKED + b"\r\n" + GET
    whole = [summary(r) for r in feed_all(stream)]
    assert len(whole) == 4
    assert [summary(r) for r in feed_all(stream, piece=piece)] == whole


def test_chunked_body_and_trailers():
    [request] = feed_all(CHUNKED)
    assert request.chunked and request.content_length is None
    assert request.body.read() == b"hello world" and request.body_size == 11
    assert request.trailers == [("Checksum", "abc"), ("X-T", "v")]
    assert request.header("Checksum") is None  # trailers are not headers


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_large_body_spills_to_temporary_file(framing):
    payload = bytes(range(256)) * 40  # 10240 bytes
    if framing == "length":
        data = b"PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (
            len(payload), payload)
    else:
        pieces = [payload[i:i + 1000] for i in range(0, len(payload), 1000)]
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        data = b"PUT /f HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    [request] = feed_all(data, Limits(spill_threshold=1024), piece=999)
    assert not isinstance(request.body, io.BytesIO)
    assert request.body.read() == payload
    assert request.body_size == len(payload)


def test_small_length_body_kept_in_memory():
    [request] = feed_all(POST, Limits(spill_threshold=11))
    assert isinstance(request.body, io.BytesIO)


@pytest.mark.parametrize("version, connection, keep_alive", [
    ("1.1", None, True),
    ("1.1", "close", False),
    ("1.1", "Close", False),
    ("1.1", "keep-alive", True),
    ("1.0", None, False),
    ("1.0", "keep-alive", True),
    ("1.0", "Keep-Alive", True),
    ("1.0", "close", False),
])
def test_keep_alive_semantics(version, connection, keep_alive):
    head = b"GET / HTTP/%s\r\nHost: h\r\n" % version.encode()
    if connection:
        head += b"Connection: %s\r\n" % connection.encode()
    [request] = feed_all(head + b"\r\n")
    assert request.version == version
    assert request.keep_alive is keep_alive


def test_http10_without_host_is_accepted():
    [request] = feed_all(b"GET / HTTP/1.0\r\n\r\n")
    assert request.version == "1.0" and request.headers == []


def test_expect_continue_visible_before_body():
    requestant = Requestant()
    requestant.feed(b"PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n"
                    b"Content-Length: 5\r\n\r\n")
    assert not requestant.requests
    current = requestant.current
    assert current is not None and current.expect_continue and not current.complete
    assert current.content_length == 5 and current.method == "PUT"
    requestant.feed(b"ab")
    assert requestant.current is current and current.body_size == 2
    requestant.feed(b"cde")
    assert requestant.current is None
    [request] = requestant.requests
    assert request is current and request.complete and request.body.read() == b"abcde"


def test_current_is_none_while_head_incomplete():
    requestant = Requestant()
    requestant.feed(b"PUT /x HTTP/1.1\r\nHost: h\r\n")
    assert requestant.current is None and not requestant.requests


def test_expect_continue_ignored_on_http10():
    # RFC 9110 §10.1.1: a server must ignore 100-continue in an HTTP/1.0 request.
    [request] = feed_all(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")
    assert not request.expect_continue


def test_upgrade_keeps_leftover():
    requestant = Requestant()
    requestant.feed(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
                    b"Upgrade: websocket\r\n\r\n\x81\x05hel")
    [request] = requestant.requests
    assert request.upgrade == "websocket" and request.complete
    assert requestant.leftover == b"\x81\x05hel"
    requestant.feed(b"lo GET / HTTP/1.1\r\n\r\n")
    assert requestant.leftover == b"\x81\x05hello GET / HTTP/1.1\r\n\r\n"
    assert len(requestant.requests) == 1


def test_upgrade_header_without_connection_upgrade_is_ordinary():
    requests = feed_all(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n" + GET)
    assert [r.upgrade for r in requests] == [None, None]


def test_requests_after_connection_close_are_dropped():
    # RFC 9112 §9.6: no further requests are processed after a "close" request.
    requestant = Requestant()
    requestant.feed(b"GET /1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + GET)
    requestant.feed(GET + b"garbage\x00")
    assert [r.target for r in requestant.requests] == ["/1"]
    assert not requestant.requests[0].keep_alive


def test_leading_empty_lines_are_skipped():
    [request] = feed_all(b"\r\n\r\n" + GET)
    assert request.path == "/a%20b"


# ---- hostile input: each check with its status ----

LONG = Limits(max_body=10)

HOSTILE = [
    # id, bytes, limits, status
    ("target-too-long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", None, 414),
    ("header-too-large", b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
     None, 431),
    ("too-many-headers", b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 100 + b"\r\n",
     None, 431),
    ("trailers-too-large", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\nT: " + b"a" * 70000 + b"\r\n\r\n", None, 431),
    ("length-over-max", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", LONG, 413),
    ("chunked-over-max", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n", LONG, 413),
    ("length-overflow", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999"
     b"\r\n\r\n", None, 413),
    ("chunk-size-overflow", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"fffffffffffffffffffff\r\n", None, 413),
    # framing and smuggling
    ("cl-and-te", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", None, 400),
    ("te-and-cl", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
     b"Content-Length: 3\r\n\r\n0\r\n\r\n", None, 400),
    ("duplicate-cl-equal", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
     b"Content-Length: 3\r\n\r\nabc", None, 400),
    ("cl-list", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc", None, 400),
    ("cl-plus", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc", None, 400),
    ("cl-minus", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -3\r\n\r\nabc", None, 400),
    ("cl-hex", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x3\r\n\r\nabc", None, 400),
    ("cl-inner-space", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\nabc", None, 400),
    ("cl-empty", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", None, 400),
    ("te-on-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", None, 400),
    ("te-gzip-chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
     b"0\r\n\r\n", None, 501),
    ("te-identity", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n",
     None, 501),
    ("te-chunked-twice", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n"
     b"\r\n0\r\n\r\n", None, 501),
    ("te-two-lines", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", None, 501),
    ("te-gzip-line-then-chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", None, 501),
    ("te-chunked-gzip", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
     None, 501),
    ("chunk-size-garbage", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"zz\r\n", None, 400),
    ("chunk-size-negative", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"-5\r\nhello\r\n0\r\n\r\n", None, 400),
    ("chunk-data-overrun", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhelloX\r\n0\r\n\r\n", None, 400),
    ("chunk-bare-lf", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\nhello\n0\n\n", None, 400),
    # line endings and field syntax
    ("bare-lf-request-line", b"GET / HTTP/1.1\nHost: h\n\n", None, 400),
    ("bare-lf-header", b"GET / HTTP/1.1\r\nHost: h\n\r\n", None, 400),
    ("bare-lf-end", b"GET / HTTP/1.1\r\nHost: h\r\n\n", None, 400),
    ("bare-cr-in-value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", None, 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  folded\r\n\r\n", None, 400),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tfolded\r\n\r\n", None, 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", None, 400),
    ("ctl-in-value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n", None, 400),
    ("del-in-value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n", None, 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", None, 400),
    ("tab-before-colon", b"GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", None, 400),
    ("empty-field-name", b"GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", None, 400),
    ("no-colon", b"GET / HTTP/1.1\r\nHost h\r\n\r\n", None, 400),
    ("space-before-first-field", b"GET / HTTP/1.1\r\n Host: h\r\n\r\n", None, 400),
    ("nul-in-name", b"GET / HTTP/1.1\r\nHo\x00st: h\r\n\r\n", None, 400),
    ("two-content-types", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: a/b\r\n"
     b"Content-Type: text/plain\r\nContent-Length: 0\r\n\r\n", None, 400),
    ("expect-other", b"GET / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n", None, 417),
    ("expect-continue-and-other", b"GET / HTTP/1.1\r\nHost: h\r\n"
     b"Expect: 100-continue, magic\r\n\r\n", None, 417),
    # Host
    ("missing-host", b"GET / HTTP/1.1\r\n\r\n", None, 400),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", None, 400),
    ("two-hosts-http10", b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", None, 400),
    # versions
    ("http-2.0", b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", None, 505),
    ("http-3.0", b"GET / HTTP/3.0\r\nHost: h\r\n\r\n", None, 505),
    ("http-0.9", b"GET / HTTP/0.9\r\nHost: h\r\n\r\n", None, 505),
    ("http-0.9-simple", b"GET /\r\n\r\n", None, 505),
    ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None, 505),
    ("version-letters", b"GET / HTTP/x.y\r\nHost: h\r\n\r\n", None, 400),
    ("version-two-digits", b"GET / HTTP/11.1\r\nHost: h\r\n\r\n", None, 400),
    ("version-long-minor", b"GET / HTTP/1.10\r\nHost: h\r\n\r\n", None, 400),
    ("version-lowercase", b"GET / http/1.1\r\nHost: h\r\n\r\n", None, 400),
    ("version-wrong-name", b"GET / HTTX/1.1\r\nHost: h\r\n\r\n", None, 400),
    ("version-trailing-space", b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n", None, 400),
    # methods
    ("unknown-method", b"FOO / HTTP/1.1\r\nHost: h\r\n\r\n", None, 501),
    ("unknown-method-known-prefix", b"GETX / HTTP/1.1\r\nHost: h\r\n\r\n", None, 501),
    ("unknown-method-short-prefix", b"GE / HTTP/1.1\r\nHost: h\r\n\r\n", None, 501),
    ("lowercase-method", b"get / HTTP/1.1\r\nHost: h\r\n\r\n", None, 501),
    ("token-method-symbols", b"X-B.R_E~W! / HTTP/1.1\r\nHost: h\r\n\r\n", None, 501),
    ("rtsp-method", b"DESCRIBE / HTTP/1.1\r\nHost: h\r\n\r\n", None, 501),
    ("connect", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", None, 501),
    ("garbage-method", b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n", None, 400),
    ("garbage-method-late", b"FO@ / HTTP/1.1\r\nHost: h\r\n\r\n", None, 400),
    ("method-leading-space", b" GET / HTTP/1.1\r\nHost: h\r\n\r\n", None, 400),
    ("method-nul", b"\x00GET / HTTP/1.1\r\nHost: h\r\n\r\n", None, 400),
    ("method-tab", b"GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", None, 400),
    ("binary-noise", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", None, 400),
    # request-target
    ("relative-target", b"GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", None, 400),
    ("authority-form-get", b"GET example.com:80 HTTP/1.1\r\nHost: h\r\n\r\n", None, 400),
    ("ctl-in-target", b"GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", None, 400),
    ("tab-in-target", b"GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", None, 400),
    ("high-byte-in-target", b"GET /caf\xe9 HTTP/1.1\r\nHost: h\r\n\r\n", None, 400),
    ("fragment-in-target", b"GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n", None, 400),
    ("asterisk-with-get", b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", None, 400),
]


@pytest.mark.parametrize("data, limits, status", [case[1:] for case in HOSTILE],
                         ids=[case[0] for case in HOSTILE])
def test_hostile_bytes_whole(data, limits, status):
    error = error_of(data, limits)
    assert error.status == status
    assert error.message.isprintable() and 0 < len(error.message) < 80


@pytest.mark.parametrize("data, limits, status", [case[1:] for case in HOSTILE],
                         ids=[case[0] for case in HOSTILE])
def test_hostile_bytes_split(data, limits, status):
    # The verdict must not depend on how the bytes arrive.
    assert error_of(data, limits, piece=1 if len(data) < 2000 else 997).status == status


@pytest.mark.parametrize("data, message", [
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
     "Content-Length and Transfer-Encoding together"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 70000, "request header section too large"),
    (b"GET / HTTP/1.1\r\n\r\n", "missing Host header"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
     "unsupported Transfer-Encoding"),
])
def test_error_messages_are_readable(data, message):
    assert error_of(data).message == message


def test_error_is_sticky():
    requestant = Requestant()
    with pytest.raises(RequestError) as first:
        requestant.feed(b"GET / HTTP/1.1\r\nHost : h\r\n\r\n")
    for more in (GET, b"", b"x"):
        with pytest.raises(RequestError) as again:
            requestant.feed(more)
        assert again.value is first.value
    assert not requestant.requests and requestant.current is None


def test_requests_before_bad_bytes_stay_queued():
    requestant = Requestant()
    with pytest.raises(RequestError) as caught:
        requestant.feed(GET + POST + b"GET / HTTP/1.1\r\nHost: h\r\nX: \x00\r\n\r\n")
    assert caught.value.status == 400
    assert [r.method for r in requestant.requests] == ["GET", "POST"]


def test_bad_method_after_pipelined_request_is_refused():
    # Where the second head starts is not known here, so the verdict is only "refused".
    with pytest.raises(RequestError) as caught:
        feed_all(GET + b"FOO / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert caught.value.status in (400, 501)


def test_error_mid_body_drops_unfinished_request():
    requestant = Requestant()
    requestant.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab")
    body = requestant.current.body
    with pytest.raises(RequestError):
        requestant.feed(b"cX\r\n")
    assert requestant.current is None and body.closed


# ---- limits: exact boundaries, and stopping endless input early ----

def test_request_line_limit_boundary():
    limits = Limits(max_request_line=100)
    target = b"/" + b"a" * (100 - len(b"GET  HTTP/1.1\r\n") - 1)
    line = b"GET " + target + b" HTTP/1.1\r\n"
    assert len(line) == 100
    for piece in (0, 1, 7):
        [request] = feed_all(line + b"Host: h\r\n\r\n", limits, piece)
        assert request.target == target.decode()
        assert error_of(b"GET " + target + b"a HTTP/1.1\r\nHost: h\r\n\r\n",
                        limits, piece).status == 414


def test_endless_target_stopped_early():
    requestant = Requestant()
    requestant.feed(b"GET /")
    fed = 5
    with pytest.raises(RequestError) as caught:
        while fed < 10 * 8190:
            requestant.feed(b"a" * 500)
            fed += 500
    assert caught.value.status == 414
    assert fed <= 8190 + 500


@pytest.mark.parametrize("piece", [0, 1, 10])
def test_header_section_limit_is_not_tripped_early(piece):
    limits = Limits(max_header_bytes=1000)
    fields = b"Host: h\r\n" + b"".join(b"X-%02d: %s\r\n" % (i, b"v" * 41) for i in range(20))
    assert len(fields) == 989
    [request] = feed_all(b"GET / HTTP/1.1\r\n" + fields + b"\r\n", limits, piece)
    assert len(request.headers) == 21
    assert error_of(b"GET / HTTP/1.1\r\n" + fields + b"X-More: 12\r\n\r\n",
                    limits, piece).status == 431


@pytest.mark.parametrize("prefix", [
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Endless: ",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Endless-Name",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: ",
], ids=["value", "name", "trailer"])
def test_endless_field_line_stopped_early(prefix):
    # httptools buffers a field line until it ends; the limit must bite regardless.
    requestant = Requestant(Limits(max_header_bytes=4096))
    requestant.feed(prefix)
    fed = 0
    with pytest.raises(RequestError) as caught:
        while fed < 100_000:
            requestant.feed(b"a" * 100)
            fed += 100
    assert caught.value.status == 431
    assert fed <= 4096 + 100


def test_header_count_limit_boundary():
    limits = Limits(max_header_count=3)
    [request] = feed_all(b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n", limits)
    assert len(request.headers) == 3
    assert error_of(b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
                    limits).status == 431


def test_content_length_limit_checked_before_body_arrives():
    requestant = Requestant(Limits(max_body=100))
    with pytest.raises(RequestError) as caught:
        requestant.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n")
    assert caught.value.status == 413
    [request] = feed_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n"
                         + b"x" * 100, Limits(max_body=100))
    assert request.body_size == 100


def test_endless_chunked_body_stopped_while_reading():
    requestant = Requestant(Limits(max_body=10_000))
    requestant.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    fed = 0
    with pytest.raises(RequestError) as caught:
        while fed < 1_000_000:
            requestant.feed(b"3e8\r\n" + b"z" * 1000 + b"\r\n")
            fed += 1000
    assert caught.value.status == 413 and fed <= 11_000


def test_limits_defaults_and_frozen():
    limits = Limits()
    assert (limits.max_request_line, limits.max_header_bytes, limits.max_header_count,
            limits.max_body, limits.spill_threshold) == (8190, 65536, 100, 1 << 30, 1 << 20)
    with pytest.raises(AttributeError):
        limits.max_body = 1
    with pytest.raises(ValueError):
        Limits(max_body=-1)


def test_close_releases_unfinished_and_queued_bodies():
    requestant = Requestant(Limits(spill_threshold=10))
    requestant.feed(POST + b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 50\r\n\r\n" + b"x" * 20)
    queued = requestant.requests[0].body
    unfinished = requestant.current.body
    requestant.close()
    assert queued.closed and unfinished.closed
    assert not requestant.requests and requestant.current is None
    with pytest.raises(ValueError):
        requestant.feed(GET)


def test_close_twice_and_a_failed_requestant_keeps_its_error():
    requestant = Requestant()
    requestant.close()
    requestant.close()
    with pytest.raises(ValueError):
        requestant.feed(GET)
    failed = Requestant()
    with pytest.raises(RequestError):
        failed.feed(b"\x00\x01 garbage\r\n\r\n")
    failed.close()
    with pytest.raises(RequestError):
        failed.feed(GET)


def test_close_leaves_popped_requests_alone():
    requestant = Requestant()
    requestant.feed(POST)
    request = requestant.requests.popleft()
    requestant.close()
    assert request.body.read() == b"hello world"


def test_feed_accepts_bytearray_and_memoryview():
    buffer = bytearray(GET)
    requestant = Requestant()
    requestant.feed(buffer[:10])
    requestant.feed(memoryview(buffer)[10:])
    [request] = requestant.requests
    assert summary(request) == summary(feed_all(GET)[0])


# ---- properties ----

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
                min_size=1, max_size=12)
PATH = st.text("abcxyz0123456789-._~%/=&+;:@!$'()*,", max_size=30).map(lambda p: "/" + p)
VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=20)


@st.composite
def valid_request(draw) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    path = draw(PATH)
    query = draw(st.one_of(st.just(""), VALUE.map(lambda v: "?" + v.replace("#", ""))))
    # Random names, but none the parser acts on: an Expect it does not know is a 417, and a
    # second Content-Type a 400, as they must be; this property is about valid requests.
    fields = [("Host", "h")] + draw(st.lists(st.tuples(
        TOKEN.filter(lambda n: n.lower() not in
                     ("host", "content-length", "transfer-encoding", "connection", "upgrade",
                      "expect", "content-type")),
        VALUE), max_size=4))
    body = draw(st.binary(max_size=60))
    framing = draw(st.sampled_from(["none", "length", "chunked"]) if body else st.just("none"))
    if framing == "length":
        fields.append(("Content-Length", str(len(body))))
    elif framing == "chunked":
        fields.append(("Transfer-Encoding", "chunked"))
    head = f"{method} {path}{query} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields)
    data = head.encode() + b"\r\n"
    if framing == "length":
        data += body
    elif framing == "chunked":
        cut = draw(st.integers(0, len(body)))
        for chunk in (body[:cut], body[cut:]):
            if chunk:
                data += b"%x\r\n%s\r\n" % (len(chunk), chunk)
        data += b"0\r\n" + (b"T: v\r\n" if draw(st.booleans()) else b"") + b"\r\n"
    return data


@settings(max_examples=150, deadline=None)
@given(st.lists(valid_request(), min_size=1, max_size=4), st.data())
def test_property_any_split_parses_like_whole(requests, data):
    stream = b"".join(requests)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    whole = [summary(r) for r in feed_all(stream)]
    assert len(whole) == len(requests)
    requestant = Requestant()
    for start, end in zip([0] + cuts, cuts + [len(stream)]):
        requestant.feed(stream[start:end])
    assert [summary(r) for r in requestant.requests] == whole


PREFIXES = [b"", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: h\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PREFIXES), st.binary(max_size=200), st.integers(1, 50))
def test_property_arbitrary_bytes_parse_or_raise_request_error(prefix, noise, piece):
    for size in (0, piece):
        try:
            feed_all(prefix + noise, Limits(max_header_bytes=512, max_body=64), size)
        except RequestError as error:
            assert error.status in (400, 413, 414, 431, 501, 505)


def test_endless_chunk_extension_is_refused_byte_by_byte_or_whole():
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext="
    for piece_size in (1, 1000, 20000):
        requestant = Requestant()
        requestant.feed(head)
        with pytest.raises(RequestError) as caught:
            for _ in range(40000 // piece_size + 2):
                requestant.feed(b"a" * piece_size)
        assert caught.value.status == 400


def test_long_but_bounded_chunk_extensions_are_fine():
    requestant = Requestant()
    body = b"".join(b"4;note=" + b"n" * 100 + b"\r\ndata\r\n" for _ in range(200)) + b"0\r\n\r\n"
    requestant.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for offset in range(0, len(body), 7):
        requestant.feed(body[offset:offset + 7])
    request = requestant.requests.popleft()
    assert request.body.read() == b"data" * 200


def test_a_request_line_split_after_its_first_byte_does_not_count_toward_the_header_limit():
    """The fixed part of a request line (spaces, version, CRLF) is counted when the head
    begins; when the line ends in a later feed, those bytes must not be taken for field bytes
    there (that gave 431 to a head that fits, depending on how TCP split it)."""
    fields = (b"Host: h\r\nu.$: 0000\r\nq^R*mQ.: 0000000000\r\nl9EIR2: 000000000000\r\n"
              b"Content-Length: 0\r\n")
    head = b"GET /?!0b2% HTTP/1.1\r\n" + fields + b"Expect: 100-continue\r\n\r\n"
    limits = Limits(max_request_line=24, max_header_bytes=104)
    whole = Requestant(limits)
    whole.feed(head)
    assert len(whole.requests) == 1
    for cut in range(1, len(head)):
        split = Requestant(limits)
        for second in (head[:cut], head[cut:cut + 97], head[cut + 97:]):
            split.feed(second)
        assert len(split.requests) == 1, cut


@pytest.mark.parametrize("version", ["1.2", "1.9"])
def test_a_later_http_1_minor_version_is_served_as_1_1(version):
    """RFC 9112 §2.3: process it as the highest minor version we speak."""
    requestant = Requestant()
    requestant.feed(f"GET /x HTTP/{version}\r\nHost: h\r\n\r\n".encode())
    request = requestant.requests.popleft()
    assert request.version == "1.1" and request.keep_alive
    missing_host = Requestant()
    with pytest.raises(RequestError) as raised:
        missing_host.feed(f"GET /x HTTP/{version}\r\n\r\n".encode())
    assert raised.value.status == 400  # and as strict as 1.1 about Host


def test_chunked_request_among_others_parses_the_same_however_split():
    """Where a chunked head ends is found again from the bytes (llhttp gives no offsets):
    after a head that spans feeds, inside a feed that began mid-body, and after a body that
    holds a blank line and a head of its own, at every cut and every pair of cuts."""
    trap = b"\r\n\r\nPOST /fake HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    stream = (b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n\r\n"
              + b"PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(trap) + trap
              + b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              + b'3 ; a = "x\\"y" \t; b\r\nabc\r\n0 ;z\r\nT: v\r\n\r\n'
              + b"POST /d HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              + b"2\r\nde\r\n0\r\n\r\nGET /e HTTP/1.1\r\nHost: h\r\n\r\n")
    whole = [summary(request) for request in feed_all(stream)]
    assert [entry[1] for entry in whole] == ["/a", "/b", "/c", "/d", "/e"]
    assert whole[1][7] == trap and whole[2][7] == b"abc" and whole[2][6] == [("T", "v")]
    for first in range(1, len(stream)):
        for second in ([None] + list(range(first + 1, len(stream), 7))):
            requestant = Requestant()
            pieces = [stream[:first], stream[first:second], stream[second:]] if second else [
                stream[:first], stream[first:]]
            for piece in pieces:
                requestant.feed(piece)
            assert [summary(request) for request in requestant.requests] == whole, (
                first, second)


@pytest.mark.parametrize("piece", [0, 1, 5])
def test_chunk_line_whitespace_is_allowed_only_where_the_grammar_allows_it(piece):
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    [request] = feed_all(head + b'2 ;\ta\t= "b;c" ; d\r\nxy\r\n0 ; e=f\r\n\r\n', piece=piece)
    assert request.body.read() == b"xy" and request.body_size == 2
    for bad in (b" 2\r\nxy\r\n", b"2 \r\nxy\r\n", b"2;a=b \r\nxy\r\n", b"2 2\r\nxy\r\n",
                b'2;a="b\r\nxy\r\n', b"2;=b\r\nxy\r\n", b"2;a b\r\nxy\r\n"):
        assert error_of(head + bad + b"0\r\n\r\n", piece=piece).status == 400, bad


@pytest.mark.parametrize("cut", [None, 3, 14, 20, 40])
def test_each_request_has_its_own_version_however_they_are_fed(cut):
    """Pipelined requests of different versions, one after an empty line, one after a body:
    each keeps the version of its own request line, in one feed or split anywhere."""
    data = (b"POST /a HTTP/1.0\r\nHost: h\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n"
            b"abcGET /b HTTP/1.1\r\nHost: h\r\n\r\n"
            b"\r\nGET /c HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"
            b"GET /d HTTP/1.1\r\nHost: h\r\n\r\n")
    requestant = Requestant()
    for piece in ([data] if cut is None else [data[:cut], data[cut:cut * 3], data[cut * 3:]]):
        requestant.feed(piece)
    assert [(request.target, request.version) for request in requestant.requests] == [
        ("/a", "1.0"), ("/b", "1.1"), ("/c", "1.0"), ("/d", "1.1")]
