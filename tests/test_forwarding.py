"""Trusted peers and forwarding headers (hio_http.forwarding)."""

from __future__ import annotations

import pytest

from hio_http.forwarding import FORWARDING_KEYS, TrustedPeers, apply_forwarding


# ---- TrustedPeers ----

@pytest.mark.parametrize("spec, address, expected", [
    ("127.0.0.1,::1", "127.0.0.1", True),
    ("127.0.0.1,::1", "::1", True),
    ("127.0.0.1,::1", "127.0.0.2", False),
    ("127.0.0.1,::1", "::2", False),
    ("10.0.0.0/8", "10.255.0.1", True),
    ("10.0.0.0/8", "11.0.0.1", False),
    ("192.168.1.0/24", "192.168.1.255", True),
    ("192.168.1.0/24", "192.168.2.0", False),
    ("2001:db8::/32", "2001:db8:1::5", True),
    ("2001:db8::/32", "2001:db9::1", False),
    ("2001:db8::1", "2001:DB8:0::1", True),             # compared as addresses, not text
    ("127.0.0.1", "::ffff:127.0.0.1", True),            # mapped peer = its IPv4 address
    ("10.0.0.0/8", "::ffff:10.9.8.7", True),
    ("::ffff:127.0.0.1", "127.0.0.1", True),            # mapped entry = its IPv4 address
    ("::ffff:10.0.0.0/104", "10.1.2.3", True),
    ("::ffff:10.0.0.0/104", "::ffff:10.1.2.3", True),
    ("::ffff:10.0.0.0/104", "11.1.2.3", False),
    ("::/0", "::ffff:1.2.3.4", False),                  # an IPv6 rule does not cover IPv4
    ("0.0.0.0/0", "2001:db8::1", False),
    ("fe80::/10", "fe80::1%eth0", True),                # a socket's zone index is ignored
    ("*", "203.0.113.9", True),
    ("*", "", True),
    ("*", "/run/app.sock", True),
    ("127.0.0.1", "", False),                           # unix peers need '*' or 'unix'
    ("127.0.0.1", "/run/app.sock", False),
    ("127.0.0.1", "localhost", False),
    ("unix", "", True),
    ("unix", "/run/app.sock", True),
    ("unix", "127.0.0.1", False),
    ("UNIX, 10.0.0.1", "10.0.0.1", True),
    (" 10.0.0.1 , ,", "10.0.0.1", True),                # spaces and empty entries
    ("", "127.0.0.1", False),                           # empty spec trusts nobody
    (["10.0.0.1", "192.168.0.0/16,unix"], "192.168.3.4", True),
    (["10.0.0.1", "192.168.0.0/16,unix"], "", True),
    (["10.0.0.1", "192.168.0.0/16,unix"], "10.0.0.2", False),
    ((), "127.0.0.1", False),
])
def test_trusted_peers(spec, address, expected):
    assert (address in TrustedPeers(spec)) is expected


def test_trusted_peers_default_is_loopback():
    trusted = TrustedPeers()
    assert "127.0.0.1" in trusted and "::1" in trusted
    assert "10.0.0.1" not in trusted and "" not in trusted


@pytest.mark.parametrize("spec", [
    "10.0.0.1/8",          # host bits set: probably a typo for 10.0.0.0/8
    "localhost",           # names would need DNS, and DNS can lie
    "10.0.0.0/33",
    "1.2.3",
    "01.2.3.4",            # leading zeros: octal to some parsers
    "fe80::1%eth0",
    "*x",
    "127.0.0.1;10.0.0.1",
    "[::1]",
    "127.0.0.1, bogus",
    ["127.0.0.1", "bogus"],
])
def test_trusted_peers_bad_spec(spec):
    with pytest.raises(ValueError) as info:
        TrustedPeers(spec)
    bad = spec if isinstance(spec, str) else spec[-1]
    assert bad.split(",")[-1].strip() in str(info.value)


def test_trusted_peers_rejects_non_strings():
    with pytest.raises(TypeError):
        TrustedPeers([b"127.0.0.1"])


# ---- apply_forwarding ----

PROXY = "10.0.0.2"
TRUSTED = TrustedPeers("10.0.0.0/8")


def base_environ(**extra) -> dict:
    environ = {
        "REMOTE_ADDR": PROXY, "REMOTE_PORT": "5555", "SERVER_NAME": "0.0.0.0",
        "SERVER_PORT": "8000", "HTTP_HOST": "example.com", "wsgi.url_scheme": "http",
        "PATH_INFO": "/",
    }
    environ.update(extra)
    return environ


@pytest.mark.parametrize("headers, changes", [
    # X-Forwarded-For: the client address
    ({"HTTP_X_FORWARDED_FOR": "203.0.113.7"},
     {"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "0"}),
    ({"HTTP_X_FORWARDED_FOR": "198.51.100.1, 203.0.113.7, 10.0.0.5"},   # trusted hop skipped
     {"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "0"}),
    ({"HTTP_X_FORWARDED_FOR": "1.1.1.1,203.0.113.7"},                   # client-written left
     {"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "0"}),
    ({"HTTP_X_FORWARDED_FOR": "10.1.1.1, 10.0.0.5"},                    # all trusted
     {"REMOTE_ADDR": "10.1.1.1", "REMOTE_PORT": "0"}),
    ({"HTTP_X_FORWARDED_FOR": "203.0.113.7, unknown"}, {}),             # hidden: keep peer
    ({"HTTP_X_FORWARDED_FOR": "203.0.113.7, 10.0.0.5, garbage"}, {}),
    ({"HTTP_X_FORWARDED_FOR": "not-an-ip"}, {}),
    ({"HTTP_X_FORWARDED_FOR": "203.0.113.7,"}, {}),                     # empty nearest hop
    ({"HTTP_X_FORWARDED_FOR": "203.0.113.300"}, {}),
    ({"HTTP_X_FORWARDED_FOR": "fe80::1%eth0"}, {}),
    ({"HTTP_X_FORWARDED_FOR": "2001:DB8::1"},
     {"REMOTE_ADDR": "2001:db8::1", "REMOTE_PORT": "0"}),
    ({"HTTP_X_FORWARDED_FOR": "[2001:db8::1]:4711"},
     {"REMOTE_ADDR": "2001:db8::1", "REMOTE_PORT": "4711"}),
    ({"HTTP_X_FORWARDED_FOR": "203.0.113.7:1234"},
     {"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "1234"}),
    ({"HTTP_X_FORWARDED_FOR": "203.0.113.7:99999"},                     # bad port: unknown
     {"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "0"}),
    # X-Forwarded-Proto / -Host / -Port
    ({"HTTP_X_FORWARDED_PROTO": "https"},
     {"wsgi.url_scheme": "https", "SERVER_NAME": "example.com", "SERVER_PORT": "443"}),
    ({"HTTP_X_FORWARDED_PROTO": "HTTPS"},
     {"wsgi.url_scheme": "https", "SERVER_NAME": "example.com", "SERVER_PORT": "443"}),
    ({"HTTP_X_FORWARDED_PROTO": "http, https"},                         # nearest proxy's
     {"wsgi.url_scheme": "https", "SERVER_NAME": "example.com", "SERVER_PORT": "443"}),
    ({"HTTP_X_FORWARDED_PROTO": "ftp"}, {}),
    ({"HTTP_X_FORWARDED_PROTO": "https, javascript"}, {}),              # never falls back left
    ({"HTTP_X_FORWARDED_HOST": "public.example:8443"},
     {"HTTP_HOST": "public.example:8443", "SERVER_NAME": "public.example",
      "SERVER_PORT": "8443"}),
    ({"HTTP_X_FORWARDED_HOST": "public.example", "HTTP_X_FORWARDED_PROTO": "https"},
     {"HTTP_HOST": "public.example", "SERVER_NAME": "public.example", "SERVER_PORT": "443",
      "wsgi.url_scheme": "https"}),
    ({"HTTP_X_FORWARDED_HOST": "[2001:db8::5]:8080"},
     {"HTTP_HOST": "[2001:db8::5]:8080", "SERVER_NAME": "[2001:db8::5]",
      "SERVER_PORT": "8080"}),
    ({"HTTP_X_FORWARDED_HOST": "evil.example/path"}, {}),
    ({"HTTP_X_FORWARDED_HOST": "bad host"}, {}),
    ({"HTTP_X_FORWARDED_HOST": "a.example\r\nX-Injected: 1"}, {}),
    ({"HTTP_X_FORWARDED_HOST": "user@evil.example"}, {}),
    ({"HTTP_X_FORWARDED_HOST": "public.example:65536"}, {}),
    ({"HTTP_X_FORWARDED_HOST": "[fe80::1%eth0]"}, {}),
    ({"HTTP_X_FORWARDED_PORT": "8443"},
     {"HTTP_HOST": "example.com:8443", "SERVER_NAME": "example.com", "SERVER_PORT": "8443"}),
    ({"HTTP_X_FORWARDED_PORT": "443", "HTTP_X_FORWARDED_PROTO": "https",
      "HTTP_X_FORWARDED_HOST": "public.example:8000"},
     {"HTTP_HOST": "public.example", "SERVER_NAME": "public.example", "SERVER_PORT": "443",
      "wsgi.url_scheme": "https"}),
    ({"HTTP_X_FORWARDED_PORT": "99999"}, {}),
    ({"HTTP_X_FORWARDED_PORT": "0"}, {}),
    ({"HTTP_X_FORWARDED_FOR": "203.0.113.7", "HTTP_X_FORWARDED_PROTO": "https",
      "HTTP_X_FORWARDED_HOST": "shop.example"},
     {"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "0", "wsgi.url_scheme": "https",
      "HTTP_HOST": "shop.example", "SERVER_NAME": "shop.example", "SERVER_PORT": "443"}),
    # Forwarded (RFC 7239)
    ({"HTTP_FORWARDED": 'for="[2001:db8::1]:4711";proto=https;host=shop.example'},
     {"REMOTE_ADDR": "2001:db8::1", "REMOTE_PORT": "4711", "wsgi.url_scheme": "https",
      "HTTP_HOST": "shop.example", "SERVER_NAME": "shop.example", "SERVER_PORT": "443"}),
    ({"HTTP_FORWARDED": "for=192.0.2.60;proto=http;by=203.0.113.43"},
     {"REMOTE_ADDR": "192.0.2.60", "REMOTE_PORT": "0", "SERVER_NAME": "example.com",
      "SERVER_PORT": "80"}),
    ({"HTTP_FORWARDED": "for=198.51.100.1;proto=http, "
                        "for=203.0.113.7;proto=https;host=a.example, for=10.0.0.5"},
     {"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "0", "wsgi.url_scheme": "https",
      "HTTP_HOST": "a.example", "SERVER_NAME": "a.example", "SERVER_PORT": "443"}),
    ({"HTTP_FORWARDED": "for=10.9.9.9;proto=https, for=10.0.0.5"},        # all trusted
     {"REMOTE_ADDR": "10.9.9.9", "REMOTE_PORT": "0", "wsgi.url_scheme": "https",
      "SERVER_NAME": "example.com", "SERVER_PORT": "443"}),
    ({"HTTP_FORWARDED": "for=_hidden;proto=https"},                      # obfuscated
     {"wsgi.url_scheme": "https", "SERVER_NAME": "example.com", "SERVER_PORT": "443"}),
    ({"HTTP_FORWARDED": "for=203.0.113.7, for=unknown"}, {}),
    ({"HTTP_FORWARDED": "for=203.0.113.7, proto=https"},                 # no for: hidden
     {"wsgi.url_scheme": "https", "SERVER_NAME": "example.com", "SERVER_PORT": "443"}),
    ({"HTTP_FORWARDED": 'for="192.0.2.43:_abc"'},                        # obfuscated port
     {"REMOTE_ADDR": "192.0.2.43", "REMOTE_PORT": "0"}),
    ({"HTTP_FORWARDED": "for=203.0.113.7;proto=gopher"},
     {"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "0"}),
    ({"HTTP_FORWARDED": 'for=203.0.113.7;host="evil host"'},
     {"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "0"}),
    ({"HTTP_FORWARDED": 'for=203.0.113.7;host="shop.example:8443"'},
     {"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "0", "HTTP_HOST": "shop.example:8443",
      "SERVER_NAME": "shop.example", "SERVER_PORT": "8443"}),
    ({"HTTP_FORWARDED": "For=203.0.113.7;PROTO=HTTPS"},                  # names any case
     {"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "0", "wsgi.url_scheme": "https",
      "SERVER_NAME": "example.com", "SERVER_PORT": "443"}),
    ({"HTTP_FORWARDED": "for=198.51.100.1 ; proto=https ,  ,for=10.0.0.5"},
     {"REMOTE_ADDR": "198.51.100.1", "REMOTE_PORT": "0", "wsgi.url_scheme": "https",
      "SERVER_NAME": "example.com", "SERVER_PORT": "443"}),
    ({"HTTP_FORWARDED": r'for="\1\98.51.100.1"'},                        # quoted-pairs
     {"REMOTE_ADDR": "198.51.100.1", "REMOTE_PORT": "0"}),
    ({"HTTP_FORWARDED": 'for="2001:db8::1"'}, {}),                       # IPv6 needs [ ]
    ({"HTTP_FORWARDED": "for=[2001:db8::1]"}, {}),                       # ... and quotes
    ({"HTTP_FORWARDED": "for=203.0.113.7;for=198.51.100.1"}, {}),        # repeated parameter
    ({"HTTP_FORWARDED": 'for="203.0.113.7, for=198.51.100.1'}, {}),      # unterminated quote
    ({"HTTP_FORWARDED": "for=203.0.113.7 junk"}, {}),
    ({"HTTP_FORWARDED": "for=203.0.113.9", "HTTP_X_FORWARDED_FOR": "198.51.100.1",
      "HTTP_X_FORWARDED_PROTO": "https"},                                # Forwarded wins
     {"REMOTE_ADDR": "203.0.113.9", "REMOTE_PORT": "0"}),
    ({"HTTP_FORWARDED": 'for="oops', "HTTP_X_FORWARDED_FOR": "198.51.100.1"}, {}),
    ({"HTTP_FORWARDED": "", "HTTP_X_FORWARDED_FOR": "198.51.100.1"}, {}),
])
def test_forwarding_from_trusted_peer(headers, changes):
    environ = base_environ(**headers)
    apply_forwarding(environ, TRUSTED)
    # Exactly these changes: every other key, the headers included, is left as it was.
    assert environ == {**base_environ(**headers), **changes,
                       "hio_http.peer": (PROXY, "5555")}


def test_forwarding_without_host_header_sets_only_the_port():
    environ = base_environ(HTTP_X_FORWARDED_PORT="8443", HTTP_X_FORWARDED_PROTO="https")
    del environ["HTTP_HOST"]
    apply_forwarding(environ, TRUSTED)
    assert environ["SERVER_NAME"] == "0.0.0.0"
    assert environ["SERVER_PORT"] == "8443"
    assert environ["wsgi.url_scheme"] == "https"
    assert "HTTP_HOST" not in environ


ALL_HEADERS = {
    "HTTP_FORWARDED": "for=198.51.100.66;proto=https;host=evil.example",
    "HTTP_X_FORWARDED_FOR": "198.51.100.66",
    "HTTP_X_FORWARDED_PROTO": "https",
    "HTTP_X_FORWARDED_HOST": "evil.example",
    "HTTP_X_FORWARDED_PORT": "8443",
}


@pytest.mark.parametrize("peer, spec", [
    ("203.0.113.50", "10.0.0.0/8"),
    ("10.0.0.2", "10.0.0.3"),
    ("::ffff:203.0.113.50", "10.0.0.0/8"),
    ("", "127.0.0.1,::1"),                      # a unix-socket peer without 'unix'
    ("/run/app.sock", "10.0.0.0/8"),
])
def test_untrusted_peer_loses_forwarding_headers(peer, spec):
    environ = base_environ(REMOTE_ADDR=peer, **ALL_HEADERS)
    apply_forwarding(environ, TrustedPeers(spec))
    assert set(FORWARDING_KEYS) == set(ALL_HEADERS)
    assert environ == {**base_environ(REMOTE_ADDR=peer), "hio_http.peer": (peer, "5555")}


@pytest.mark.parametrize("spec", ["unix", "*"])
def test_unix_peer_trusted_when_listed(spec):
    environ = base_environ(REMOTE_ADDR="", REMOTE_PORT="0",
                           HTTP_X_FORWARDED_FOR="203.0.113.7")
    apply_forwarding(environ, TrustedPeers(spec))
    assert environ["REMOTE_ADDR"] == "203.0.113.7"
    assert environ["hio_http.peer"] == ("", "0")


def test_trusted_peer_with_no_headers_changes_nothing():
    environ = base_environ()
    apply_forwarding(environ, TRUSTED)
    assert environ == {**base_environ(), "hio_http.peer": (PROXY, "5555")}
