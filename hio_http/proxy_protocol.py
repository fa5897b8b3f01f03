"""The PROXY protocol (haproxy's proxy-protocol.txt, v1 and v2): `parse_proxy_header` decodes
the header a proxy sends before the client's bytes, telling the client's address. A pure
function: no sockets, no logging. Which peers may send one is forwarding.TrustedPeers'.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["ProxyProtocolError", "parse_proxy_header"]

# Theory of operation
# -------------------
# parse_proxy_header() is given all bytes received so far on a connection
# and answers None (need more), a result, or ProxyProtocolError. It raises as soon as a
# prefix can no longer start a valid header, and never for a prefix of a valid one, so
# a caller may feed byte by byte and re-parse the growing buffer.


class ProxyProtocolError(ValueError):
    """A malformed or unsupported PROXY protocol header: the connection must be dropped."""


def parse_proxy_header(data: bytes, *, max_v2_length: int = 1024
                       ) -> tuple[int, tuple | None, tuple | None] | None:
    """Decode a PROXY protocol header (haproxy's proxy-protocol.txt, v1 and v2).

    `data` is every byte received on the connection so far. Returns None while more bytes
    are needed; else (consumed, source, destination), where source and destination are
    (host, port) or None for "no address; use the real connection endpoints" (v1 UNKNOWN,
    v2 LOCAL or UNSPEC). Hosts are canonical IP strings, or for v2 AF_UNIX the socket path
    (UTF-8, surrogateescape) with port 0. The bytes after `consumed` belong to the next
    protocol. Raises ProxyProtocolError on anything malformed; a v2 header whose address
    and TLV block exceeds `max_v2_length` bytes is refused.
    """
    data = bytes(data[:max(_V1_MAX, _V2_HEAD + max_v2_length)])
    if data[:1] == b"P":
        return _parse_v1(data)
    if data[:1] == b"\r":
        return _parse_v2(data, max_v2_length)
    if not data:
        return None
    raise ProxyProtocolError("no PROXY protocol signature")


_V1_PREFIX = b"PROXY "
_V1_MAX = 107  # the longest v1 line, CRLF included ("PROXY UNKNOWN" + two full IPv6 ...)
_V1_PROTOCOLS = (b"TCP4", b"TCP6", b"UNKNOWN")
_V1_ADDRESS_BYTES = frozenset(b"0123456789abcdefABCDEF.: \r")
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")  # decimal, no leading zeros

_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_HEAD = 16  # signature, version/command, family/protocol, length
_V2_LOCAL, _V2_PROXY = 0x0, 0x1
# Family (high nibble) and transport (low nibble) bytes defined by the spec (§2.2); any
# other value "must be rejected as invalid by receivers". Value: address block size.
_V2_FAMILIES = {
    0x00: 0,    # UNSPEC: no address
    0x11: 12,   # TCP over IPv4: 4 + 4 + 2 + 2
    0x12: 12,   # UDP over IPv4
    0x21: 36,   # TCP over IPv6: 16 + 16 + 2 + 2
    0x22: 36,   # UDP over IPv6
    0x31: 216,  # UNIX stream: 108 + 108
    0x32: 216,  # UNIX datagram
}


def _parse_v1(data: bytes) -> tuple[int, tuple | None, tuple | None] | None:
    end = data.find(b"\r\n", 0, _V1_MAX)
    if end < 0:
        _check_v1_prefix(data[:_V1_MAX])
        if len(data) >= _V1_MAX:
            raise ProxyProtocolError(f"PROXY v1 line without CRLF in {_V1_MAX} bytes")
        return None
    line = data[:end]
    _check_v1_prefix(line)
    fields = line.split(b" ")
    if len(fields) < 2 or fields[1] not in _V1_PROTOCOLS:
        raise ProxyProtocolError("PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN")
    if fields[1] == b"UNKNOWN":
        return end + 2, None, None  # the spec says to ignore whatever follows UNKNOWN
    if len(fields) != 6:
        raise ProxyProtocolError("PROXY v1 line needs 6 fields separated by single spaces")
    version = 4 if fields[1] == b"TCP4" else 6
    source = _v1_address(fields[2], fields[4], version)
    destination = _v1_address(fields[3], fields[5], version)
    return end + 2, source, destination


def _check_v1_prefix(line: bytes) -> None:
    """Raise unless `line` (no CRLF in it) can begin a valid v1 line."""
    if not (line.startswith(_V1_PREFIX) or _V1_PREFIX.startswith(line)):
        raise ProxyProtocolError("no PROXY protocol signature")
    rest = line[len(_V1_PREFIX):]
    word, space, _ = rest.partition(b" ")
    if word.endswith(b"\r"):  # a CR waiting for its LF, or followed by junk below
        word, space = word[:-1], b"\r"
    if space and word not in _V1_PROTOCOLS:
        raise ProxyProtocolError("PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN")
    if not space and not any(protocol.startswith(word) for protocol in _V1_PROTOCOLS):
        raise ProxyProtocolError("PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN")
    if not space:
        return
    tail = rest[len(word):]
    if word == b"UNKNOWN":
        # After UNKNOWN anything may follow a space; a CR may only be the end of the line.
        if tail[:1] == b"\r" and len(tail) > 1:
            raise ProxyProtocolError("stray CR in PROXY v1 line")
        return
    # TCP4/TCP6: only address characters, single spaces, at most 6 fields, CR only last.
    if not set(tail) <= _V1_ADDRESS_BYTES:
        raise ProxyProtocolError("bad character in PROXY v1 line")
    if b"\r" in tail[:-1] or b"  " in tail or line.count(b" ") > 5:
        raise ProxyProtocolError("PROXY v1 line needs 6 fields separated by single spaces")


def _v1_address(host: bytes, port: bytes, version: int) -> tuple[str, int]:
    try:
        text = host.decode("ascii")
        if "%" in text:
            raise ValueError("zone index")
        ip = ipaddress.IPv4Address(text) if version == 4 else ipaddress.IPv6Address(text)
    except ValueError:
        raise ProxyProtocolError(f"bad TCP{version} address in PROXY v1 line") from None
    if not _V1_PORT.fullmatch(port) or int(port) > 65535:
        raise ProxyProtocolError("bad port in PROXY v1 line")
    return str(ip), int(port)


def _parse_v2(data: bytes, max_length: int) -> tuple[int, tuple | None, tuple | None] | None:
    signature = data[:len(_V2_SIGNATURE)]
    if signature != _V2_SIGNATURE[:len(signature)]:
        raise ProxyProtocolError("no PROXY protocol signature")
    if len(data) > 12:
        if data[12] >> 4 != 2:
            raise ProxyProtocolError("PROXY v2 header with a version other than 2")
        command = data[12] & 0x0F
        if command not in (_V2_LOCAL, _V2_PROXY):
            raise ProxyProtocolError("PROXY v2 command must be LOCAL or PROXY")
        # LOCAL: "the family is ignored", the receiver uses the real endpoints (§2.2).
        if len(data) > 13 and command == _V2_PROXY and data[13] not in _V2_FAMILIES:
            raise ProxyProtocolError("PROXY v2 address family or transport not defined")
    if len(data) < _V2_HEAD:
        return None
    length = int.from_bytes(data[14:16], "big")
    if length > max_length:
        raise ProxyProtocolError(f"PROXY v2 header longer than {max_length} bytes")
    block_size = _V2_FAMILIES[data[13]] if command == _V2_PROXY else 0
    if length < block_size:
        raise ProxyProtocolError("PROXY v2 length too short for its addresses")
    consumed = _V2_HEAD + length
    if len(data) < consumed:
        return None
    if command == _V2_LOCAL or block_size == 0:
        return consumed, None, None  # LOCAL or UNSPEC: keep the real endpoints
    block = data[_V2_HEAD:consumed]
    _check_tlvs(block[block_size:])
    family = data[13] >> 4
    if family == 1:
        return (consumed, (str(ipaddress.IPv4Address(block[0:4])), _u16(block, 8)),
                (str(ipaddress.IPv4Address(block[4:8])), _u16(block, 10)))
    if family == 2:
        return (consumed, (str(ipaddress.IPv6Address(block[0:16])), _u16(block, 32)),
                (str(ipaddress.IPv6Address(block[16:32])), _u16(block, 34)))
    return consumed, (_unix_path(block[0:108]), 0), (_unix_path(block[108:216]), 0)


def _u16(block: bytes, offset: int) -> int:
    return int.from_bytes(block[offset:offset + 2], "big")


def _unix_path(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def _check_tlvs(tlvs: bytes) -> None:
    """Check the framing of the TLVs after the addresses (type, 16-bit length, value).

    Their contents are not used (a receiver may skip them, §2.2.7); a PP2_TYPE_CRC32C is
    not verified. A vector running past the header means a corrupt or hostile header.
    """
    position = 0
    while position < len(tlvs):
        if position + 3 > len(tlvs):
            raise ProxyProtocolError("truncated TLV in PROXY v2 header")
        position += 3 + _u16(tlvs, position + 1)
        if position > len(tlvs):
            raise ProxyProtocolError("TLV longer than the PROXY v2 header")
