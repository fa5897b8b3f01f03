"""threads=N: WSGI app calls and their bodies run on a pool of threads while the loop serves
everyone else. Each feature of the loop is checked again here, over real sockets."""

import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from hio_http.doing import Doist
from hio_http.serving import Server, ServerDoer
from hio_http.sse import Broadcaster

from conftest import raw_connect, read_until_closed
from test_cli import start, stop
from conftest import wait_for

APP_THREAD = "hio_http-app"


def slow_reader(server, request):
    """A client with a small receive buffer that sends `request` and then reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(server.address[:2])
    sock.sendall(request)
    return sock


def text_app(environ, start_response):
    body = (f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} "
            f"{threading.current_thread().name}").encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def test_app_runs_on_a_pool_thread_and_environ_says_multithread(serve):
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        return text_app(environ, start_response)

    server = serve(app, threads=2)
    answer = requests.get(server.url + "/here", timeout=5)
    assert answer.status_code == 200
    assert answer.text.startswith("GET /here " + APP_THREAD)
    assert seen["wsgi.multithread"] is True and seen["wsgi.multiprocess"] is False


def test_without_threads_the_app_runs_on_the_loop(serve):
    server = serve(text_app)
    assert APP_THREAD not in requests.get(server.url + "/", timeout=5).text


def test_a_blocked_app_call_does_not_hold_other_connections(serve):
    release = threading.Event()
    entered = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            entered.set()
            release.wait(10)
        return text_app(environ, start_response)

    server = serve(app, threads=2)
    slow = socket.create_connection(server.address[:2], timeout=10)
    try:
        slow.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(5)
        started = time.monotonic()
        assert requests.get(server.url + "/health", timeout=5).status_code == 200
        assert time.monotonic() - started < 1.0  # not held until the slow call ends
        assert not release.is_set()
        release.set()
        slow.settimeout(5)
        assert slow.recv(65536).startswith(b"HTTP/1.1 200 OK")
    finally:
        release.set()
        slow.close()


def test_not_yet_items_resume(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            for part in (b"one ", b"two ", b"three"):
                until = time.monotonic() + 0.05
                while time.monotonic() < until:
                    yield b""  # not yet: the thread is given back and asked again later
                yield part

        return body()

    server = serve(app, threads=2)
    assert requests.get(server.url + "/", timeout=5).text == "one two three"


def test_event_stream_parks_and_is_woken_by_publish(serve):
    events = Broadcaster(heartbeat=None)
    server = serve(events.wsgi_app, validate=False, threads=2)
    with requests.get(server.url + "/events", stream=True, timeout=5) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        wait_for(lambda: events.subscribers == 1)
        lines = stream.iter_lines()
        events.publish("hello", event="greeting")
        got = []
        for line in lines:
            if line:
                got.append(line)
            if line.startswith(b"data:"):
                break
        assert got[-2:] == [b"event: greeting", b"data: hello"]
    wait_for(lambda: events.subscribers == 0)  # the client left: the stream was closed


def test_file_wrapper_goes_out_whole_by_sendfile_and_under_tls(serve, tmp_path, certificate,
                                                               monkeypatch):
    data = os.urandom(300_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    sent_by_sendfile = []
    real_sendfile = os.sendfile

    def counting_sendfile(*args):
        sent = real_sendfile(*args)
        sent_by_sendfile.append(sent)
        return sent

    monkeypatch.setattr(os, "sendfile", counting_sendfile)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    plain = serve(app, validate=False, threads=2)  # unwrapped: the server sees its wrapper
    answer = requests.get(plain.url + "/", timeout=5)
    assert answer.content == data and answer.headers["Content-Length"] == str(len(data))
    assert sum(sent_by_sendfile) == len(data)
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    secure = serve(app, validate=False, threads=2, ssl_context=context)
    assert requests.get(secure.url + "/", timeout=5, verify=cert).content == data
    assert sum(sent_by_sendfile) == len(data)  # TLS: read in blocks, not sent by sendfile


def test_a_client_that_stops_reading_costs_no_thread_and_is_closed_at_write_timeout(serve):
    pulled = []
    closed_on = []

    class Endless:
        def __iter__(self):
            return self

        def __next__(self):
            pulled.append(1)
            return b"x" * 8192

        def close(self):
            closed_on.append(threading.current_thread().name)

    def app(environ, start_response):
        if environ["PATH_INFO"] != "/endless":
            return text_app(environ, start_response)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Endless()

    server = serve(app, validate=False, threads=1, high_water=32 * 1024, write_timeout=1.0)
    sock = slow_reader(server, b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        # The pulling stops once the socket is full: the count settles.
        previous = -1
        deadline = time.monotonic() + 5
        while len(pulled) != previous and time.monotonic() < deadline:
            previous = len(pulled)
            time.sleep(0.2)
        assert len(pulled) == previous, "the body was pulled without end"
        assert server.pool.busy == 0  # no thread waits for the slow client
        # Another request gets the only thread meanwhile.
        assert requests.get(server.url + "/other", timeout=5).status_code == 200
        wait_for(lambda: closed_on, timeout=5)  # write_timeout closed it, and the app's close
        assert closed_on[0].startswith(APP_THREAD)  # ran on a pool thread
    finally:
        sock.close()


def test_legacy_write_waits_for_the_client_and_is_released_when_it_is_dropped(serve):
    outcome = []

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        try:
            for _ in range(10_000):
                write(b"y" * 8192)  # 80 MB: far beyond what may wait in memory
        except Exception as ex:
            outcome.append(type(ex).__name__)
            raise
        outcome.append("finished")
        return []

    server = serve(app, validate=False, threads=1, high_water=16 * 1024, write_timeout=1.0)
    sock = slow_reader(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        wait_for(lambda: outcome, timeout=8)
        assert outcome == ["ClientGone"]
    finally:
        sock.close()
    assert outcome == ["ClientGone"]  # and the one thread is free again:
    with requests.get(server.url + "/", timeout=5, stream=True) as answer:
        assert answer.status_code == 200


def test_expect_continue_and_a_spilled_body_are_read_on_the_thread(serve):
    def app(environ, start_response):
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        answer = f"{len(body)} {body[:3].decode()} {threading.current_thread().name}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(answer)))])
        return [answer]

    server = serve(app, threads=2, spill_threshold=1000)
    sock = raw_connect(server)
    try:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"abc" + b"z" * 4997)
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert answer.rsplit(b"\r\n\r\n", 1)[1].startswith(b"5000 abc " + APP_THREAD.encode())
    finally:
        sock.close()


def failing_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/before":
        raise RuntimeError("before start_response")
    if path == "/after-start":
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise RuntimeError("after start_response")

    def body():
        yield b"some"
        raise RuntimeError("in the body")

    start_response("200 OK", [("Content-Type", "text/plain")])
    return body()


@pytest.mark.parametrize("threads", [0, 2])
def test_exceptions_get_the_same_answers_as_on_the_loop(serve, threads):
    server = serve(failing_app, validate=False, threads=threads)
    for path in ("/before", "/after-start"):
        answer = requests.get(server.url + path, timeout=5)
        assert answer.status_code == 500 and answer.text == "Internal Server Error\n"
    sock = raw_connect(server)
    try:
        sock.sendall(b"GET /in-body HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 200 OK") and b"4\r\nsome\r\n" in data
        assert not data.endswith(b"0\r\n\r\n")  # closed short: never mistaken for whole
    finally:
        sock.close()
    assert requests.get(server.url + "/before", timeout=5).status_code == 500  # still serving


def test_head_sends_no_body(serve):
    server = serve(text_app, threads=2)
    connection = http.client.HTTPConnection(*server.address[:2], timeout=5)
    connection.request("HEAD", "/x")
    response = connection.getresponse()
    assert response.status == 200 and response.read() == b""
    assert response.getheader("Content-Length") == str(len(f"HEAD /x {APP_THREAD}-0"))
    connection.request("GET", "/y")  # the connection is still in step
    assert connection.getresponse().read().startswith(b"GET /y")
    connection.close()


def test_pipelined_requests_are_answered_in_order_when_a_later_one_finishes_first(serve):
    second_done = threading.Event()

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/first":
            assert second_done.wait(5), "the second request did not run meanwhile"
        body = path.encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        try:
            return [body]
        finally:
            if path == "/second":
                second_done.set()

    server = serve(app, threads=3)
    sock = raw_connect(server)
    try:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_until_closed(sock)
    finally:
        sock.close()
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.index(b"/first") < data.index(b"/second") < data.index(b"/third")


def test_a_pipelined_unsafe_request_is_not_run_ahead(serve):
    log = []

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        log.append(("start", path))
        if path == "/write":
            time.sleep(0.2)
        log.append(("end", path))
        return text_app(environ, start_response)

    server = serve(app, threads=3)
    sock = raw_connect(server)
    try:
        sock.sendall(b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                     b"GET /read HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_until_closed(sock)
    finally:
        sock.close()
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert log == [("start", "/write"), ("end", "/write"), ("start", "/read"), ("end", "/read")]


def test_a_full_pool_queue_pauses_and_drops_nothing(serve):
    def app(environ, start_response):
        time.sleep(0.01)
        return text_app(environ, start_response)

    server = serve(app, threads=1, thread_queue=1)
    sockets = [raw_connect(server) for _ in range(12)]
    try:
        for index, sock in enumerate(sockets):
            sock.sendall(f"GET /{index} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                         .encode())
        answers = [read_until_closed(sock) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    for index, answer in enumerate(answers):
        assert answer.startswith(b"HTTP/1.1 200 OK") and f"GET /{index} ".encode() in answer


def test_half_closed_client_still_gets_the_answer_of_an_app_thread(serve):
    def app(environ, start_response):
        time.sleep(0.1)
        return text_app(environ, start_response)

    server = serve(app, threads=1)
    sock = raw_connect(server)
    try:
        sock.sendall(b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = read_until_closed(sock)
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 200 OK") and b"GET /half" in data


def test_graceful_stop_waits_for_calls_in_flight():
    entered = threading.Event()

    def app(environ, start_response):
        entered.set()
        time.sleep(0.5)
        return text_app(environ, start_response)

    doist = Doist(tock=0.01, real=True, limit=10)
    server = Server(app, port=0, threads=2, poller=doist.poller)
    server.open()
    server_doer = ServerDoer(server)
    result = {}

    def client():
        sock = raw_connect(server)
        sock.sendall(b"GET /inflight HTTP/1.1\r\nHost: x\r\n\r\n")
        result["data"] = read_until_closed(sock)
        sock.close()

    thread = threading.Thread(target=client)
    thread.start()

    def stop_when_entered():
        entered.wait(5)
        server_doer.stop()
        doist.poller.wake()

    threading.Thread(target=stop_when_entered).start()
    started = time.monotonic()
    doist.do(doers=[server_doer])
    thread.join(5)
    assert server_doer.done is True
    assert time.monotonic() - started < 5
    data = result["data"]
    assert data.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in data
    assert data.rsplit(b"\r\n\r\n", 1)[1].startswith(b"GET /inflight " + APP_THREAD.encode())


SLOW_APP = '''
import threading, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        time.sleep(1.0)
    elif path == "/forever":
        threading.Event().wait()
    body = (path + " " + threading.current_thread().name).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def start_cli(tmp_path, *args, env=None):
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    return start([sys.executable, "-m", "hio_http", "--port", "0", *args, "slowapp:app"],
                 cwd=tmp_path, env=env)


def test_command_line_threads_from_flag_environment_and_config(tmp_path):
    for args, env in ((["--threads", "2"], None),
                      ([], dict(os.environ, HIO_HTTP_THREADS="2")),
                      (["--config", "hio.toml"], None)):
        (tmp_path / "hio.toml").write_text("threads = 2\n")
        process, url = start_cli(tmp_path, *args, env=env)
        try:
            assert requests.get(url + "/x", timeout=5).text.startswith(f"/x {APP_THREAD}-")
        finally:
            assert stop(process) == 0


def test_command_line_sigterm_waits_for_the_call_in_flight(tmp_path):
    process, url = start_cli(tmp_path, "--threads", "2", "--graceful-timeout", "10")
    address = urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=10)
    try:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: requests.get(url + "/ready", timeout=5).ok)  # /slow is under way
        process.send_signal(signal.SIGTERM)
        data = read_until_closed(sock, timeout=10)
        code = process.wait(timeout=10)  # it stops by itself once the call is answered
    finally:
        sock.close()
        if process.poll() is None:
            process.kill()
    assert code == 0
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert data.rsplit(b"\r\n\r\n", 1)[1].startswith(b"/slow " + APP_THREAD.encode())


def test_command_line_second_signal_exits_at_once_with_an_app_thread_stuck(tmp_path):
    process, url = start_cli(tmp_path, "--threads", "1", "--graceful-timeout", "30")
    address = urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=10)
    try:
        sock.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=5)
        assert time.monotonic() - started < 3
    finally:
        sock.close()
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("settings, named", [({"threads": -1}, "threads"),
                                             ({"threads": 1.5}, "threads"),
                                             ({"thread_queue": 0}, "thread_queue"),
                                             ({"stall_warning": "soon"}, "stall_warning"),
                                             ({"timeout": -5}, "timeout")])
def test_bad_thread_settings_are_refused_when_made(settings, named):
    with pytest.raises(ValueError, match=named):
        Server(text_app, **settings)


def test_bad_threads_on_the_command_line_is_one_line(tmp_path):
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    result = subprocess.run([sys.executable, "-m", "hio_http", "--port", "0", "--threads", "-2",
                             "slowapp:app"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 2
    assert "threads must be a whole number from 0 up" in result.stderr
    assert "Traceback" not in result.stderr


def test_compressed_streams_are_framed_on_the_thread_and_decoded_whole(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield b"x" * 3000
            yield b""  # not yet: the gzip stream carries on with the next job
            yield b"y" * 3000

        return body()

    server = serve(app, threads=2, compress=True)
    answer = requests.get(server.url + "/", headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert answer.headers["Content-Encoding"] == "gzip"
    assert answer.content == b"x" * 3000 + b"y" * 3000



def test_relay_pending_stays_the_socket_bytes_plus_the_collected_ones_under_concurrent_writes():
    """An app thread's writes and the loop's view of the socket change `pending` at once: the
    count must never lose either side (it is what the high-water mark is checked against)."""
    from types import SimpleNamespace

    from hio_http.threaded import Relay

    relay = Relay(SimpleNamespace(tls=False, pending=100))
    assert relay.pending == 100
    writes = 20000

    def writer():
        for _ in range(writes):
            relay.send(b"x")

    thread = threading.Thread(target=writer)
    thread.start()
    seen = 0
    while thread.is_alive():
        seen = (seen + 7) % 1000  # the loop watching the socket drain and fill
        relay.see_unsent(seen)
    thread.join()
    collected = sum(len(chunk) for chunk in relay.chunks)
    assert collected == writes
    assert relay.pending == relay.unsent + collected
    taken = relay.take(5)
    assert len(taken) == writes and relay.pending == 5
    relay.send(b"abc")
    relay.close()
    assert relay.pending == 5 and relay.chunks == []
