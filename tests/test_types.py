"""The promise of py.typed: mypy finds no error in the package (setup.cfg says which modules
are not typed yet). Run here so that the README's test command checks it too."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_mypy_finds_no_error():
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


# Lower modules know higher ones only as Protocols, and some callables are resolved by name
# (the WebSocket upgrade): nothing in the package makes mypy compare them. Here it does.
CONFORMANCE = '''
import falcon

import hio_http
from hio_http import clienting, hosting, serving, stewarding, websocket, websocket_client

def keeper_host(server: serving.BaseServer) -> hosting.Host:
    return server

def wsgi_host(server: serving.Server) -> stewarding.WSGIHost:
    return server

def upgrade_host(server: serving.BaseServer) -> websocket.UpgradeHost:
    return server

def session_switched(session: websocket.WebSocketSession) -> stewarding.Switched:
    return session

upgrade: stewarding.Upgrade = websocket.upgrade

def upgrading_client(client: clienting.Client) -> websocket_client.UpgradingClient:
    return client

# The Protocols users annotate with take what they are meant to.
falcon_app: hio_http.WSGIApp = falcon.App()

def status(request: hio_http.Request) -> hio_http.CustomResponder:
    return hio_http.CustomResponder(data={"ok": True})

handler: hio_http.BareHandler = status
'''

# The control: a server without a WSGI app is no WSGIHost, and mypy must say so.
NOT_CONFORMING = '''
from hio_http import serving, stewarding

def wsgi_host(server: serving.BareServer) -> stewarding.WSGIHost:
    return server
'''


def run_mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess:
    program = tmp_path / "conformance.py"
    program.write_text(source)
    return subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", str(program)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_higher_modules_are_what_lower_ones_take_them_for(tmp_path):
    result = run_mypy(tmp_path, CONFORMANCE)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


@pytest.mark.slow
def test_the_conformance_check_can_fail(tmp_path):
    result = run_mypy(tmp_path, NOT_CONFORMING)
    assert result.returncode == 1 and "WSGIHost" in result.stdout, result.stdout + result.stderr
