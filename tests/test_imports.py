"""What importing the package costs: neither Falcon nor wsproto until they are used."""

import subprocess
import sys


def imported_after(code: str) -> set:
    result = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, timeout=60, check=True)
    return set(result.stdout.split())


def test_import_hio_http_loads_neither_falcon_nor_wsproto():
    modules = imported_after("import hio_http\nfrom hio_http import Server, Client, Doist")
    assert "falcon" not in modules and "wsproto" not in modules
    assert "hio_http.serving" in modules  # the server itself is there


def test_lazy_names_load_on_first_use():
    modules = imported_after("from hio_http import StaticSink\nassert StaticSink.__name__")
    assert "falcon" in modules


def test_unknown_names_are_attribute_errors():
    import hio_http
    try:
        hio_http.NoSuchThing
    except AttributeError as ex:
        assert "NoSuchThing" in str(ex)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


UPGRADE_WITHOUT_ENDPOINTS = """
import socket, sys
from hio_http.testing import serve_in_thread

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain"]

with serve_in_thread(app) as server:
    sock = socket.create_connection(server.address[:2], timeout=5)
    sock.sendall(b"GET /ws HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n")
    answer = sock.recv(65536)
print("status-" + answer.split(b" ")[1].decode())
"""


def test_a_server_without_websocket_endpoints_refuses_upgrades_without_loading_wsproto():
    modules = imported_after(UPGRADE_WITHOUT_ENDPOINTS)
    assert "status-404" in modules  # printed beside the module names
    assert "wsproto" not in modules and "hio_http.websocket" not in modules


def test_a_server_needs_an_app():
    import pytest
    from hio_http import Server
    with pytest.raises(TypeError, match="Server needs a WSGI app"):
        Server(None)
