"""Listening on IPv6, on unix sockets, and with TLS."""

import http.client
import socket

import pytest
import requests

from conftest import server_context


def app(environ, start_response):
    body = f"{environ['wsgi.url_scheme']} {environ['REMOTE_ADDR']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def test_ipv6_loopback(serve):
    try:
        server = serve(app, host="::1")
    except OSError as ex:  # pragma: no cover - depends on the machine
        pytest.skip(f"no IPv6 loopback here: {ex}")
    assert server.url.startswith("http://[::1]:")
    assert requests.get(server.url, timeout=5).text == "http ::1"


def test_unix_socket(serve, tmp_path):
    path = str(tmp_path / "hio.sock")
    server = serve(app, unix=path)
    assert server.address == path
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 200
        assert response.read() == b"http "  # a unix peer has no address


def test_tls_with_requests(serve, certificate):
    server = serve(app, ssl_context=server_context(certificate))
    assert server.url.startswith("https://127.0.0.1:")
    session = requests.Session()
    for _ in range(3):  # keep-alive over TLS
        response = session.get(server.url, verify=certificate[0], timeout=5)
        assert response.text == "https 127.0.0.1"


def test_tls_large_upload(serve, certificate):
    def echo_size(environ, start_response):
        size = len(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        body = str(size).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    server = serve(echo_size, ssl_context=server_context(certificate))
    response = requests.post(server.url, data=b"u" * 3_000_000, verify=certificate[0],
                             timeout=10)
    assert response.text == "3000000"


def test_stalled_tls_handshake_is_closed_and_others_served(serve, certificate):
    server = serve(app, ssl_context=server_context(certificate), handshake_timeout=0.4)
    stalled = socket.create_connection(server.address[:2], timeout=5)
    assert requests.get(server.url, verify=certificate[0], timeout=5).status_code == 200
    stalled.settimeout(5)
    assert stalled.recv(1024) == b""  # closed by the server at its handshake deadline


def test_plain_http_to_tls_port_does_not_hurt(serve, certificate):
    server = serve(app, ssl_context=server_context(certificate))
    with socket.create_connection(server.address[:2], timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            sock.recv(1024)  # whatever the TLS layer answers, then the connection ends
        except ConnectionResetError:
            pass
    assert requests.get(server.url, verify=certificate[0], timeout=5).status_code == 200
