"""The command line as operators use it: options from flags, environment and config file,
access logs, graceful SIGTERM, workers that come back, and one-line errors."""

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from conftest import wait_for
from test_cli import start, stop

APP = textwrap.dedent('''
    import time

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            start_response("200 OK", [("Content-Type", "text/plain")])

            def body():
                until = time.monotonic() + 1.5
                while time.monotonic() < until:
                    yield b""  # not yet: the loop keeps serving meanwhile
                yield b"finally done"

            return body()
        if environ["PATH_INFO"] == "/pid":
            import os
            body = str(os.getpid()).encode()
        else:
            body = b"hello"
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    def create_app():
        return app
''')


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "opsapp.py").write_text(APP)
    return tmp_path


def run(args, cwd, env=None, **kwa):
    return start([sys.executable, "-m", "hio_http", *args], cwd=cwd, env=env, **kwa)


def test_precedence_flag_over_environment_over_config_file(app_dir):
    (app_dir / "hio.toml").write_text('server-header = "from-file"\nport = 0\n'
                                      'app = "opsapp:app"\n')
    env = dict(os.environ, HIO_HTTP_SERVER_HEADER="from-env", HIO_HTTP_IDLE_TIMEOUT="5")
    cases = [([], {}, "from-file"), ([], env, "from-env"),
             (["--server-header", "from-flag"], env, "from-flag")]
    for flags, environ, expected in cases:
        process, url = run(["--config", "hio.toml", *flags], app_dir, env=environ or None)
        try:
            assert requests.get(url, timeout=5).headers["Server"] == expected
        finally:
            assert stop(process) == 0


def test_factory_and_app_dir(app_dir, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    process, url = run(["--port", "0", "--app-dir", str(app_dir), "--factory",
                        "opsapp:create_app"], elsewhere)
    try:
        assert requests.get(url, timeout=5).text == "hello"
    finally:
        stop(process)


def test_access_log_lines_in_combined_format(app_dir):
    process, url = run(["--port", "0", "--access-log", "-", "opsapp:app"], app_dir)
    try:
        requests.get(url + "/hello?x=1", headers={"User-Agent": "probe/1.0",
                                                  "Referer": "http://ref/"}, timeout=5)
    finally:
        stop(process)
    output = process.stdout.read()
    line = next(line for line in output.splitlines() if "/hello?x=1" in line)
    assert re.match(r'127\.0\.0\.1 - - \[[^\]]+\] "GET /hello\?x=1 HTTP/1\.1" 200 5 '
                    r'"http://ref/" "probe/1\.0"$', line), line


def test_sigterm_lets_the_request_in_flight_finish(app_dir):
    process, url = run(["--port", "0", "--graceful-timeout", "10", "opsapp:app"], app_dir)
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    assert data.endswith(b"c\r\nfinally done\r\n0\r\n\r\n")  # complete, then closed
    assert process.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2)


def children_of(pid):
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(child) for child in path.read_text().split()}

def test_workers_share_the_port_and_a_killed_worker_is_replaced(app_dir):
    process, url = run(["--port", "0", "--workers", "2", "opsapp:app"], app_dir)
    try:
        workers = wait_for(lambda: len(children_of(process.pid)) == 2 and children_of(process.pid))
        served_by = {requests.get(url + "/pid", headers={"Connection": "close"}, timeout=5).text
                     for _ in range(30)}
        assert served_by <= {str(pid) for pid in workers}
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        replaced = wait_for(lambda: (lambda now: len(now) == 2 and victim not in now and now)(
            children_of(process.pid)))
        assert len(replaced - workers) == 1
        assert requests.get(url, timeout=5).text == "hello"
    finally:
        assert stop(process) == 0
    for pid in replaced:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(
            f"/proc/{pid}/status").read_text()


@pytest.mark.parametrize("args, env, message", [
    (["opsapp:nothing"], {}, "has no attribute 'nothing'"),
    (["opsapp:APP_NAME"], {}, "is not a WSGI app"),
    (["--tls-cert", "missing.pem", "opsapp:app"], {}, "not found: missing.pem"),
    (["--bind", "nonsense", "opsapp:app"], {}, "expected HOST:PORT"),
    (["--log-level", "chatty", "opsapp:app"], {}, "unknown log level"),
    (["opsapp:app"], {"HIO_HTTP_MAX_BODY": "lots"}, "HIO_HTTP_MAX_BODY: max_body must be int"),
    (["--config", "nowhere.toml", "opsapp:app"], {}, "config file nowhere.toml not found"),
])
def test_mistakes_are_one_clear_line(app_dir, args, env, message):
    (app_dir / "opsapp.py").write_text(APP + '\nAPP_NAME = "not callable"\n')
    result = subprocess.run([sys.executable, "-m", "hio_http", "--port", "0", *args],
                            cwd=app_dir, env=dict(os.environ, **env), capture_output=True,
                            text=True, timeout=20)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_port_in_use_is_one_clear_line(app_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "hio_http", "--port", str(port),
                                 "opsapp:app"], cwd=app_dir, capture_output=True, text=True,
                                timeout=20)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_several_binds_including_a_unix_socket(app_dir):
    path = app_dir / "s.sock"
    process, url = run(["--bind", "127.0.0.1:0", "--bind", f"unix:{path}", "opsapp:app"],
                       app_dir)
    try:
        assert requests.get(url, timeout=5).text == "hello"
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(4096).endswith(b"hello")
    finally:
        assert stop(process) == 0
    assert not path.exists()


def test_websocket_endpoint_beside_the_app_from_the_command_line(app_dir):
    from websockets.sync.client import connect

    (app_dir / "opsapp.py").write_text(APP + textwrap.dedent('''
        from hio_http.websocket import WebSocketHandler

        class Shout(WebSocketHandler):
            def on_message(self, message):
                self.send(message.upper())
    '''))
    process, url = run(["--port", "0", "--websocket", "/ws/shout=opsapp:Shout", "opsapp:app"],
                       app_dir)
    try:
        assert requests.get(url, timeout=5).text == "hello"
        with connect(url.replace("http://", "ws://") + "/ws/shout", open_timeout=5) as ws:
            ws.send("quiet please")
            assert ws.recv(timeout=5) == "QUIET PLEASE"
    finally:
        assert stop(process) == 0


def test_bad_websocket_option_is_one_clear_line(app_dir):
    result = subprocess.run([sys.executable, "-m", "hio_http", "--websocket", "nopath",
                             "opsapp:app"], cwd=app_dir, capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 2
    assert "expected PATH=module:Handler" in result.stderr


EARLY_STOP = """
import logging, os, signal, sys, time
from hio_http.workers import Supervisor

logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
real_fork, forks = os.fork, []


def fork():  # the first worker is sent SIGTERM the moment it exists
    pid = real_fork()
    if pid == 0 and not forks:
        os.kill(os.getpid(), signal.SIGTERM)
    forks.append(pid)
    return pid


def work():
    print("working", os.getpid(), flush=True)
    os.kill(os.getppid(), signal.SIGTERM)  # then stop the supervisor
    time.sleep(5)
    return 0


os.fork = fork
sys.exit(Supervisor(1, work, graceful_timeout=1).run())
"""


def test_a_worker_stopped_as_it_starts_dies_instead_of_serving_on():
    """A stop that reaches a new worker before it dropped the supervisor's signal handlers
    must end it; run by the supervisor's handler instead, it left the worker serving on."""
    result = subprocess.run([sys.executable, "-c", EARLY_STOP], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    working = [line for line in result.stdout.splitlines() if line.startswith("working")]
    assert len(working) == 1, result.stdout  # only the second worker ever ran
    assert "exited (killed by signal 15); starting another" in result.stdout, result.stdout
