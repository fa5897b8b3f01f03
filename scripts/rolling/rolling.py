"""Rolling restarts behind a real HAProxy: two instances of a server, a few clients sending
keep-alive requests through HAProxy, each instance stopped (SIGTERM) and started again in turn.
Prints the requests sent, failed (no response) and answered with a non-2xx status.

    python scripts/rolling/rolling.py                        # hio_http, PROXY protocol v2
    python scripts/rolling/rolling.py --server gunicorn --python /path/to/venv/bin/python

HAProxy checks each instance (`option httpchk`, every 200 ms, down after 2 failures) and has
`retries 3` and `option redispatch`, no `retry-on`: a request HAProxy has sent on a connection
that then closes without an answer is not retried, so it fails, and counts here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

APP = '''
import os

NAME = os.environ.get("INSTANCE", "?").encode()


def app(environ, start_response):
    body = b"hello from " + NAME + b"\\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

HAPROXY_CONFIG = '''
global
    maxconn 512

defaults
    mode http
    timeout connect 2s
    timeout client 20s
    timeout server 20s
    retries 3
    option redispatch

frontend front
    bind 127.0.0.1:{front}
    default_backend instances

backend instances
    balance roundrobin
    option httpchk GET /health
    default-server check inter 200ms fall 2 rise 2 {proxy}
    server a 127.0.0.1:{port_a}
    server b 127.0.0.1:{port_b}
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(kind: str, python: str, port: int) -> list:
    if kind == "hio_http":
        return [python, "-m", "hio_http", "--bind", f"127.0.0.1:{port}", "--proxy-protocol",
                "--log-level", "warning", "rollapp:app"]
    if kind == "gunicorn":
        return [python, "-m", "gunicorn", "-k", "gthread", "--threads", "4", "-b",
                f"127.0.0.1:{port}", "--log-level", "warning", "rollapp:app"]
    if kind == "waitress":
        return [python, "-m", "waitress", f"--listen=127.0.0.1:{port}", "rollapp:app"]
    raise ValueError(f"unknown server {kind!r}")


class Instance:
    def __init__(self, name: str, command: list, directory: Path, port: int):
        self.name, self.command, self.directory, self.port = name, command, directory, port
        self.process: subprocess.Popen | None = None

    def start(self, deadline: float) -> None:
        # hio_http: idle connections close 1.5 s into a stop (HAProxy marks it down sooner)
        env = dict(os.environ, INSTANCE=self.name, PYTHONPATH=str(self.directory),
                   HIO_HTTP_DRAIN_WINDOW="1.5")
        self.process = subprocess.Popen(self.command, cwd=self.directory, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"instance {self.name} did not start")
            time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            finally:
                if self.process.poll() is None:
                    self.process.kill()
                    self.process.wait()


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Client(threading.Thread):
    """Sends requests on one keep-alive session until told to stop, tallying the outcomes."""

    def __init__(self, url: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.url, self.stopping = url, stop
        self.sent = self.failed = self.not_ok = 0
        self.seen: dict = {}
        self.errors: list = []

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stopping.is_set():
                self.sent += 1
                try:
                    response = session.get(self.url, timeout=10)
                except requests.RequestException as ex:
                    self.failed += 1
                    self.errors.append(repr(ex))
                    continue
                if not 200 <= response.status_code < 300:
                    self.not_ok += 1
                    self.errors.append(f"{response.status_code} {response.text[:80]!r}")
                else:
                    name = response.text.rsplit(" ", 1)[-1].strip()
                    self.seen[name] = self.seen.get(name, 0) + 1


def wait_until(condition, deadline: float, what: str) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def rolling_restart(kind: str = "hio_http", python: str = sys.executable, clients: int = 4,
                    rounds: int = 1, haproxy: str = "haproxy", limit: float = 45.0) -> dict:
    """Run the test; returns the tallies: sent, failed, not_ok, errors."""
    deadline = time.monotonic() + limit
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        (directory / "rollapp.py").write_text(APP)
        ports = {"a": free_port(), "b": free_port()}
        front = free_port()
        instances = [Instance(key, server_command(kind, python, port), directory, port)
                     for key, port in ports.items()]
        proxy = "send-proxy-v2 check-send-proxy" if kind == "hio_http" else ""
        config = directory / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(front=front, port_a=ports["a"],
                                                port_b=ports["b"], proxy=proxy))
        balancer = None
        stop = threading.Event()
        workers: list = []
        try:
            for instance in instances:
                instance.start(deadline)
            balancer = subprocess.Popen([haproxy, "-db", "-f", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            wait_until(lambda: answers(front), deadline, "HAProxy to listen")
            workers = [Client(f"http://127.0.0.1:{front}/", stop) for _ in range(clients)]
            for worker in workers:
                worker.start()
            both = lambda: all(sum(w.seen.get(key, 0) for w in workers) for key in ports)
            wait_until(both, deadline, "both instances to serve")
            for _ in range(rounds):
                for instance in instances:
                    sent = sum(w.sent for w in workers)
                    wait_until(lambda: sum(w.sent for w in workers) > sent + 500, deadline,
                               "steady load")
                    instance.stop()
                    before = sum(w.seen.get(instance.name, 0) for w in workers)
                    instance.start(deadline)
                    wait_until(lambda: sum(w.seen.get(instance.name, 0)
                                           for w in workers) > before + 50,
                               deadline, f"HAProxy to send to {instance.name} again")
        finally:
            stop.set()
            for worker in workers:
                worker.join(15)
            if balancer is not None:
                balancer.terminate()
                balancer.wait(10)
            for instance in instances:
                instance.stop()
    return {"sent": sum(w.sent for w in workers), "failed": sum(w.failed for w in workers),
            "not_ok": sum(w.not_ok for w in workers),
            "errors": [error for w in workers for error in w.errors]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="hio_http", choices=["hio_http", "gunicorn",
                                                                 "waitress"])
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter whose environment has the server installed")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="restarts of each instance")
    parser.add_argument("--limit", type=float, default=120.0, help="seconds allowed in all")
    options = parser.parse_args()
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    tally = rolling_restart(options.server, options.python, options.clients, options.rounds,
                            haproxy, options.limit)
    print(f"{options.server}: {tally['sent']} requests, {tally['failed']} failed, "
          f"{tally['not_ok']} non-2xx")
    for error in tally["errors"][:10]:
        print("  ", error)
    return 0 if not tally["failed"] and not tally["not_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
