"""Behind proxies, over real sockets: forwarded headers from trusted peers only, PROXY protocol,
and a real nginx in front of the hio-http command line."""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import free_port, read_until_closed
from test_cli import start, stop


def who_app(environ, start_response):
    seen = {key: environ.get(key) for key in (
        "REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTP_HOST", "HTTP_X_FORWARDED_FOR",
        "HTTP_X_FORWARDED_PROTO", "HTTP_FORWARDED")}
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def ask(address, request, source="127.0.0.1"):
    """Send raw bytes from `source` (any 127.0.0.0/8 address) and decode the JSON answer."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect(address)
    sock.sendall(request)
    data = read_until_closed(sock)
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, json.loads(body) if head.startswith(b"HTTP/1.1 200") else None


FORWARDED_REQUEST = (b"GET / HTTP/1.1\r\nHost: inner\r\nConnection: close\r\n"
                     b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
                     b"X-Forwarded-Host: shop.example\r\n\r\n")


def test_forwarded_headers_from_a_trusted_peer_are_applied(serve):
    server = serve(who_app)  # trusts 127.0.0.1 by default
    _, seen = ask(server.address[:2], FORWARDED_REQUEST)
    assert seen["REMOTE_ADDR"] == "203.0.113.7"
    assert seen["wsgi.url_scheme"] == "https"
    assert seen["HTTP_HOST"] == "shop.example"


def test_forwarded_headers_from_others_are_removed(serve):
    server = serve(who_app, forwarded_allow_ips="127.0.0.1")
    _, seen = ask(server.address[:2], FORWARDED_REQUEST, source="127.0.0.9")
    assert seen["REMOTE_ADDR"] == "127.0.0.9"
    assert seen["wsgi.url_scheme"] == "http" and seen["HTTP_HOST"] == "inner"
    assert seen["HTTP_X_FORWARDED_FOR"] is None and seen["HTTP_X_FORWARDED_PROTO"] is None


def test_rfc7239_forwarded_header(serve):
    server = serve(who_app)
    _, seen = ask(server.address[:2], b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b'Forwarded: for="[2001:db8::1]:4711";proto=https\r\n\r\n')
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("2001:db8::1", "4711")
    assert seen["wsgi.url_scheme"] == "https"


def test_proxy_protocol_v1_from_a_trusted_peer(serve):
    server = serve(who_app, proxy_protocol=True)
    _, seen = ask(server.address[:2], b"PROXY TCP4 198.51.100.4 10.0.0.1 5555 80\r\n"
                  b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("198.51.100.4", "5555")


def test_proxy_protocol_v2_split_across_packets(serve):
    server = serve(who_app, proxy_protocol=True)
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    addresses = socket.inet_aton("192.0.2.10") + socket.inet_aton("10.0.0.1") + struct.pack(
        "!HH", 40000, 443)
    header = signature + b"\x21\x11" + struct.pack("!H", len(addresses)) + addresses
    sock = socket.create_connection(server.address[:2], timeout=5)
    for piece in (header[:7], header[7:20], header[20:] + b"GET / HTTP/1.1\r\n",
                  b"Host: x\r\nConnection: close\r\n\r\n"):
        sock.sendall(piece)
        time.sleep(0.02)
    seen = json.loads(read_until_closed(sock).partition(b"\r\n\r\n")[2])
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("192.0.2.10", "40000")


def test_proxy_protocol_from_an_untrusted_peer_is_refused(serve):
    server = serve(who_app, proxy_protocol=True, forwarded_allow_ips="127.0.0.1")
    head, _ = ask(server.address[:2], b"PROXY TCP4 198.51.100.4 10.0.0.1 5555 80\r\n"
                  b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.9")
    assert head.startswith(b"HTTP/1.1 501 ")  # parsed as HTTP: "PROXY" is no method of ours


def test_malformed_proxy_header_closes_the_connection(serve):
    server = serve(who_app, proxy_protocol=True)
    sock = socket.create_connection(server.address[:2], timeout=5)
    sock.sendall(b"PROXY TCP4 not-an-ip 10.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n\r\n")
    assert read_until_closed(sock) == b""


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                  else None)


@pytest.mark.slow
@pytest.mark.skipif(NGINX is None and not os.environ.get("CI"),
                    reason="nginx is not installed here (.ci/run installs it; CI runs this test)")
def test_behind_a_real_nginx(tmp_path):
    (tmp_path / "whoapp.py").write_text(textwrap.dedent('''
        import json

        def app(environ, start_response):
            seen = {key: environ.get(key) for key in ("REMOTE_ADDR", "wsgi.url_scheme",
                                                      "HTTP_HOST", "HTTP_X_FORWARDED_FOR")}
            body = json.dumps(seen).encode()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]
    '''))
    backend = free_port()
    front = free_port()
    process, _ = start([sys.executable, "-m", "hio_http", "--bind", f"127.0.0.1:{backend}",
                        "--forwarded-allow-ips", "127.0.0.1", "whoapp:app"], cwd=tmp_path)
    conf = tmp_path / "nginx.conf"
    conf.write_text(textwrap.dedent(f'''
        daemon off;
        pid {tmp_path}/nginx.pid;
        error_log {tmp_path}/error.log;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {tmp_path}/body;
            proxy_temp_path {tmp_path}/proxy;
            fastcgi_temp_path {tmp_path}/fastcgi;
            uwsgi_temp_path {tmp_path}/uwsgi;
            scgi_temp_path {tmp_path}/scgi;
            server {{
                listen 127.0.0.1:{front};
                location / {{
                    proxy_pass http://127.0.0.1:{backend};
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                    proxy_set_header Host $host;
                    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                    proxy_set_header X-Forwarded-Proto https;
                }}
            }}
        }}
    '''))
    nginx = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", front), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        request = b"GET / HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n"
        # Through nginx from 127.0.0.5: the client's address and scheme arrive.
        _, seen = ask(("127.0.0.1", front), request, source="127.0.0.5")
        assert seen["REMOTE_ADDR"] == "127.0.0.5"
        assert seen["wsgi.url_scheme"] == "https"
        assert seen["HTTP_HOST"] == "shop.example"
        # A spoofed X-Forwarded-For through nginx: nginx appends the real client, we take it.
        spoofed = request.replace(b"Connection: close", b"Connection: close\r\n"
                                  b"X-Forwarded-For: 6.6.6.6")
        _, seen = ask(("127.0.0.1", front), spoofed, source="127.0.0.5")
        assert seen["REMOTE_ADDR"] == "127.0.0.5"
        # Straight to the backend from an untrusted peer: the spoofed header is dropped.
        _, seen = ask(("127.0.0.1", backend), spoofed, source="127.0.0.9")
        assert seen["REMOTE_ADDR"] == "127.0.0.9"
        assert seen["HTTP_X_FORWARDED_FOR"] is None
        assert seen["wsgi.url_scheme"] == "http"
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        stop(process)
