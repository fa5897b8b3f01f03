"""The PROXY protocol, v1 and v2 (hio_http.proxy_protocol)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hio_http.proxy_protocol import ProxyProtocolError, parse_proxy_header

# Spelled out from haproxy's proxy-protocol.txt rather than imported, so that a wrong
# constant in the module fails here.
SIGNATURE = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A"


# ---- PROXY protocol: builders ----

def v2(command: int = 1, family: int = 0x11, body: bytes = b"", version: int = 2,
       length: int | None = None, signature: bytes = SIGNATURE) -> bytes:
    size = len(body) if length is None else length
    return (signature + bytes([version << 4 | command, family]) + size.to_bytes(2, "big")
            + body)


def inet4(source: str, destination: str, sport: int, dport: int) -> bytes:
    return (ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address(destination).packed
            + sport.to_bytes(2, "big") + dport.to_bytes(2, "big"))


def inet6(source: str, destination: str, sport: int, dport: int) -> bytes:
    return (ipaddress.IPv6Address(source).packed + ipaddress.IPv6Address(destination).packed
            + sport.to_bytes(2, "big") + dport.to_bytes(2, "big"))


def unix(source: bytes, destination: bytes) -> bytes:
    return source.ljust(108, b"\x00") + destination.ljust(108, b"\x00")


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


FULL_V6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"

VALID = [
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
     ("192.0.2.1", 56324), ("198.51.100.2", 443)),
    (b"PROXY TCP6 2001:DB8::1 2001:db8:0:0::2 0 65535\r\n",
     ("2001:db8::1", 0), ("2001:db8::2", 65535)),
    (b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n", ("::ffff:c000:201", 1), ("::1", 2)),
    (b"PROXY UNKNOWN\r\n", None, None),
    (b"PROXY UNKNOWN whatever follows \x00\xff\r\n", None, None),
    (f"PROXY UNKNOWN {FULL_V6} {FULL_V6} 65535 65535\r\n".encode(), None, None),  # 107 bytes
    (f"PROXY TCP6 {FULL_V6} {FULL_V6} 65535 65535\r\n".encode()[:-3] + b"5\r\n",
     (FULL_V6, 65535), (FULL_V6, 65535)),                                       # 104 bytes
    (v2(body=inet4("192.0.2.1", "198.51.100.2", 56324, 443)),
     ("192.0.2.1", 56324), ("198.51.100.2", 443)),
    (v2(family=0x12, body=inet4("192.0.2.1", "198.51.100.2", 53, 5353)),       # UDP
     ("192.0.2.1", 53), ("198.51.100.2", 5353)),
    (v2(family=0x21, body=inet6("2001:db8::1", "2001:db8::2", 4711, 8443)),
     ("2001:db8::1", 4711), ("2001:db8::2", 8443)),
    (v2(family=0x31, body=unix(b"/run/client.sock", b"/run/hio.sock")),
     ("/run/client.sock", 0), ("/run/hio.sock", 0)),
    (v2(body=inet4("192.0.2.1", "198.51.100.2", 1, 2) + tlv(0x01, b"h2")
        + tlv(0x04, b"\x00" * 3) + tlv(0x20, b"\x01" + bytes(4) + tlv(0x21, b"TLSv1.3"))),
     ("192.0.2.1", 1), ("198.51.100.2", 2)),
    (v2(family=0x21, body=inet6("::1", "::2", 1, 2) + tlv(0xEE, b"")),
     ("::1", 1), ("::2", 2)),
    (v2(command=0, family=0x00), None, None),                       # LOCAL: health check
    (v2(command=0, family=0xFF, body=b"ignored"), None, None),      # LOCAL ignores family
    (v2(command=0, family=0x11, body=b"short"), None, None),
    (v2(command=1, family=0x00, body=b"\x01\x02\x03"), None, None), # UNSPEC
]


@pytest.mark.parametrize("header, source, destination", VALID)
def test_proxy_header_valid(header, source, destination):
    after = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert parse_proxy_header(header + after) == (len(header), source, destination)
    assert parse_proxy_header(bytearray(header)) == (len(header), source, destination)
    assert parse_proxy_header(memoryview(header)) == (len(header), source, destination)


@pytest.mark.parametrize("header, source, destination", VALID)
def test_proxy_header_fed_byte_by_byte(header, source, destination):
    received = b""
    for byte in header[:-1]:
        received += bytes([byte])
        assert parse_proxy_header(received) is None, received
    assert parse_proxy_header(header) == (len(header), source, destination)


def test_v1_line_length_is_107_bytes_with_crlf():
    header = f"PROXY UNKNOWN {FULL_V6} {FULL_V6} 65535 65535\r\n".encode()
    assert len(header) == 107
    assert parse_proxy_header(header) == (107, None, None)
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(header[:-2] + b"5\r\n")     # 108 bytes
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(b"PROXY UNKNOWN " + b"x" * 93)  # 107 bytes, no CRLF
    assert parse_proxy_header(b"PROXY UNKNOWN " + b"x" * 92) is None


def test_v2_length_bound():
    body = inet4("192.0.2.1", "198.51.100.2", 1, 2) + tlv(0x04, bytes(1009))
    assert len(body) == 1024
    assert parse_proxy_header(v2(body=body))[0] == 16 + 1024
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(v2(body=body + b"\x00"))
    with pytest.raises(ProxyProtocolError):                     # refused before the body
        parse_proxy_header(v2(length=4000))
    assert parse_proxy_header(v2(body=body + tlv(0x04, b"")), max_v2_length=2048)[0] == 1043


MALFORMED = [
    b"GET / HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x02\x00",                                            # a TLS hello
    b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n",                   # LF only
    b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\rX\n",
    b"PROXY TCP4  192.0.2.1 198.51.100.2 56324 443\r\n",                # double space
    b"PROXY  TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 \r\n",                # trailing space
    b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",                     # 5 fields
    b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 1\r\n",               # 7 fields
    b"PROXY TCP4 192.0.2.1 198.51.100.2 056324 443\r\n",                # leading zero
    b"PROXY TCP4 192.0.2.1 198.51.100.2 00 443\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 -1 443\r\n",
    b"PROXY TCP4 192.0.2.01 198.51.100.2 1 2\r\n",                      # octet leading zero
    b"PROXY TCP4 192.0.2.256 198.51.100.2 1 2\r\n",
    b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",                     # family mismatch
    b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
    b"PROXY TCP6 fe80::1%eth0 2001:db8::2 1 2\r\n",
    b"PROXY TCP5 192.0.2.1 198.51.100.2 1 2\r\n",
    b"PROXY tcp4 192.0.2.1 198.51.100.2 1 2\r\n",
    b"proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
    b"PROXY UNKNOWNX\r\n",
    b"PROXY UNKNOWN\rX\r\n",
    b"PROXY\r\n",
    b"PROXY \r\n",
    b"PROXY TCP4\r\n",
    b"PROXY TCP4 \xff.0.2.1 198.51.100.2 1 2\r\n",
    b"PROXY UNKNOWN " + b"x" * 200,
    b"PROXY TCP6 " + b"1" * 200 + b"\r\n",
    v2(signature=SIGNATURE[:-1] + b"X", body=inet4("192.0.2.1", "198.51.100.2", 1, 2)),
    v2(version=1, body=inet4("192.0.2.1", "198.51.100.2", 1, 2)),
    v2(version=3, body=inet4("192.0.2.1", "198.51.100.2", 1, 2)),
    v2(command=2, body=inet4("192.0.2.1", "198.51.100.2", 1, 2)),
    v2(command=0xF, family=0x00),
    v2(family=0x41, body=bytes(12)),                                    # no such family
    v2(family=0x13, body=bytes(12)),                                    # no such transport
    v2(family=0x10, body=bytes(12)),                                    # INET, UNSPEC
    v2(family=0xFF, body=bytes(12)),
    v2(body=bytes(11)),                                                 # short for TCP4
    v2(family=0x21, body=bytes(35)),
    v2(family=0x31, body=bytes(215)),
    v2(body=inet4("192.0.2.1", "198.51.100.2", 1, 2) + b"\x01\x00"),    # truncated TLV
    v2(body=inet4("192.0.2.1", "198.51.100.2", 1, 2) + b"\x01\x00\x05ab"),
    v2(body=inet4("192.0.2.1", "198.51.100.2", 1, 2) + tlv(0x01, b"h2") + b"\x04"),
    v2(length=1025),
]


@pytest.mark.parametrize("data", MALFORMED)
def test_proxy_header_malformed(data):
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data)


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_fed_byte_by_byte_fails_and_stays_failed(data):
    failed = False
    for end in range(1, len(data) + 1):
        try:
            result = parse_proxy_header(data[:end])
        except ProxyProtocolError:
            failed = True
            continue
        assert not failed, f"a prefix failed, then {data[:end]!r} did not"
        assert result is None
    assert failed


@pytest.mark.parametrize("partial", [
    b"GET ",
    b"PROXY TCP9",
    b"PROXY TCP4  ",
    b"PROXY TCP4 192.0.2.1\rX",
    b"PROXY TCP4 192.0.2.1 g",
    b"PROXY TCP4 1 2 3 4 5 ",
    b"PROXY UNKNOWN\rX",
    b"PROXY UNKNOWN\r x",
    b"PROXY UNKNOWNX",
    SIGNATURE[:7] + b"X",
    SIGNATURE + b"\x11",
    SIGNATURE + b"\x21\x41",
    v2(length=4000),
    v2(length=11),
])
def test_bad_prefix_rejected_before_the_header_ends(partial):
    # A slow or hostile peer is refused at the first impossible byte, not after 107.
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(partial)


def test_incomplete_prefixes_wait():
    assert parse_proxy_header(b"") is None
    assert parse_proxy_header(b"PRO") is None
    assert parse_proxy_header(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r") is None
    assert parse_proxy_header(SIGNATURE[:5]) is None
    assert parse_proxy_header(v2(length=12)) is None     # header read, addresses to come


def test_proxy_protocol_error_is_a_value_error():
    assert issubclass(ProxyProtocolError, ValueError)


# ---- PROXY protocol: properties ----

def parse_outcome(data: bytes):
    try:
        return parse_proxy_header(data)
    except ProxyProtocolError:
        return ProxyProtocolError


PREFIXES = st.sampled_from([
    b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN", b"PROXY TCP4 1.2.3.4 ",
    SIGNATURE, SIGNATURE + b"\x21\x11", SIGNATURE + b"\x21\x21", SIGNATURE + b"\x20",
    SIGNATURE + b"\x21\x11\x00\x0c", SIGNATURE + b"\x21\x31\x00\xd8",
])
INPUTS = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda prefix, rest: prefix + rest, PREFIXES, st.binary(max_size=300)),
    st.builds(lambda prefix, rest: prefix + rest.encode(), PREFIXES,
              st.text(alphabet="0123456789abcdef.: \r\nTCPUNKOW", max_size=80)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(INPUTS)
def test_random_bytes_only_raise_proxy_protocol_error(data):
    try:
        result = parse_proxy_header(data)
    except ProxyProtocolError:
        return  # the only exception allowed; anything else fails the test
    if result is not None:
        consumed, source, destination = result
        assert 0 < consumed <= len(data)
        for address in (source, destination):
            assert address is None or (isinstance(address[0], str)
                                       and 0 <= address[1] <= 65535)


@settings(max_examples=150, deadline=None)
@given(INPUTS)
def test_outcome_is_settled_by_the_first_decisive_prefix(data):
    # Once a prefix is decided (error or result), every longer input is decided the same
    # way: feeding in pieces can never turn a valid header into an error or vice versa.
    settled = None
    for end in range(len(data) + 1):
        outcome = parse_outcome(data[:end])
        if settled is not None:
            assert outcome == settled
        elif outcome is not None:
            settled = outcome


addresses4 = st.ip_addresses(v=4).map(str)
addresses6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@settings(max_examples=200, deadline=None)
@given(st.booleans(), st.booleans(), st.data(), ports, ports, st.binary(max_size=40))
def test_generated_headers_round_trip(binary, six, data, sport, dport, after):
    strategy = addresses6 if six else addresses4
    source, destination = data.draw(strategy), data.draw(strategy)
    if binary:
        body = (inet6 if six else inet4)(source, destination, sport, dport)
        header = v2(family=0x21 if six else 0x11, body=body)
    else:
        header = f"PROXY TCP{6 if six else 4} {source} {destination} {sport} {dport}\r\n"
        header = header.encode()
    expected = (len(header), (source, sport), (destination, dport))
    assert parse_proxy_header(header + after) == expected
    assert parse_proxy_header(header[:data.draw(st.integers(0, len(header) - 1))]) is None
