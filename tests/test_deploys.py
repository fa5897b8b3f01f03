"""Deploys over real processes: SIGHUP reloads under load, --max-requests recycling, --reload,
SIGTTIN / SIGTTOU, SIGUSR1, --pid, and the Prometheus metrics of all workers."""

import concurrent.futures
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_for
from test_cli import start, stop

APP = textwrap.dedent('''
    import os

    VERSION = "first"

    def app(environ, start_response):
        body = f"{VERSION} {os.getpid()}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
''')


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "deployapp.py").write_text(APP)
    return tmp_path


class Output(threading.Thread):
    """Keeps reading a server's output (so that it never blocks on a full pipe)."""

    def __init__(self, process):
        super().__init__(daemon=True)
        self.process, self.lines = process, []

    def run(self):
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def text(self):
        return "".join(self.lines)


def run(args, cwd):
    process, url = start([sys.executable, "-m", "hio_http", "--port", "0", "--log-level",
                          "info", *args], cwd=cwd)
    output = Output(process)
    output.start()
    return process, url, output


class Load:
    """Clients sending keep-alive requests until stopped; tallies answers by body."""

    def __init__(self, url, clients=3):
        self.url, self.stopping = url, threading.Event()
        self.sent = self.failed = self.not_ok = 0
        self.bodies: dict = {}
        self.errors: list = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, daemon=True)
                        for _ in range(clients)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)

    def _client(self):
        with requests.Session() as session:
            while not self.stopping.is_set():
                try:
                    response = session.get(self.url, timeout=10)
                except requests.RequestException as ex:
                    with self.lock:
                        self.sent += 1
                        self.failed += 1
                        self.errors.append(repr(ex))
                    continue
                with self.lock:
                    self.sent += 1
                    if response.status_code != 200:
                        self.not_ok += 1
                    self.bodies[response.text] = self.bodies.get(response.text, 0) + 1

    def versions(self):
        with self.lock:
            return {body.split()[0] for body in self.bodies}

    def pids(self, version=None):
        with self.lock:
            return {int(body.split()[1]) for body in self.bodies
                    if version is None or body.split()[0] == version}

    def count(self):
        with self.lock:
            return self.sent

def children_of(pid):
    return {int(child) for child in
            Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def edit(path, old, new):
    path.write_text(path.read_text().replace(old, new))


def test_sighup_reloads_new_code_under_load_and_a_failed_reload_serves_on(app_dir):
    process, url, output = run(["--workers", "2", "--drain-window", "2", "deployapp:app"],
                               app_dir)
    try:
        with Load(url) as load:
            wait_for(lambda: load.count() > 100)
            old = load.pids("first")
            edit(app_dir / "deployapp.py", '"first"', '"second-version"')
            process.send_signal(signal.SIGHUP)
            wait_for(lambda: "second-version" in load.versions())
            new = wait_for(lambda: len(children_of(process.pid)) == 2
                           and children_of(process.pid).isdisjoint(old)
                           and children_of(process.pid))
            counted = load.count()
            wait_for(lambda: load.count() > counted + 100)
            served_lately = load.pids("second-version")
            # A reload whose app does not import leaves the new workers serving.
            edit(app_dir / "deployapp.py", "VERSION =", "VERSION = (")
            process.send_signal(signal.SIGHUP)
            wait_for(lambda: "reload failed" in output.text)
            counted = load.count()
            wait_for(lambda: load.count() > counted + 100)
        wait_for(lambda: children_of(process.pid) == new)  # the failed ones are gone
    finally:
        assert stop(process) == 0
    print(f"\nSIGHUP reload under load: {load.sent} requests, {load.failed} failed, "
          f"{load.not_ok} non-2xx")
    assert (load.failed, load.not_ok) == (0, 0), load.errors[:5]
    assert served_lately <= new and new.isdisjoint(old) and len(old) >= 1
    assert "SyntaxError" in output.text


def test_max_requests_recycles_workers_under_load(app_dir):
    process, url, output = run(["--workers", "2", "--max-requests", "60",
                                "--max-requests-jitter", "20", "--drain-window", "1",
                                "deployapp:app"], app_dir)
    try:
        with Load(url) as load:
            wait_for(lambda: len(load.pids()) >= 6, timeout=30)
    finally:
        assert stop(process) == 0
    print(f"\nmax-requests recycling: {load.sent} requests by {len(load.pids())} workers, "
          f"{load.failed} failed, {load.not_ok} non-2xx")
    assert (load.failed, load.not_ok) == (0, 0), load.errors[:5]
    assert "asking for a replacement" in output.text


def test_reload_picks_up_an_edited_file_and_skips_one_that_does_not_compile(app_dir):
    process, url, output = run(["--reload", "deployapp:app"], app_dir)
    try:
        assert requests.get(url, timeout=5).text.startswith("first ")
        time.sleep(0.01)  # a distinct modification time, whatever the file system's grain
        edit(app_dir / "deployapp.py", '"first"', '"edited"')
        wait_for(lambda: requests.get(url, timeout=5).text.startswith("edited "))
        edit(app_dir / "deployapp.py", "VERSION =", "VERSION = (")
        wait_for(lambda: "does not compile" in output.text)
        assert requests.get(url, timeout=5).text.startswith("edited ")
        edit(app_dir / "deployapp.py", "VERSION = (", "VERSION =")
        edit(app_dir / "deployapp.py", '"edited"', '"fixed"')
        wait_for(lambda: requests.get(url, timeout=5).text.startswith("fixed "))
    finally:
        assert stop(process) == 0


def test_workers_that_cannot_import_the_app_end_the_supervisor_with_code_2(app_dir):
    result = subprocess.run([sys.executable, "-m", "hio_http", "--port", "0", "--workers", "2",
                             "nosuchmodule:app"], cwd=app_dir, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "cannot import 'nosuchmodule'" in result.stderr
    assert "hio-http: error: the workers cannot load nosuchmodule:app" in result.stderr
    assert "Traceback" not in result.stderr


def test_ttin_adds_and_ttou_retires_a_worker(app_dir):
    process, url, output = run(["--workers", "2", "deployapp:app"], app_dir)
    try:
        first = wait_for(lambda: len(children_of(process.pid)) == 2 and children_of(process.pid))
        process.send_signal(signal.SIGTTIN)
        three = wait_for(lambda: len(children_of(process.pid)) == 3 and children_of(process.pid))
        assert first < three
        process.send_signal(signal.SIGTTOU)
        wait_for(lambda: len(children_of(process.pid)) == 2)
        assert requests.get(url, timeout=5).status_code == 200
    finally:
        assert stop(process) == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_pid_file_written_once_listening_and_removed_on_exit(app_dir, workers):
    pid_file = app_dir / "run" / "server.pid"
    pid_file.parent.mkdir()
    process, url, output = run(["--workers", str(workers), "--pid", str(pid_file),
                                "deployapp:app"], app_dir)
    try:
        assert int(wait_for(lambda: pid_file.exists() and pid_file.read_text())) == process.pid
        assert requests.get(url, timeout=5).status_code == 200
    finally:
        assert stop(process) == 0
    assert not pid_file.exists()


@pytest.mark.parametrize("args, hangup", [([], signal.SIGUSR1), ([], signal.SIGHUP),
                                          (["--workers", "2"], signal.SIGUSR1)])
def test_log_files_reopen(app_dir, args, hangup):
    log = app_dir / "access.log"
    process, url, output = run([*args, "--access-log", str(log), "deployapp:app"], app_dir)
    try:
        requests.get(url + "/first", timeout=5)
        wait_for(lambda: log.exists() and "/first" in log.read_text())
        log.rename(app_dir / "access.log.1")  # what logrotate does
        process.send_signal(hangup)
        wait_for(log.exists)  # reopening creates the file anew
        requests.get(url + "/second", timeout=5)
        wait_for(lambda: "/second" in log.read_text())
    finally:
        assert stop(process) == 0
    assert "/second" not in (app_dir / "access.log.1").read_text()


def scrape(url):
    text = requests.get(url, timeout=5).text
    return {sample.name + repr(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.mark.parametrize("workers", [1, 3])
def test_metrics_of_all_workers_move_with_traffic(app_dir, workers):
    process, url, output = run(["--workers", str(workers), "--metrics-bind", "127.0.0.1:0",
                                "deployapp:app"], app_dir)
    try:
        metrics_url = wait_for(lambda: re.search(r"metrics on (http://\S+)", output.text)).group(1)
        before = scrape(metrics_url)
        assert before.get("hio_http_workers[]") == workers
        with requests.Session() as session:
            for _ in range(40):
                assert session.post(url + "/", data=b"x" * 100, timeout=5).status_code == 200
            assert session.get(url + "/", timeout=5).status_code == 200
            during = wait_for(lambda: (lambda m: m.get("hio_http_connections[('kind', 'http')]")
                                       and m)(scrape(metrics_url)))
        posts = "hio_http_requests_total[('method', 'POST'), ('status', '2xx')]"
        gets = "hio_http_requests_total[('method', 'GET'), ('status', '2xx')]"
        # Counters are published twice a second: wait for all of them.
        after = wait_for(lambda: (lambda m: m.get(gets, 0) - before.get(gets, 0) >= 1 and m)(
            scrape(metrics_url)))
        assert after[posts] - before.get(posts, 0) == 40
        assert after[gets] - before.get(gets, 0) == 1
        count = "hio_http_request_duration_seconds_count[]"
        assert after[count] - before[count] == 41
        assert after["hio_http_request_duration_seconds_bucket[('le', '+Inf')]"] == after[count]
        assert after["hio_http_received_bytes_total[]"] - before[
            "hio_http_received_bytes_total[]"] > 40 * 100
        assert after["hio_http_sent_bytes_total[]"] > before["hio_http_sent_bytes_total[]"]
        assert during["hio_http_connections[('kind', 'http')]"] >= 1
        for name in ("hio_http_loop_stalls_total[]", "hio_http_app_pool_queued[]",
                     "hio_http_requests_in_flight[]", "hio_http_worker_restarts_total[]"):
            assert name in after
    finally:
        assert stop(process) == 0


def test_metrics_keep_the_counts_of_workers_that_exited(app_dir):
    process, url, output = run(["--workers", "2", "--metrics-bind", "127.0.0.1:0",
                                "deployapp:app"], app_dir)
    try:
        metrics_url = wait_for(lambda: re.search(r"metrics on (http://\S+)", output.text)).group(1)
        for _ in range(20):
            requests.get(url, headers={"Connection": "close"}, timeout=5)
        gets = "hio_http_requests_total[('method', 'GET'), ('status', '2xx')]"
        wait_for(lambda: scrape(metrics_url).get(gets) == 20)
        old = children_of(process.pid)
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: len(children_of(process.pid)) == 2
                 and children_of(process.pid).isdisjoint(old))
        after = scrape(metrics_url)
        assert after[gets] == 20 and after["hio_http_worker_restarts_total[]"] == 2
    finally:
        assert stop(process) == 0


@pytest.mark.parametrize("threads", [0, 2])
def test_sighup_closes_websockets_with_1001_and_ends_event_streams(tmp_path, threads):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    process, url, output = run(["--workers", "2", "--threads", str(threads)],
                               tmp_path)  # the demo app
    try:
        ws_url = url.replace("http://", "ws://") + "/ws/echo"
        with connect(ws_url) as ws, requests.get(url + "/events", stream=True,
                                                 timeout=10) as stream:
            ws.send("hi")
            assert ws.recv(timeout=5) == "echo: hi"
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith(b"data: tick"))
            process.send_signal(signal.SIGHUP)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 1001
            started = time.monotonic()
            for _ in lines:  # ends, properly framed (a broken chunked body would raise)
                assert time.monotonic() - started < 10
        wait_for(lambda: "reloaded: generation 1 serves" in output.text)
        # The old workers drain once told to retire, and one may still take a connection from
        # the shared socket meanwhile: a handshake reaching it gets 503 (README, WebSockets).
        # The new generation is what is tested here.
        old = re.findall(r"started worker (\d+) \(generation 0\)", output.text)
        assert len(old) == 2
        wait_for(lambda: all(f"stopped (pid {pid})" in output.text for pid in old))
        with connect(ws_url) as ws:
            ws.send("again")
            assert ws.recv(timeout=5) == "echo: again"
    finally:
        assert stop(process) == 0


SLOW_APP = textwrap.dedent('''
    import time

    def app(environ, start_response):
        time.sleep(float(environ["QUERY_STRING"] or 0))  # blocks: a loop stall, or a busy thread
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
''')


@pytest.mark.parametrize("threads", [0, 2])
def test_metrics_gauges_show_a_blocked_request_and_stalls_count(tmp_path, threads):
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    process, url, output = run(["--threads", str(threads), "--stall-warning", "0.3",
                                "--metrics-bind", "127.0.0.1:0", "slowapp:app"], tmp_path)
    try:
        metrics_url = wait_for(lambda: re.search(r"metrics on (http://\S+)", output.text)).group(1)
        if threads:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                slow = pool.submit(requests.get, url + "/?2", timeout=10)
                during = wait_for(lambda: (lambda m: m["hio_http_app_pool_busy[]"] == 1 and m)(
                    scrape(metrics_url)))
                assert during["hio_http_requests_in_flight[]"] == 1
                assert slow.result().status_code == 200
        else:  # on the loop: the scrape waits with everything else, and the stall counts
            assert requests.get(url + "/?0.6", timeout=10).status_code == 200
            wait_for(lambda: scrape(metrics_url)["hio_http_loop_stalls_total[]"] >= 1)
    finally:
        assert stop(process) == 0
