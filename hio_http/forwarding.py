"""Running behind proxies: trusted peers and forwarding headers.

`apply_forwarding` rewrites a WSGI environ from `Forwarded` / `X-Forwarded-*` headers, but
only for a peer listed in `TrustedPeers` (which also says whose PROXY protocol header is read,
proxy_protocol.py). Pure functions: no sockets, no logging. Untrusted or invalid values are
never applied, and forwarding headers from an untrusted peer never reach the application.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable, NamedTuple, Union

from .grammar import QUOTED_STRING_PATTERN, TOKEN_PATTERN

__all__ = ["FORWARDING_KEYS", "PEER_KEY", "TrustedPeers", "apply_forwarding"]

# Theory of operation
# -------------------
# Forwarding. Each proxy on the way appends one hop to the chain: an element of `Forwarded`
# (RFC 7239) or an address of `X-Forwarded-For`, describing the client *it* saw. Only the
# right-most hop was written by our peer; a hop further left is believable only if the
# address to its right is a trusted proxy. So the chain is walked from the right:
#
#   - a hop whose address is trusted -> step left (a trusted proxy wrote the next one);
#   - a hop whose address is untrusted -> it is the client; stop;
#   - a hop without a usable address (`unknown`, `_obfuscated`, missing or invalid) -> the
#     client is hidden; stop and keep REMOTE_ADDR (the peer), since nothing further left
#     can be believed;
#   - every hop trusted -> the left-most hop is the client.
#
# Scheme and host:
#   - `Forwarded`: the `proto` and `host` of the chosen element, the one in which the
#     proxy that received the client's request described that request. If that element
#     lacks one (or its value is invalid) the environ keeps its own value.
#   - `X-Forwarded-Proto` / `-Host` / `-Port`: the right-most entry of each (the value
#     from the nearest proxy, which is our trusted peer); an invalid right-most entry is
#     ignored, not replaced by an entry further left.
# When `Forwarded` is present (even empty or malformed) the X-Forwarded-* headers are not
# used at all: a client could otherwise break `Forwarded` on purpose to fall back to
# X-Forwarded-* headers that a Forwarded-speaking proxy passes through unchecked. A
# malformed `Forwarded` (bad syntax, unterminated quotes) is ignored as a whole, because
# the boundaries between hops, and so who wrote what, are then unknown.

FORWARDING_KEYS = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
                   "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT")

PEER_KEY = "hio_http.peer"  # environ key of the real socket peer, (REMOTE_ADDR, REMOTE_PORT)

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# IPv4-mapped IPv6 addresses (RFC 4291 §2.5.5.2): a dual-stack socket reports IPv4 peers so.
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

_DEFAULT_PORTS = {"http": "80", "https": "443"}


class TrustedPeers:
    """Which peers may speak for clients: from '127.0.0.1,::1,10.0.0.0/8' (CIDR allowed),
    or '*' for all.

    Entries are IP addresses, CIDR networks (no host bits set), 'unix' (peers without an IP
    address: unix-socket connections, whose REMOTE_ADDR is '' or a path) or '*' (anyone).
    An IPv4-mapped IPv6 address (::ffff:a.b.c.d), as a peer or as an entry, stands for the
    IPv4 address it carries. An empty spec trusts nobody.
    """

    __slots__ = ("spec", "everyone", "unix", "_addresses", "_networks")

    def __init__(self, spec: str | Iterable[str] = "127.0.0.1,::1"):
        entries = [spec] if isinstance(spec, str) else list(spec)
        self.everyone = False
        self.unix = False
        self._addresses: set[IPAddress] = set()
        self._networks: list[IPNetwork] = []
        for item in entries:
            if not isinstance(item, str):
                raise TypeError(f"trusted peer entries must be strings, not {item!r}")
            for entry in item.split(","):
                self._add(entry.strip())
        self.spec = ",".join(str(entry).strip() for entry in entries)

    def _add(self, entry: str) -> None:
        if not entry:
            return  # "a,,b" or a trailing comma: nothing to add
        if entry == "*":
            self.everyone = True
            return
        if entry.lower() == "unix":
            self.unix = True
            return
        if "%" in entry:
            # A zone index names an interface of *this* host, which a peer address may not.
            raise ValueError(f"bad trusted peer {entry!r}: zone indexes are not allowed")
        try:
            network = ipaddress.ip_network(entry, strict=True)
        except ValueError as exc:
            raise ValueError(f"bad trusted peer {entry!r}: expected an IP address, a CIDR "
                             f"network, 'unix' or '*' ({exc})") from None
        if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
            network = ipaddress.IPv4Network(
                (int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
        if network.num_addresses == 1:
            self._addresses.add(network.network_address)
        else:
            self._networks.append(network)

    def __contains__(self, address: object) -> bool:
        if self.everyone:
            return True
        ip = _peer_ip(address)
        if ip is None:
            return self.unix
        return ip in self._addresses or any(ip in network for network in self._networks)

    def __repr__(self) -> str:
        return f"TrustedPeers({self.spec!r})"


def apply_forwarding(environ: dict, trusted: TrustedPeers) -> None:
    """Rewrite a WSGI environ in place from the forwarding headers of a trusted peer.

    Always records the real peer as environ['hio_http.peer'] = (REMOTE_ADDR, REMOTE_PORT)
    as found. If REMOTE_ADDR is not in `trusted`, deletes every FORWARDING_KEYS entry so the
    application never sees spoofed values. If it is, applies `Forwarded` (preferred when
    present) or X-Forwarded-For/-Proto/-Host/-Port, as described at the top of this module,
    to REMOTE_ADDR, REMOTE_PORT ('0' when the client's port is not given), wsgi.url_scheme,
    HTTP_HOST, SERVER_NAME and SERVER_PORT. The headers themselves are left in place.
    Call it once per request, before the application.
    """
    peer = environ.get("REMOTE_ADDR", "")
    environ[PEER_KEY] = (peer, environ.get("REMOTE_PORT", ""))
    if peer not in trusted:
        for key in FORWARDING_KEYS:
            environ.pop(key, None)
        return
    if "HTTP_FORWARDED" in environ:
        hops = _parse_forwarded(environ["HTTP_FORWARDED"])
        if hops is None:
            return  # malformed: hop boundaries unknown, so nothing in it is believable
        chosen = _choose_hop(hops, trusted)
        if chosen is None:
            return
        _apply_client(environ, chosen)
        _apply_location(environ, chosen.proto, chosen.host, None)
        return
    if "HTTP_X_FORWARDED_FOR" in environ:
        hops = [_Hop(*_parse_node(entry, bare_ipv6=True), None, None)
                for entry in environ["HTTP_X_FORWARDED_FOR"].split(",")]
        chosen = _choose_hop(hops, trusted)
        if chosen is not None:
            _apply_client(environ, chosen)
    proto = _valid_proto(_rightmost(environ.get("HTTP_X_FORWARDED_PROTO")))
    host = _rightmost(environ.get("HTTP_X_FORWARDED_HOST"))
    if host is not None and _split_host(host) is None:
        host = None
    port = _valid_port(_rightmost(environ.get("HTTP_X_FORWARDED_PORT")))
    _apply_location(environ, proto, host, port)


# ---- forwarding helpers ----

class _Hop(NamedTuple):
    """One proxy's account of its client: address/port (None if not usable), proto, host."""

    address: str | None
    port: str | None
    proto: str | None
    host: str | None


def _peer_ip(address: object) -> IPAddress | None:
    """The IP address of a peer (a mapped IPv6 address as IPv4); None for non-IP peers."""
    if not isinstance(address, str):
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop a socket's zone index
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _choose_hop(hops: list[_Hop], trusted: TrustedPeers) -> _Hop | None:
    """The hop naming the client: walk from the right past trusted addresses."""
    for hop in reversed(hops):
        if hop.address is None or hop.address not in trusted:
            return hop
    return hops[0] if hops else None


def _apply_client(environ: dict, hop: _Hop) -> None:
    if hop.address is None:
        return  # client hidden (`unknown`, obfuscated or invalid): keep the peer
    environ["REMOTE_ADDR"] = hop.address
    # Keeping the proxy's port next to the client's address would pair two different hosts.
    environ["REMOTE_PORT"] = hop.port if hop.port is not None else "0"


def _apply_location(environ: dict, proto: str | None, host: str | None,
                    port: str | None) -> None:
    """Apply a forwarded scheme, Host and port; re-derive SERVER_NAME and SERVER_PORT.

    SERVER_NAME comes from the resulting Host; SERVER_PORT is the forwarded port, else the
    Host's port, else the scheme's default. A forwarded port also rewrites Host's port so
    that PEP 3333 URL reconstruction (which prefers HTTP_HOST) agrees with SERVER_PORT.
    """
    if proto is None and host is None and port is None:
        return  # only the client address was forwarded: what the client asked for stands
    if proto is not None:
        environ["wsgi.url_scheme"] = proto
    if host is not None:
        environ["HTTP_HOST"] = host
    default_port = _DEFAULT_PORTS.get(environ.get("wsgi.url_scheme", "http"), "80")
    split = _split_host(environ.get("HTTP_HOST", ""))
    if split is None:
        if port is not None:  # no believable Host: only the port is known
            environ["SERVER_PORT"] = port
        return
    name, host_port = split
    if port is not None and port != host_port:
        environ["HTTP_HOST"] = name if port == default_port else f"{name}:{port}"
    environ["SERVER_NAME"] = name
    environ["SERVER_PORT"] = port or host_port or default_port


def _rightmost(value: str | None) -> str | None:
    """The entry added by the nearest proxy in a comma-separated header value."""
    if value is None:
        return None
    return value.rsplit(",", 1)[-1].strip(" \t")


def _valid_proto(value: str | None) -> str | None:
    # Only schemes this server can describe; anything else ("javascript", "ftp") is dropped.
    if value is None:
        return None
    value = value.lower()
    return value if value in _DEFAULT_PORTS else None


_PORT = re.compile(r"[0-9]{1,5}")


def _valid_port(value: str | None, zero: bool = False) -> str | None:
    """A decimal port as a canonical string, or None; 0 only where `zero` allows it."""
    if value is None or not _PORT.fullmatch(value):
        return None
    number = int(value)
    if number > 65535 or (number == 0 and not zero):
        return None
    return str(number)


# RFC 3986 reg-name restricted to unreserved characters: no sub-delims (',' ';' '=' ...)
# or percent-escapes, which have no business in a host name and would help header or URL
# injection in applications that echo the host.
_REG_NAME = re.compile(r"[A-Za-z0-9._~-]{1,255}")


def _split_host(value: str) -> tuple[str, str | None] | None:
    """Split a Host value (RFC 9110 §7.2: uri-host [":" port]) into name and port, or
    None if it is not valid. An IPv6 literal keeps its brackets, as SERVER_NAME needs."""
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or not _ipv6_literal(value[1:end]):
            return None
        name, rest = value[:end + 1], value[end + 1:]
    else:
        name = value.partition(":")[0]
        if not _REG_NAME.fullmatch(name):
            return None
        rest = value[len(name):]
    if not rest:
        return name, None
    if rest[0] != ":":
        return None
    port = _valid_port(rest[1:])
    return (name, port) if port is not None else None


def _ipv6_literal(text: str) -> bool:
    if "%" in text:  # a zone index names an interface of the host that wrote it
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _parse_node(text: str, bare_ipv6: bool = False) -> tuple[str | None, str | None]:
    """(address, port) from a node (RFC 7239 §6); None for parts that are not usable.

    `unknown` and obfuscated `_names` give no address; neither does anything invalid.
    X-Forwarded-For adds no grammar of its own, so there `bare_ipv6` also admits the
    unbracketed IPv6 addresses that proxies write.
    """
    text = text.strip(" \t")
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not _ipv6_literal(text[1:end]):
            return None, None
        address, rest = text[1:end], text[end + 1:]
    elif bare_ipv6 and text.count(":") > 1:
        return (_canonical(text) if _ipv6_literal(text) else None), None
    else:
        address = text.partition(":")[0]
        rest = text[len(address):]
    canonical = _canonical(address)
    if canonical is None:
        return None, None
    if not rest:
        return canonical, None
    if rest[0] != ":":
        return None, None
    # An obfuscated port ("_abc", RFC 7239 §6.3) or an invalid one is simply not known.
    return canonical, _valid_port(rest[1:], zero=True)


def _canonical(text: str) -> str | None:
    """The canonical text of an IP address, or None (no zone indexes, no host names)."""
    if "%" in text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


# token = quoted-string pairs (obs-text included, as header values are latin-1 decoded in
# the environ).
_PAIR = re.compile(rf"({TOKEN_PATTERN})=({TOKEN_PATTERN}|{QUOTED_STRING_PATTERN})")
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


def _parse_forwarded(value: str) -> list[_Hop] | None:
    """The hops of a Forwarded value (RFC 7239 §4), left to right; None if malformed.

    Optional whitespace is accepted around ',' (the list rule) and also around ';'.
    Empty list elements are skipped (RFC 9110 §5.6.1). An element that repeats a
    parameter (§4: MUST NOT) becomes a hop with nothing usable in it.
    """
    hops: list[_Hop] = []
    position, length = 0, len(value)
    while True:
        position = _skip_ows(value, position)
        if position >= length:
            return hops
        if value[position] == ",":
            position += 1
            continue
        pairs: dict[str, str] = {}
        repeated = False
        while True:
            match = _PAIR.match(value, position)
            if match is not None:
                name, raw = match.group(1).lower(), match.group(2)
                repeated = repeated or name in pairs
                pairs[name] = _QUOTED_PAIR.sub(r"\1", raw[1:-1]) if raw[0] == '"' else raw
                position = match.end()
            position = _skip_ows(value, position)
            if position < length and value[position] == ";":
                position = _skip_ows(value, position + 1)
                continue
            if position < length and value[position] != ",":
                return None  # junk where ';', ',' or the end should be
            break
        hops.append(_forwarded_hop(pairs, repeated))
        if position >= length:
            return hops
        position += 1  # the ',' ending this element


def _skip_ows(value: str, position: int) -> int:
    while position < len(value) and value[position] in " \t":
        position += 1
    return position


def _forwarded_hop(pairs: dict[str, str], repeated: bool) -> _Hop:
    if repeated:
        return _Hop(None, None, None, None)
    address, port = _parse_node(pairs["for"]) if "for" in pairs else (None, None)
    host = pairs.get("host")
    if host is not None and _split_host(host) is None:
        host = None
    return _Hop(address, port, _valid_proto(pairs.get("proto")), host)

