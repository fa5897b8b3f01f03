"""The stall detector names what holds the loop; the pool reports an app thread stuck past its
timeout; the worker watchdog replaces a worker whose loop stopped turning. All with apps that
really block."""

import logging
import re
import signal
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from hio_http.doing import Doer, Doist
from hio_http.pool import AppPool
from hio_http.stalls import StallWatch

from test_cli import start, stop
from conftest import wait_for
from test_operations import children_of


def stall_warnings(caplog):
    return [record.getMessage() for record in caplog.records
            if record.levelno == logging.WARNING and "the loop has been held" in record.getMessage()]


def blocking_app(environ, start_response):
    if environ["PATH_INFO"] == "/block":
        time.sleep(0.6)  # a blocking call, as a database driver makes
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]


def test_an_app_call_that_holds_the_loop_is_named_with_its_frame(serve, caplog):
    caplog.set_level(logging.WARNING, logger="hio_http.server")
    server = serve(blocking_app, stall_warning=0.2)
    assert requests.get(server.url + "/quick", timeout=5).text == "done"
    assert stall_warnings(caplog) == []  # quick calls say nothing
    assert requests.get(server.url + "/block?x=1", timeout=5).text == "done"
    warnings = wait_for(lambda: stall_warnings(caplog), timeout=5)
    assert len(warnings) == 1
    message = warnings[0]
    assert "GET /block?x=1" in message
    assert re.search(r"test_stalls\.py:\d+ in blocking_app", message), message
    assert "--threads" in message


def test_stalls_are_rate_limited_and_counted(serve, caplog):
    caplog.set_level(logging.WARNING, logger="hio_http.server")
    server = serve(blocking_app, stall_warning=0.2)
    for _ in range(3):
        requests.get(server.url + "/block", timeout=5)
    wait_for(lambda: stall_warnings(caplog), timeout=5)
    assert len(stall_warnings(caplog)) == 1  # one warning, however many stalls in 10 s


def test_stall_warning_zero_turns_it_off(serve, caplog):
    caplog.set_level(logging.WARNING, logger="hio_http.server")
    server = serve(blocking_app, stall_warning=0)
    requests.get(server.url + "/block", timeout=5)
    assert server.stalls is None
    assert stall_warnings(caplog) == []


def test_with_threads_a_blocking_app_does_not_stall_the_loop(serve, caplog):
    caplog.set_level(logging.WARNING, logger="hio_http.server")
    server = serve(blocking_app, stall_warning=0.2, threads=2)
    requests.get(server.url + "/block", timeout=5)
    assert stall_warnings(caplog) == []


class Sleepy(Doer):
    """A doer whose turn blocks."""

    def recur(self, tyme):
        time.sleep(0.4)
        return True


def test_a_doer_turn_that_holds_the_loop_is_named(caplog):
    caplog.set_level(logging.WARNING, logger="hio_http.server")
    doist = Doist(tock=0.01, real=True, limit=3, stall_warning=0.15)
    doist.do(doers=[Sleepy()])
    warnings = wait_for(lambda: stall_warnings(caplog), timeout=3)
    assert "the turn of Sleepy" in warnings[0]
    assert re.search(r"test_stalls\.py:\d+ in recur", warnings[0]), warnings[0]


def switches_of(thread: threading.Thread) -> int:
    """How often the kernel has woken `thread` after it waited (each timed poll is one)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", status).group(1))


def test_the_watch_sleeps_while_the_loop_is_idle():
    watch = StallWatch(0.05)  # while the loop is busy it looks every 12.5 ms
    earlier = set(threading.enumerate())  # a watcher of an earlier test may still be ending
    watch.bind()
    try:
        (watcher,) = [thread for thread in threading.enumerate()
                      if thread not in earlier and thread.name == "hio_http-stall-watch"]
        previous = watch.enter("something")
        watch.leave(previous)

        def settled():  # the watcher has noticed the idle loop and stopped looking
            first = switches_of(watcher)
            time.sleep(0.05)
            return switches_of(watcher) == first

        wait_for(settled, timeout=5)
        before = switches_of(watcher)
        time.sleep(0.5)  # a poll every 12.5 ms would wake it about 40 times here
        assert switches_of(watcher) - before <= 1
        previous = watch.enter("blocking")  # and it wakes when the loop is busy again
        wait_for(lambda: watch.stalls, timeout=2)
        watch.leave(previous)
    finally:
        watch.stop()


def test_pool_logs_the_stack_of_a_thread_stuck_past_its_timeout_once(caplog):
    caplog.set_level(logging.WARNING, logger="hio_http.server")
    release = threading.Event()
    pool = AppPool(1, slow_after=0.2)
    try:
        def stuck_job():
            release.wait(5)

        assert pool.submit(stuck_job)
        reports = wait_for(lambda: [r.getMessage() for r in caplog.records
                                    if "app thread has been busy" in r.getMessage()])
        time.sleep(0.5)  # well past a second timeout: still one report for this job
        assert len([r for r in caplog.records if "app thread has been busy" in r.getMessage()]) == 1
        assert "in stuck_job" in reports[0] and "release.wait(5)" in reports[0]
    finally:
        release.set()
        pool.close()
        assert pool.join(5)


def test_a_raising_job_does_not_end_its_thread(caplog):
    pool = AppPool(1)
    done = threading.Event()
    try:
        def bad():
            raise RuntimeError("boom")

        assert pool.submit(bad)
        assert pool.submit(done.set)
        assert done.wait(5)
        assert "boom" in caplog.text
    finally:
        pool.close()


def test_a_full_pool_refuses_then_calls_back_when_there_is_room():
    release = threading.Event()
    called = threading.Event()
    pool = AppPool(1, queue_limit=1)
    try:
        assert pool.submit(lambda: release.wait(5))
        wait_for(lambda: pool.busy == 1)
        assert pool.submit(lambda: None)
        assert not pool.submit(lambda: None)  # one waits already: full
        pool.notify_when_free(called.set)
        assert not called.is_set()
        release.set()
        assert called.wait(5)
    finally:
        release.set()
        pool.close()


WATCHED_APP = textwrap.dedent('''
    import os, threading, time

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/hang":
            open("hanging", "w").close()  # tells the test that the app is stuck now
            threading.Event().wait()  # stuck for good
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
''')


@pytest.mark.slow
def test_watchdog_replaces_a_worker_whose_loop_is_stuck(tmp_path):
    (tmp_path / "watched.py").write_text(WATCHED_APP)
    process, url = start([sys.executable, "-m", "hio_http", "--port", "0", "--workers", "2",
                          "--timeout", "1", "--stall-warning", "0", "watched:app"],
                         cwd=tmp_path)
    try:
        workers = wait_for(lambda: len(children_of(process.pid)) == 2 and children_of(process.pid))
        hung = []

        def hang():
            try:
                requests.get(url + "/hang", timeout=10)
            except requests.RequestException as ex:
                hung.append(ex)

        thread = threading.Thread(target=hang)
        thread.start()
        wait_for(lambda: (tmp_path / "hanging").exists())
        # The other worker serves on while one is stuck.
        served = {requests.get(url + "/pid", timeout=5).text for _ in range(20)}
        assert served <= {str(pid) for pid in workers}
        thread.join(15)
        assert hung, "the stuck worker's client should lose its connection"
        def replaced_workers():
            children = children_of(process.pid)
            return children if len(children) == 2 and children != workers else None

        replaced = wait_for(replaced_workers, timeout=10)
        assert len(replaced - workers) == 1
    finally:
        assert stop(process) == 0
    log = process.stdout.read()
    assert "has not turned its loop" in log
    assert re.search(r"watched\.py\", line \d+ in app", log), log


@pytest.mark.slow
def test_in_threads_mode_a_stuck_app_thread_is_reported_and_the_loop_serves_on(tmp_path):
    (tmp_path / "watched.py").write_text(WATCHED_APP)
    process, url = start([sys.executable, "-m", "hio_http", "--port", "0", "--threads", "2",
                          "--timeout", "0.5", "watched:app"], cwd=tmp_path)
    address = urlsplit(url)
    hang = socket.create_connection((address.hostname, address.port), timeout=5)
    try:
        hang.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # past the timeout, the loop serves on
            assert requests.get(url + "/pid", timeout=5).status_code == 200
    finally:
        hang.close()
        stop(process, sig=signal.SIGKILL)  # a thread stuck for good: no graceful end
    log = process.stdout.read()
    assert log.count("an app thread has been busy") == 1, log
    assert "with GET /hang" in log and "in app" in log
