"""Shared fixtures: apps wrapped in wsgiref's validator, servers on free ports, raw clients."""

import contextlib
import http.server
import socket
import ssl
import subprocess
import threading
import time
from wsgiref.validate import validator

import pytest
import waitress



@pytest.fixture
def serve(hio_server):
    """serve(app, **settings) -> a server running in a background thread, closed at the end
    (the plugin's `hio_server`).

    Every app is wrapped in wsgiref's validator; with warnings as errors (setup.cfg) any
    PEP 3333 violation by server or app fails the request, and so the test.
    """
    def start(app, validate=True, **settings):
        return hio_server(validator(app) if validate else app, **settings)

    return start


def raw_connect(server, timeout=5.0):
    """A blocking client socket connected to `server`."""
    host, port = server.address[:2]
    sock = socket.create_connection((host, port), timeout=timeout)
    return sock


def read_until_closed(sock, limit=10 * 1024 * 1024, timeout=5.0):
    """Everything the server sends until it closes the connection (or the timeout)."""
    sock.settimeout(timeout)
    chunks = []
    total = 0
    deadline = time.monotonic() + timeout
    while total < limit and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def is_closed(sock, timeout=3.0):
    """True when the server has closed the connection (EOF or reset) within `timeout`."""
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and localhost: (cert path, key path)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


def server_context(certificate):
    """A server-side TLS context for `certificate`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


@contextlib.contextmanager
def stdlib_server(handler_class):
    """The standard library's threading HTTP server on a free port, for clients to meet a
    server other than ours; yields its URL and always shuts it down."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def free_port() -> int:
    """A port that was free a moment ago, for a program that must be told its port before it
    binds (nginx, hio): another process could take it in between, which is why our own servers
    bind port 0 and report the port they got instead."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def refusing_port():
    """A port on 127.0.0.1 held bound but not listening for the test: connections to it are
    refused, and nothing else can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextlib.contextmanager
def waitress_server(app):
    """waitress in a thread. Its loop runs until its last connection is gone, so tests close
    their clients first; close() then ends it."""
    server = waitress.create_server(app, host="127.0.0.1", port=0)
    closing = threading.Event()

    def run():
        try:
            server.run()
        except OSError:  # close() took the sockets from under its select()
            if not closing.is_set():
                raise

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        closing.set()
        server.close()
        thread.join(5)


def wait_for(condition, timeout=15.0):
    """Poll `condition` until it returns something true (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


class ConnectionEvents:
    """A net.Connection handler that only counts what it is told: drains and closes."""

    def __init__(self):
        self.drains = 0
        self.closes = 0

    def connected(self): pass

    def received(self, data): pass

    def ended(self): pass

    def drained(self):
        self.drains += 1

    def closed(self):
        self.closes += 1
