"""What KERI-style daemons do with `hio.core.http`, run twice: against hio itself (from PyPI)
and against `hio_http.compat.http`, the module import being the only difference. The scheduler
stays hio's (`hio.base.doing`), as in those daemons.

Where hio has a bug the shared tests would hit (port 0 turns into 80, so they bind a port found
free just before), the shared tests avoid it, and tests at the end show that ours does right.
"""

import importlib
import json
import logging
import socket
import ssl
import time
import warnings

import falcon
import pytest
import requests

from hio.base import doing, tyming
from hio.core import tcp

from conftest import free_port  # hio cannot bind port 0 (it becomes 80): the shared tests need one

MODULES = ["hio.core.http", "hio_http.compat.http"]
CESR_ATTACHMENT = b"-VAi-CABBD8-gMSJ6K1PQ7_gG5ZJn2NkHQJgdkiNrTBz_FWWS_cC0AAAAAAAAAAAAAAAAAAAAAAA"
EVENTS = 3


@pytest.fixture(params=MODULES)
def http(request):
    """The http package under test: hio's, or ours in its place."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # hio's own utcnow() and the like
        return importlib.import_module(request.param)


@pytest.fixture(autouse=True)
def quiet_hio_deprecations():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


# -- the daemon's app: Falcon endpoints, an event stream fed by another doer, static files ----

class Cues(doing.Doer):
    """Another doer in the daemon: publishes an event every few ticks for the stream."""

    def __init__(self, **kwa):
        super().__init__(**kwa)
        self.published = []
        self.turns = 0

    def recur(self, tyme):
        self.turns += 1
        if self.turns % 3 == 0 and len(self.published) < EVENTS:
            self.published.append(len(self.published) + 1)
        return False


def event_stream(cues):
    """b"" while nothing is published, then each event as a bytearray, as keripy's do."""
    sent = 0
    while sent < EVENTS:
        if len(cues.published) <= sent:
            yield b""
            continue
        number = cues.published[sent]
        sent += 1
        yield bytearray(f"id: {number}\nevent: note\ndata: event {number}\n\n".encode())


class Receipts:
    """A POST that answers and closes the connection, as keripy endpoints do."""

    def __init__(self):
        self.received = []

    def on_post(self, req, rep):
        self.received.append(json.loads(req.bounded_stream.read()))
        rep.set_header("Connection", "close")
        rep.status = falcon.HTTP_202
        rep.data = json.dumps({"accepted": len(self.received)}).encode()


class Cesr:
    def on_put(self, req, rep):
        body = req.bounded_stream.read()
        rep.set_header("Connection", "close")
        rep.media = {"attachment": req.get_header("CESR-ATTACHMENT"),
                     "type": req.content_type, "length": req.content_length,
                     "body": body.decode()}


class Stream:
    def __init__(self, cues):
        self.cues = cues

    def on_get(self, req, rep):
        rep.content_type = "text/event-stream"
        rep.stream = event_stream(self.cues)

    def on_post(self, req, rep):  # KERIA answers some POSTs with a stream
        self.on_get(req, rep)


class Upload:
    def on_post(self, req, rep):
        if req.content_type.startswith("multipart/form-data"):
            rep.media = {part.name: part.text for part in req.get_media()}
        else:  # application/x-www-form-urlencoded
            rep.media = dict(req.get_media())


def make_app(http, static_dir, cues):
    app = falcon.App()
    receipts = Receipts()
    app.add_route("/receipts", receipts)
    app.add_route("/cesr", Cesr())
    app.add_route("/stream", Stream(cues))
    app.add_route("/upload", Upload())
    sink = http.serving.StaticSink(staticDirPath=str(static_dir))
    app.add_sink(sink, prefix=sink.DefaultStaticSinkBasePath)
    app.add_sink(sink, prefix=sink.StaticSinkBasePath)
    app.add_sink(sink, prefix="/ui")
    return app, receipts


@pytest.fixture
def static_dir(tmp_path):
    root = tmp_path / "static"
    (root / "ui").mkdir(parents=True)
    (root / "index.html").write_text("<p>home</p>\n")
    (root / "style.css").write_text("p { color: teal; }\n")
    (root / "ui" / "page.html").write_text("<p>ui page</p>\n")
    return root


# -- a client per URL, as the daemons use them ----------------------------------------------

class Fetcher(doing.Doer):
    """Runs `steps` one after another, each with a new Client and ClientDoer added to the
    Doist and removed once it has what it waits for; then ends the run."""

    def __init__(self, doist, http, steps, **kwa):
        super().__init__(**kwa)
        self.doist, self.http, self.steps = doist, http, list(steps)
        self.results, self.current = [], None

    def recur(self, tyme):
        if self.current is None:
            if not self.steps:
                self.doist.remove([d for d in self.doist.doers if d is not self])
                return True
            make, wait = self.steps.pop(0)
            client = make(self.http)
            doer = self.http.ClientDoer(client=client)
            self.doist.extend([doer])
            self.current = (client, doer, wait)
            return False
        client, doer, wait = self.current
        if wait(client):
            self.results.append(client)
            self.doist.remove([doer])
            self.current = None
        return False


def run_daemon(http, server, cues, steps, limit=20.0):
    doist = doing.Doist(tock=0.01, real=True, limit=limit)
    fetcher = Fetcher(doist, http, steps)
    doist.do(doers=[http.ServerDoer(server=server), cues, fetcher])
    assert fetcher.done, "the daemon's steps did not finish within the limit"
    return fetcher.results


def got_response(client):
    return bool(client.responses)


def got_events(client):
    return len(client.events) >= EVENTS


def test_daemon_serves_and_fetches_under_hios_doist(http, static_dir):
    cues = Cues()
    app, receipts = make_app(http, static_dir, cues)
    port = free_port()
    server = http.Server(host="127.0.0.1", port=port, app=app, tymeout=5.0)
    url = f"http://127.0.0.1:{port}"
    cesr_body = b'{"v":"KERI10JSON0000fd_","t":"rct"}'

    steps = [
        (lambda h: _client(h, url, "POST", "/receipts", data={"d": "EAbc"}), got_response),
        (lambda h: _client(h, url, "PUT", "/cesr", body=cesr_body, headers={
            "Content-Type": "application/cesr+json", "Content-Length": len(cesr_body),
            "CESR-ATTACHMENT": bytearray(CESR_ATTACHMENT)}), got_response),
        (lambda h: _client(h, url, "POST", "/stream", data={"from": 0}), got_events),
        (lambda h: _client(h, url, "POST", "/upload", fargs={"name": "alice", "role": "wit"},
                           headers={"Content-Type": "multipart/form-data"}), got_response),
        (lambda h: _client(h, url, "POST", "/upload", fargs={"name": "bob", "note": "a b"}),
         got_response),
        (lambda h: _client(h, url, "GET", "/"), got_response),
        (lambda h: _client(h, url, "GET", "/static/style.css"), got_response),
        (lambda h: _client(h, url, "GET", "/static/"), got_response),
        (lambda h: _client(h, url, "GET", "/ui/page.html"), got_response),
        (lambda h: _client(h, url, "GET", "/static/missing.js"), got_response),
    ]
    receipt, cesr, stream, upload, form, home, css, static_index, page, missing = run_daemon(
        http, server, cues, steps)

    answer = receipt.respond()
    assert (answer.status, answer.data, answer.errored) == (202, {"accepted": 1}, False)
    assert answer.headers["connection"].lower() == "close"
    assert receipts.received == [{"d": "EAbc"}]

    answer = cesr.responses.popleft()
    assert answer["status"] == 200
    assert answer["data"] == {"attachment": CESR_ATTACHMENT.decode(),
                              "type": "application/cesr+json", "length": len(cesr_body),
                              "body": cesr_body.decode()}

    events = list(stream.events)
    assert [(e["id"], e["name"], e["data"]) for e in events] == [
        (str(n), "note", f"event {n}") for n in range(1, EVENTS + 1)]

    assert upload.responses[0]["data"] == {"name": "alice", "role": "wit"}
    assert form.responses[0]["data"] == {"name": "bob", "note": "a b"}

    for client, text in ((home, "<p>home</p>\n"), (static_index, "<p>home</p>\n"),
                         (css, "p { color: teal; }\n"), (page, "<p>ui page</p>\n")):
        answer = client.responses[0]
        assert (answer["status"], bytes(answer["body"]).decode()) == (200, text)
    assert home.responses[0]["headers"]["Content-Type"].lower().startswith("text/html")
    assert css.responses[0]["headers"]["content-type"].lower().startswith("text/css")
    assert missing.responses[0]["status"] == 404
    assert server.servant.opened is False  # the ServerDoer closed it on exit


def _client(http, url, method, path, **request):
    """A Client for one URL, with the request queued: what keripy does for each message."""
    client = http.Client(path=url + path, portOptional=True)
    client.request(method=method, path=path, **request)
    return client


@pytest.mark.parametrize("how", ["servant", "paths"])
def test_tls_through_a_servant_or_key_and_cert_paths(http, certificate, how):
    cert, key = certificate
    cues = Cues()

    def hello(environ, start_response):
        body = json.dumps({"scheme": environ["wsgi.url_scheme"]}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    port = free_port()
    if how == "servant":
        servant = tcp.ServerTls(host="127.0.0.1", port=port, certify=ssl.CERT_NONE,
                                keypath=key, certpath=cert)
        server = http.Server(app=hello, servant=servant)
    else:
        server = http.Server(app=hello, host="127.0.0.1", port=port, scheme="https",
                             certify=ssl.CERT_NONE, keypath=key, certpath=cert)
    assert server.scheme == "https"

    def secure(h):
        client = h.Client(scheme="https", hostname="127.0.0.1", port=port,
                          certedhost="localhost", cafilepath=cert)
        client.request(method="GET", path="/secure", headers={"Accept": "application/json"})
        return client

    (client,) = run_daemon(http, server, cues, [(secure, got_response)])
    answer = client.respond()
    assert (answer.status, answer.data, answer.errored) == (200, {"scheme": "https"}, False)
    assert client.requester.scheme == "https"


def test_open_server_and_client_driven_by_hand(http):
    """hio's own tests' way: openServer / openClient, service() by hand, a Tymist ticked."""
    def app(environ, start_response):
        body = json.dumps({"path": environ["PATH_INFO"], "query": environ["QUERY_STRING"],
                           "method": environ["REQUEST_METHOD"]}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    tymist = tyming.Tymist(tyme=0.0)
    port = free_port()
    with http.openServer(port=port, app=app, tymth=tymist.tymen()) as server:
        assert server.servant.ha == ("0.0.0.0", port)
        assert server.servant.eha == ("127.0.0.1", port)
        path = f"http://localhost:{server.servant.eha[1]}/"
        with http.openClient(path=path, tymth=tymist.tymen(), reconnectable=True) as client:
            assert (client.requester.hostname, client.requester.port) == ("localhost", port)
            client.requests.append({"method": "GET", "path": "/echo?name=fame", "qargs": {},
                                    "fragment": "",
                                    "headers": {"Accept": "application/json",
                                                "Content-Length": 0}})
            client.request(method="GET", path="/second", qargs={"x": "1"})
            deadline = time.monotonic() + 10
            while (client.requests or len(client.responses) < 2 or not server.idle()):
                assert time.monotonic() < deadline, "no responses by hand within 10 s"
                server.service()
                time.sleep(0.01)
                client.service()
                time.sleep(0.01)
                tymist.tick(tock=0.1)
            first, second = client.respond(), client.respond()
            assert client.respond() is None
    assert (first.status, first.reason, first.version) == (200, "OK", (1, 1))
    assert first.data == {"path": "/echo", "query": "name=fame", "method": "GET"}
    assert first.headers["CONTENT-TYPE"] == "application/json"
    # (hio reuses one bytearray for every body it parses: only the last body survives)
    assert second.body == bytearray(json.dumps(second.data).encode())
    assert (first.request["method"], first.request["path"]) == ("GET", "/echo")
    assert first.errored is False and first.error is None
    assert second.data == {"path": "/second", "query": "x=1", "method": "GET"}


def test_bare_server_echoes_by_default(http):
    tymist = tyming.Tymist(tyme=0.0)
    port = free_port()
    with http.openServer(cls=http.BareServer, port=port, tymth=tymist.tymen()) as server:
        with http.openClient(path=f"http://localhost:{port}/", tymth=tymist.tymen()) as client:
            client.requests.append({"method": "GET", "path": "/echo?name=fame", "qargs": {},
                                    "fragment": "", "headers": {"Accept": "application/json"}})
            _exchange(server, client, tymist)
            echo = client.respond().data
        with http.openClient(method="PUT", path=f"http://localhost:{port}/again",
                             body=b"payload", tymth=tymist.tymen()) as client:
            client.transmit()  # the request the client was made with, as hio's tests send
            _exchange(server, client, tymist, idle=False)  # hio: the first client's lingers
            again = client.respond().data
    assert (echo["method"], echo["path"], echo["qargs"]) == ("GET", "/echo", {"name": "fame"})
    assert ["Accept", "application/json"] in echo["headers"]
    assert (again["method"], again["path"], again["body"]) == ("PUT", "/again", "payload")


def _exchange(server, client, tymist, idle=True):
    deadline = time.monotonic() + 10
    while client.requests or not client.responses or (idle and not server.idle()):
        assert time.monotonic() < deadline, "no response within 10 s"
        server.service()
        client.service()
        time.sleep(0.01)
        tymist.tick(tock=0.1)


# -- where hio has a bug, ours does the right thing ----------------------------------------

from hio_http.compat import http as ours  # noqa: E402


def serve_by_hand(server, client, done, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "condition not met in time"
        server.service()
        client.service()
        time.sleep(0.005)


def test_port_zero_is_any_free_port_and_remote_addr_is_text():
    def app(environ, start_response):
        body = json.dumps({"remote": environ["REMOTE_ADDR"]}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    with ours.openServer(host="127.0.0.1", port=0, app=app) as server:
        host, port = server.servant.ha
        assert host == "127.0.0.1" and port not in (0, 80)
        with ours.openClient(hostname="127.0.0.1", port=port) as client:
            client.request(method="GET", path="/")
            client.request(method="GET", path="/again")
            serve_by_hand(server, client, lambda: len(client.responses) == 2)
            first, second = client.respond(), client.respond()
    assert first.data == second.data == {"remote": "127.0.0.1"}
    assert first.body == second.body == b'{"remote": "127.0.0.1"}'  # each its own body


def test_form_values_are_encoded_whole():
    """hio joins fargs unescaped, so a value with & or = comes apart; ours encodes it."""
    def app(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"type": environ["CONTENT_TYPE"], "body": body.decode()}).encode()]

    with ours.openServer(host="127.0.0.1", port=0, app=app) as server:
        with ours.openClient(hostname="127.0.0.1", port=server.servant.ha[1]) as client:
            client.request(method="POST", path="/", fargs={"note": "a&b=c", "n": 1})
            serve_by_hand(server, client, lambda: client.responses)
    answer = client.respond().data
    assert answer["type"] == "application/x-www-form-urlencoded; charset=utf-8"
    assert answer["body"] == "note=a%26b%3Dc&n=1"


def test_reopen_says_whether_it_listens():
    with ours.openServer(host="127.0.0.1", port=0) as first:
        taken = first.servant.ha[1]
        second = ours.Server(host="127.0.0.1", port=taken)
        assert first.servant.opened and second.reopen() is False
        assert second.servant.opened is False
        second.close()
        assert first.reopen() is True and first.servant.opened


def test_static_sink_stays_inside_its_directory_and_serves_only_get(tmp_path):
    root = tmp_path / "static"
    root.mkdir()
    (root / "index.html").write_text("<p>in</p>")
    (root / "data.unknownext").write_bytes(b"\x00\x01")
    (tmp_path / "secret.txt").write_text("outside")
    app = falcon.App()
    sink = ours.StaticSink(staticDirPath=str(root))
    app.add_sink(sink, prefix="/static")
    with ours.openServer(host="127.0.0.1", port=0, app=app) as server:
        with _served(server):
            url = f"http://127.0.0.1:{server.servant.ha[1]}"
            assert requests.get(url + "/static", timeout=5).text == "<p>in</p>"
            assert requests.get(url + "/static/../secret.txt", timeout=5).status_code == 404
            raw = _raw_get(server.servant.ha[1], b"/static/%2e%2e/secret.txt")
            assert raw.startswith(b"HTTP/1.1 404") and b"outside" not in raw
            assert requests.post(url + "/static/index.html", timeout=5).status_code == 405
            odd = requests.get(url + "/static/data.unknownext", timeout=5)
            assert odd.status_code == 200
            assert odd.headers["Content-Type"] == "application/octet-stream"


def test_missing_static_directory_is_a_warning_then_served_once_it_exists(tmp_path, caplog):
    root = tmp_path / "later"
    with caplog.at_level(logging.WARNING, logger="hio_http.compat"):
        sink = ours.StaticSink(staticDirPath=str(root))
    assert "does not exist" in caplog.text
    app = falcon.App()
    app.add_sink(sink, prefix="/")
    with ours.openServer(host="127.0.0.1", port=0, app=app) as server:
        with _served(server):
            url = f"http://127.0.0.1:{server.servant.ha[1]}"
            assert requests.get(url + "/", timeout=5).status_code == 404
            root.mkdir()
            (root / "index.html").write_text("now")
            assert requests.get(url + "/", timeout=5).text == "now"


def test_keywords_without_meaning_warn_once_and_typos_are_errors():
    with pytest.warns(DeprecationWarning, match="bufsize, wl") as caught:
        server = ours.Server(port=0, bufsize=131072, wl=None, app=None)
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1 and deprecations[0].filename == __file__
    server.close()
    with pytest.warns(DeprecationWarning, match="bufsize") as caught:
        ours.Client(hostname="127.0.0.1", port=1, bufsize=8096).close()
    assert caught[0].filename == __file__
    with pytest.raises(TypeError, match="prot"):
        ours.Server(prot=0)
    with pytest.raises(TypeError, match="hostnme"):
        ours.Client(hostnme="127.0.0.1")


def test_transport_errors_land_in_the_response_and_bad_headers_raise_at_once(refusing_port):
    port = refusing_port
    client = ours.Client(hostname="127.0.0.1", port=port)
    with pytest.raises(TypeError, match="str, bytes-like or int"):
        client.request(method="GET", path="/", headers={"X-Odd": 1.5})
    client.request(method="GET", path="/")
    deadline = time.monotonic() + 10
    while not client.responses:
        assert time.monotonic() < deadline
        client.service()
        time.sleep(0.005)
    answer = client.respond()
    assert answer.errored is True and answer.status is None and "refused" in answer.error.lower()
    client.close()


def test_event_dicts_carry_retry_and_a_streaming_post_feeds_events():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return iter([b"retry: 1500\n", bytearray(b"id: 7\ndata: one\n\n"), b"",
                     memoryview(b"event: ping\ndata: two\n\n")])

    with ours.openServer(host="127.0.0.1", port=0, app=app) as server:
        with ours.openClient(hostname="127.0.0.1", port=server.servant.ha[1]) as client:
            client.request(method="POST", path="/events", data={"since": 0})
            serve_by_hand(server, client, lambda: len(client.events) >= 2)
    assert list(client.events) == [{"id": "7", "name": "", "data": "one", "retry": 1500},
                                   {"id": "7", "name": "ping", "data": "two", "retry": None}]
    assert not client.responses  # as in hio, a stream feeds .events, not .responses


def test_bare_server_with_a_steward_subclass():
    class Status(ours.Steward):
        def respond(self):
            if self.requestant.path == "/status":
                self.responder.build(status=201, headers={"X-Kind": b"bare"},
                                     data={"method": self.requestant.method})
            else:
                super().respond()  # hio's echo

    with ours.openServer(cls=ours.BareServer, host="127.0.0.1", port=0,
                         steward=Status) as server:
        with ours.openClient(hostname="127.0.0.1", port=server.servant.ha[1]) as client:
            client.request(method="PUT", path="/status")
            client.request(method="GET", path="/echo?name=fame")
            serve_by_hand(server, client, lambda: len(client.responses) == 2)
    status, echo = client.respond(), client.respond()
    assert (status.status, status.data, status.headers["x-kind"]) == (201, {"method": "PUT"},
                                                                      "bare")
    assert echo.data["path"] == "/echo" and echo.data["qargs"] == {"name": "fame"}
    assert echo.data["method"] == "GET"


def test_hio_style_server_and_clients_under_this_packages_doist(static_dir):
    """The same adapters under hio_http's own Doist: sockets on its Poller, a limit of 0
    meaning none, the run ended by a condition."""
    from hio_http.doing import Doist, EndWhen

    cues = Cues()
    app, receipts = make_app(ours, static_dir, cues)
    server = ours.Server(host="127.0.0.1", port=0, app=app)
    server.reopen()
    url = f"http://127.0.0.1:{server.servant.ha[1]}"
    post = _client(ours, url, "POST", "/receipts", data={"d": "E1"})
    stream = _client(ours, url, "POST", "/stream", data={"from": 0})
    doist = Doist(tock=0.01, real=True, limit=0)
    done = EndWhen(doist, lambda: post.responses and got_events(stream))
    started = time.monotonic()
    doist.do(doers=[ours.ServerDoer(server=server), cues, ours.ClientDoer(client=post),
                    ours.ClientDoer(client=stream), done])
    assert time.monotonic() - started < 10
    assert post.respond().data == {"accepted": 1}
    assert [e["data"] for e in stream.events] == [f"event {n}" for n in range(1, EVENTS + 1)]
    assert not server.servant.opened


class _served:
    """Serve a hio-style server from a background thread for blocking clients."""

    def __init__(self, server):
        import threading
        self.server, self.stop = server, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            self.server.service()
            time.sleep(0.002)

    def __enter__(self):
        self.thread.start()
        return self.server

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def _raw_get(port, target):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)
