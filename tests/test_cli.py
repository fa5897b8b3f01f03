"""The command line and the example scripts, run as users run them."""

import concurrent.futures
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent


def start(args, cwd=ROOT, pattern=r"(https?://\S+)", env=None):
    """Start a server process; return it with the first URL it logs."""
    process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)
    deadline = time.monotonic() + 20
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(pattern, line)
        if match:
            return process, match.group(1)
    process.kill()
    raise AssertionError("server did not start:\n" + "".join(lines))


def stop(process, sig=signal.SIGTERM):
    process.send_signal(sig)
    try:
        return process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("command", [[sys.executable, "-m", "hio_http"],
                                     [str(Path(sys.executable).parent / "hio-http")]])
def test_demo_app_served_by_the_command_line(command):
    process, url = start(command + ["--port", "0"])
    try:
        assert requests.get(url + "/hello", timeout=5).text == "Hello, world!\n"
        assert requests.get(url + "/echo/hi?x=1", timeout=5).json() == {
            "word": "hi", "query": {"x": "1"}}
        assert "hio_http is serving" in requests.get(url + "/", timeout=5).text
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # /later waits, others go on
            started = time.monotonic()
            later = pool.submit(requests.get, url + "/later?seconds=0.5", timeout=5)
            assert requests.get(url + "/hello", timeout=5).status_code == 200
            assert time.monotonic() - started < 0.4 and not later.done()
            assert later.result().text == "answered after 0.5 s\n"
            assert time.monotonic() - started >= 0.5
        page = requests.get(url + "/static/events.html", timeout=5)
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert 'new EventSource("/events")' in requests.get(
            url + "/static/events.js", timeout=5).text
        with requests.get(url + "/events", stream=True, timeout=5) as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            first_tick = next(line for line in lines if line.startswith(b"data: tick"))
            assert re.match(rb"data: tick \d+ at tyme", first_tick)
    finally:
        code = stop(process)
    assert code == 0


def test_named_app_with_bind(tmp_path):
    (tmp_path / "myapp.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'mine']\n")
    process, url = start([sys.executable, "-m", "hio_http", "--bind", "127.0.0.1:0",
                          "myapp:app"], cwd=tmp_path)
    try:
        assert requests.get(url, timeout=5).text == "mine"
    finally:
        assert stop(process, signal.SIGINT) == 0


@pytest.mark.parametrize("spec, message", [("nosuchmodule:app", "cannot import"),
                                           ("json:nothing", "has no attribute"),
                                           ("json:__name__", "is not callable")])
def test_bad_app_is_one_clear_line(spec, message):
    result = subprocess.run([sys.executable, "-m", "hio_http", "--port", "0", spec],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_falcon_example_script():
    process, url = start([sys.executable, str(ROOT / "scripts" / "falcon_example.py"),
                          "--port", "0", "--limit", "20"])
    try:
        time.sleep(1.2)
        assert requests.get(url + "/ticks", timeout=5).json()["ticks"] >= 1
    finally:
        stop(process)
