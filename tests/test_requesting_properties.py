"""Properties of `Requestant` under generated input: streams of valid requests parse to exactly
what was sent however the bytes are split, and any bytes at all either parse or raise
`RequestError` with a status a server can send, promptly.

Requests are generated together with a model of what parsing them must give (method, target,
path, query, version, headers, body, trailers, framing, keep-alive, expectation), so the
properties check correctness, not only agreement between two ways of feeding.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from hio_http.requesting import Limits, Request, RequestError, Requestant

STATUSES = {400, 413, 414, 417, 431, 501, 505}  # 417: a damaged Expect value
FEED_SECONDS = 0.25  # no single feed() may take longer, even on a loaded machine

# Header names that decide framing or connection handling; generated on purpose, not at random.
SPECIAL = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "expect",
           "proxy-connection", "keep-alive"}

TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
NAME = st.text(TCHAR, min_size=1, max_size=16).filter(lambda name: name.lower() not in SPECIAL)
# Field values: visible ASCII, obs-text (latin-1 above 0x7f), inner spaces and tabs.
VALUE_CHAR = st.one_of(st.characters(min_codepoint=0x21, max_codepoint=0x7e),
                       st.characters(min_codepoint=0x80, max_codepoint=0xff),
                       st.sampled_from(" \t"))
VALUE = st.text(VALUE_CHAR, max_size=24)
OWS = st.sampled_from(["", " ", "  ", "\t", " \t"])
PCHAR = "abcxyzABC0123456789-._~%!$&'()*+,;=:@"
SEGMENT = st.text(PCHAR, max_size=10)
QUERY = st.text(PCHAR + "/?", max_size=16)
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]


@dataclasses.dataclass
class Expected:
    """What parsing one generated request must give."""

    method: str
    target: str
    path: str
    query: str
    version: str
    headers: list
    trailers: list
    body: bytes
    content_length: int | None
    chunked: bool
    keep_alive: bool
    expect_continue: bool


def observed(request: Request) -> Expected:
    position = request.body.tell()
    request.body.seek(0)
    body = request.body.read()
    request.body.seek(position)
    assert request.complete and request.body_size == len(body) and request.upgrade is None
    return Expected(request.method, request.target, request.path, request.query,
                    request.version, request.headers, request.trailers, body,
                    request.content_length, request.chunked, request.keep_alive,
                    request.expect_continue)


@st.composite
def targets(draw, method: str) -> tuple[str, str, str]:
    """(request-target, path, query) in origin, absolute or asterisk form."""
    form = draw(st.sampled_from(["origin"] * 6 + ["absolute", "asterisk"]))
    if form == "asterisk" and method == "OPTIONS":
        return "*", "*", ""
    path = "/" + "/".join(draw(st.lists(SEGMENT, max_size=4)))
    query = draw(st.one_of(st.none(), QUERY))
    suffix = path + ("" if query is None else "?" + query)
    if form == "absolute":
        authority = draw(st.sampled_from(["example.com", "h:8080", "[::1]:80", "10.0.0.1"]))
        if draw(st.booleans()) and query is None and path == "/":
            # No path at all: the path is "/" (or "*" for a server-wide OPTIONS).
            return f"http://{authority}", "*" if method == "OPTIONS" else "/", ""
        return f"http://{authority}{suffix}", path, query or ""
    return suffix, path, query or ""


# Chunk extensions, with the whitespace RFC 9112 §7.1.1 allows around ";" and "=".
EXTENSION = st.sampled_from([b"", b";a=b", b";name", b';q="x y"', b" ; a = b", b"\t;\tname",
                             b' ;q = "x; \\" y" ; r', b"  ;a=b;c\t=\td"])


@st.composite
def chunked_body(draw, body: bytes) -> bytes:
    """`body` in random chunks with random size spellings and extensions, then a last chunk."""
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    out = b""
    for start, end in zip([0] + cuts, cuts + [len(body)]):
        if end > start:
            size = b"%x" % (end - start)
            size = draw(st.sampled_from([size, size.upper(), b"0" + size]))
            out += size + draw(EXTENSION) + b"\r\n" + body[start:end] + b"\r\n"
    return out + b"0" + draw(EXTENSION) + b"\r\n"


@st.composite
def valid_request(draw, last: bool = False, ows: bool = True) -> tuple[bytes, Expected]:
    """One valid request and its model. Only the `last` of a stream may end the connection.
    With `ows=False` every field value follows its colon after exactly one space."""
    method = draw(st.sampled_from(METHODS))
    target, path, query = draw(targets(method))
    version = draw(st.sampled_from(["1.1", "1.1", "1.1", "1.0"]))
    fields: list[tuple[str, str, str]] = []  # (name, value as sent, value parsed)
    for name, value in draw(st.lists(st.tuples(NAME, VALUE), max_size=5)):
        before, after = (draw(OWS), draw(OWS)) if ows else (" ", "")
        fields.append((name, before + value + after, value.strip(" \t")))
    if version == "1.1" or draw(st.booleans()):
        at = draw(st.integers(0, len(fields)))
        host = draw(st.sampled_from(["h", "example.com:8080", "[::1]"]))
        fields.insert(at, (draw(st.sampled_from(["Host", "host", "HOST"])), " " + host, host))
    keep_alive = version == "1.1"
    if last and draw(st.booleans()):
        keep_alive = False
        fields.append(("Connection", " close", "close"))
    elif version == "1.0":  # an HTTP/1.0 request in mid-stream must ask to stay open
        keep_alive = True
        fields.append(("Connection", " keep-alive", "keep-alive"))
    body = draw(st.binary(max_size=80))
    framings = ["length"] + (["chunked"] if version == "1.1" else []) + ([] if body else ["none"])
    framing = draw(st.sampled_from(framings))
    content_length = None
    if framing == "length":
        content_length = len(body)
        fields.append(("Content-Length", f" {len(body)}", str(len(body))))
    elif framing == "chunked":
        fields.append(("Transfer-Encoding", " chunked", "chunked"))
    expect = version == "1.1" and framing != "none" and draw(st.booleans())
    if expect:
        fields.append(("Expect", " 100-continue", "100-continue"))
    head = f"{method} {target} HTTP/{version}\r\n" + "".join(
        f"{name}:{sent}\r\n" for name, sent, _ in fields) + "\r\n"
    data = head.encode("latin-1")
    trailers: list[tuple[str, str]] = []
    if framing == "length":
        data += body
    elif framing == "chunked":
        data += draw(chunked_body(body))
        for name, value in draw(st.lists(st.tuples(NAME, VALUE), max_size=3)):
            data += f"{name}: {value}\r\n".encode("latin-1")
            trailers.append((name, value.strip(" \t")))
        data += b"\r\n"
    headers = [(name, parsed) for name, _, parsed in fields]
    return data, Expected(method, target, path, query, version, headers, trailers, body,
                          content_length, framing == "chunked", keep_alive, expect)


@st.composite
def valid_stream(draw, max_requests: int = 5,
                 ows: bool = True) -> tuple[bytes, list[Expected], list[int]]:
    """Several pipelined requests: (bytes, models, offset where each request ends)."""
    count = draw(st.integers(1, max_requests))
    parts = [draw(valid_request(last=index == count - 1, ows=ows)) for index in range(count)]
    ends, total = [], 0
    for data, _ in parts:
        total += len(data)
        ends.append(total)
    return b"".join(data for data, _ in parts), [model for _, model in parts], ends


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted(set(cuts))
    return [data[start:end] for start, end in zip([0] + points, points + [len(data)])]


def feed_timed(requestant: Requestant, piece: bytes) -> None:
    started = time.perf_counter()
    try:
        requestant.feed(piece)
    finally:
        elapsed = time.perf_counter() - started
        assert elapsed < FEED_SECONDS, f"feed of {len(piece)} bytes took {elapsed:.3f} s"


# A blank line fed after hostile bytes settles verdicts that legitimately wait for more bytes:
# an unknown method token still arriving, and the size of a head that is still open.
SETTLE = b"\r\n\r\n"


def outcome(pieces: list[bytes], limits: Limits | None = None,
            settle: bool = False) -> tuple[list[Expected], int | None]:
    """Feed `pieces` in order (then SETTLE if `settle`): (the requests parsed, the status of
    the error raised or None). Any exception but RequestError fails the test; so does a status
    a server cannot send."""
    requestant = Requestant(limits)
    status = None
    try:
        for piece in pieces:
            feed_timed(requestant, piece)
        if settle:
            feed_timed(requestant, SETTLE)
    except RequestError as error:
        assert error.status in STATUSES, error
        status = error.status
        # An error is final: the next feed raises it again, whatever it carries.
        try:
            requestant.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        except RequestError as again:
            assert again.status == status
        else:
            raise AssertionError("feed() after a RequestError did not raise")
    parsed = [observed(request) for request in requestant.requests]
    requestant.close()
    return parsed, status


# ---- valid streams -------------------------------------------------------------------------------

@settings(max_examples=250, deadline=timedelta(milliseconds=1000),
          suppress_health_check=[HealthCheck.too_slow])
@given(valid_stream(), st.data())
def test_any_split_of_valid_requests_parses_to_what_was_sent(stream, data):
    payload, models, _ = stream
    whole = outcome([payload])
    assert whole == (models, None)
    cuts = data.draw(st.lists(st.integers(0, len(payload)), max_size=12), label="cuts")
    assert outcome(splits(payload, cuts)) == whole


@settings(max_examples=40, deadline=timedelta(milliseconds=2000),
          suppress_health_check=[HealthCheck.too_slow])
@given(valid_stream(max_requests=3))
def test_byte_at_a_time_parses_like_one_feed(stream):
    payload, models, _ = stream
    assert outcome([payload[i:i + 1] for i in range(len(payload))]) == (models, None)


@settings(max_examples=150, deadline=timedelta(milliseconds=1000),
          suppress_health_check=[HealthCheck.too_slow])
@given(valid_stream(), st.binary(max_size=200), st.data())
def test_bytes_after_a_closing_request_are_ignored(stream, tail, data):
    payload, models, _ = stream
    if models[-1].keep_alive:
        closing, model = data.draw(valid_request(last=True).filter(
            lambda pair: not pair[1].keep_alive), label="closing request")
        payload, models = payload + closing, models + [model]
    stream_bytes = payload + tail
    cuts = data.draw(st.lists(st.integers(0, len(stream_bytes)), max_size=6), label="cuts")
    assert outcome(splits(stream_bytes, cuts)) == (models, None)


# ---- hostile bytes -------------------------------------------------------------------------------

@settings(max_examples=400, deadline=timedelta(milliseconds=500),
          suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8))
@example(b"\r\n" * 300, [])
@example(b"GET " + b"/" * 590, [1, 2, 3])
@example(b"G", [])
def test_arbitrary_bytes_parse_or_raise_request_error(noise, cuts):
    limits = Limits(max_request_line=256, max_header_count=8, max_body=128)
    whole = outcome([noise], limits, settle=True)
    split = outcome(splits(noise, [cut for cut in cuts if cut <= len(noise)]), limits,
                    settle=True)
    # Whether the bytes are refused does not depend on how they arrived; which status they
    # get may (test_unknown_method_after_a_request_completed_mid_feed).
    assert refused(split) == refused(whole)


def refused(result: tuple[list[Expected], int | None]) -> tuple[list[Expected], bool]:
    parsed, status = result
    return parsed, status is not None


@settings(max_examples=300, deadline=timedelta(milliseconds=1000),
          suppress_health_check=[HealthCheck.too_slow])
@given(valid_stream(), st.binary(min_size=1, max_size=40), st.data())
def test_noise_spliced_into_valid_requests(stream, noise, data):
    payload, models, ends = stream
    at = data.draw(st.integers(0, len(payload)), label="splice at")
    mode = data.draw(st.sampled_from(["insert", "overwrite"]), label="mode")
    damaged = payload[:at] + noise + payload[at + (len(noise) if mode == "overwrite" else 0):]
    cuts = data.draw(st.lists(st.integers(0, len(damaged)), max_size=8), label="cuts")
    parsed, status = outcome(splits(damaged, cuts))
    # The requests wholly before the damage parse exactly as sent, whatever follows them.
    intact = sum(1 for end in ends if end <= at)
    assert parsed[:intact] == models[:intact]
    assert refused(outcome(splits(damaged, cuts), settle=True)) == refused(
        outcome([damaged], settle=True))


@settings(max_examples=300, deadline=timedelta(milliseconds=1000),
          suppress_health_check=[HealthCheck.too_slow])
@given(valid_stream(), st.data())
def test_tight_limits_give_the_same_verdict_however_split(stream, data):
    payload, models, _ = stream
    limits = Limits(max_request_line=data.draw(st.integers(14, 80), label="line"),
                    max_header_bytes=data.draw(st.integers(0, 200), label="header bytes"),
                    max_header_count=data.draw(st.integers(0, 8), label="header count"),
                    max_body=data.draw(st.integers(0, 80), label="body"))
    whole = outcome([payload], limits)
    cuts = data.draw(st.lists(st.integers(0, len(payload)), max_size=10), label="cuts")
    assert outcome(splits(payload, cuts), limits) == whole
    parsed, status = whole
    assert parsed == models[:len(parsed)]
    if status is None:
        assert parsed == models
    else:
        assert status in (413, 414, 431)  # valid requests can only break a limit


CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("prefix, filler", [
    pytest.param(b"GET /", b"a", id="request-target"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX: ", b"a", id="field value"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX: ", b" ", id="field whitespace"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\n", b"a", id="field name"),
    pytest.param(CHUNKED_HEAD + b"0\r\nT: ", b"a", id="trailer value"),
    pytest.param(CHUNKED_HEAD + b"1;", b"a", id="chunk extension"),
    pytest.param(CHUNKED_HEAD + b'1;a="', b"a", id="quoted chunk extension"),
    pytest.param(CHUNKED_HEAD, b"0", id="chunk size zeros"),
])
@settings(max_examples=15, deadline=timedelta(milliseconds=2000),
          suppress_health_check=[HealthCheck.too_slow])
@given(piece_kib=st.integers(1, 64))
def test_endless_sections_are_cut_off_in_bounded_feeds(prefix, filler, piece_kib):
    """An endless request line, field line, chunk-size line or trailer is refused within a few
    times the limit, each feed fast, however large the pieces it arrives in."""
    limits = Limits(max_request_line=1024, max_header_bytes=2048, max_body=4096)
    requestant = Requestant(limits)
    piece = filler * (piece_kib * 1024)
    sent = 0
    try:
        feed_timed(requestant, prefix)
        while sent < 4 * 1024 * 1024:
            feed_timed(requestant, piece)
            sent += len(piece)
    except RequestError as error:
        assert error.status in STATUSES
        assert sent <= len(piece) + 4 * 4096, f"cut off only after {sent} bytes"
        return
    raise AssertionError(f"{sent} bytes of an endless section were accepted")


@settings(max_examples=30, deadline=timedelta(milliseconds=1000))
@given(st.text(TCHAR, min_size=1, max_size=1).map(str.encode), st.integers(1, 200),
       st.sampled_from([b"\x05", b"@", b"\r\n", b"\x00"]))
def test_overlong_unknown_method_gets_one_verdict_however_split(letter, extra, bad):
    """A token past max_request_line is judged on its first max_request_line bytes, whether
    the bytes after them have arrived or not."""
    limits = Limits(max_request_line=64)
    data = b"Q" + letter * (64 + extra) + bad + b" / HTTP/1.1\r\nHost: h\r\n\r\n"
    whole = outcome([data], limits)
    assert outcome([data[:65], data[65:]], limits) == whole


def test_unknown_method_after_a_request_completed_mid_feed():
    """Documented behaviour: llhttp gives no offsets, so after a request that completed inside
    a feed the next method's bytes are unknown and an unknown method gets 400, where at a feed
    boundary it gets 501. Both refuse it."""
    first = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
    data = first + b"XYZ /b HTTP/1.1\r\nHost: h\r\n\r\n"
    assert outcome([data])[1] == 400
    assert outcome([first, data[len(first):]])[1] == 501


@settings(max_examples=300, deadline=timedelta(milliseconds=1000),
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(NAME, st.text(" \t", max_size=60), VALUE), min_size=1, max_size=4),
       st.integers(-8, 60), st.data())
def test_leading_whitespace_of_any_length_gets_one_verdict_however_split(fields, margin, data):
    """Runs of whitespace before field values, cut anywhere (inside a run, at its colon):
    the verdict on a head near max_header_bytes is the one it gets whole."""
    head = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(
        f"{name}:{ows}{value}\r\n".encode("latin-1") for name, ows, value in fields) + b"\r\n"
    # Near the size of the field lines as sent with one space after each colon.
    lines = len("Host: h\r\n") + sum(len(f"{name}: {value}\r\n") for name, _, value in fields)
    limits = Limits(max_header_bytes=max(0, lines + margin))
    cuts = data.draw(st.lists(st.integers(0, len(head)), max_size=6), label="cuts")
    assert outcome(splits(head, cuts), limits) == outcome([head], limits)


@pytest.mark.parametrize("cuts", [[30, 50], [28], [29, 31], [44, 69], [70]])
def test_header_limit_counts_whitespace_the_same_however_split(cuts):
    """The whitespace before a field value counts for nothing whether the head arrives whole
    or in pieces, so it cannot tip a head near the limit over it in one case only."""
    head = b"GET / HTTP/1.1\r\nHost: h\r\nX:" + b" " * 40 + b"v\r\n\r\n"
    limits = Limits(max_header_bytes=30)
    parsed, status = outcome([head], limits)
    assert status is None and ("X", "v") in parsed[0].headers
    assert outcome(splits(head, cuts), limits) == outcome([head], limits)
    over = head.replace(b"v\r\n", b"v" * 20 + b"\r\n")  # the value itself passes the limit
    assert outcome(splits(over, cuts), limits)[1] == 431 == outcome([over], limits)[1]
