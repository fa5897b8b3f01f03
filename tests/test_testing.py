"""The test helpers: `Loop` (server and client in one simulated Doist), `serve_until`,
`serve_in_thread`, and the pytest plugin's fixtures `hio_server` and `hio_loop`."""

import threading

import falcon
import pytest
import requests

from hio_http.clienting import ClientTimeout
from hio_http.doing import Doer
from hio_http.responding import CustomResponder
from hio_http.serving import BareServer
from hio_http.testing import Loop, run_until, serve_in_thread, serve_until

# The plugin's fixtures, imported so these tests run whether or not the entry point is installed.
from hio_http.pytest_plugin import hio_loop, hio_server  # noqa: F401


def hello_app():
    app = falcon.App()

    class Hello:
        def on_get(self, req, resp):
            resp.media = {"hello": req.get_param("name", default="world"),
                          "thread": threading.current_thread().name}

    app.add_route("/hello", Hello())
    return app


def test_loop_serves_and_fetches_without_threads():
    with Loop(hello_app()) as loop:
        response = loop.get("/hello?name=loop")
        assert response.status == 200
        assert response.json() == {"hello": "loop", "thread": threading.current_thread().name}
        assert loop.url == loop.server.url and loop.url.startswith("http://127.0.0.1:")
    assert not loop.server.opened and loop.client.closed


def test_loop_is_deterministic_in_simulated_time():
    def ticks_for_a_request():
        with Loop(hello_app(), tock=0.125) as loop:
            loop.get("/hello")
            return loop.tyme

    assert ticks_for_a_request() == ticks_for_a_request()


def test_loop_runs_extra_doers_on_the_same_clock():
    class Counter(Doer):
        def __init__(self, **kwa):
            super().__init__(**kwa)
            self.count = 0

        def recur(self, tyme):
            self.count += 1
            return False

    def handler(request):
        return CustomResponder(data={"count": counter.count})

    counter = Counter(tock=0.25)
    with Loop(cls=BareServer, handler=handler, doers=[counter]) as loop:
        start = loop.tyme
        loop.tick(33)  # passes at start + 0, 1/32, ... 32/32: one simulated second
        assert loop.tyme == start + 33 * 0.03125
        assert counter.count == 5  # at +0, 0.25, 0.5, 0.75 and 1.0
        assert loop.get("/").json()["count"] >= 5


def test_loop_run_until_has_a_deadline():
    with Loop(hello_app()) as loop:
        with pytest.raises(TimeoutError):
            loop.run_until(lambda: False, max_ticks=10)
        with pytest.raises(TimeoutError):
            run_until(loop.doist, lambda: False, timeout=0.05)


def test_loop_client_settings_and_timeouts():
    never = lambda request: None  # noqa: E731  "not yet", forever
    with Loop(cls=BareServer, handler=never, client_settings={"timeout": 0.5}) as loop:
        response = loop.get("/never")
        assert isinstance(response.error, ClientTimeout)
        assert loop.tyme == pytest.approx(0.5, abs=0.1)


def test_loop_closes_even_when_the_test_fails():
    loop = Loop(hello_app())
    with pytest.raises(RuntimeError):
        with loop:
            loop.get("/hello")
            raise RuntimeError("the test failed here")
    assert not loop.server.opened and loop.client.closed


def test_serve_until_one_call():
    responses = []

    def exchanged(loop):
        if not responses:
            responses.append(loop.client.get("/hello?name=until"))
        return responses[0].done

    loop = serve_until(hello_app(), exchanged)
    assert responses[0].json()["hello"] == "until"
    assert not loop.server.opened


def test_serve_in_thread_for_blocking_clients():
    with serve_in_thread(hello_app()) as server:
        answer = requests.get(server.url + "/hello", timeout=5).json()
        assert answer["hello"] == "world" and answer["thread"] == "hio_http-test-server"
    assert not server.opened


def test_serve_in_thread_shuts_down_when_the_test_fails():
    with pytest.raises(AssertionError):
        with serve_in_thread(hello_app()) as server:
            assert requests.get(server.url + "/nowhere", timeout=5).status_code == 200
    assert not server.opened
    assert not any(t.name == "hio_http-test-server" for t in threading.enumerate())


def test_hio_server_fixture(hio_server):  # noqa: F811
    server = hio_server(hello_app())
    other = hio_server(cls=BareServer, handler=lambda request: CustomResponder(data=[1, 2]))
    assert requests.get(server.url + "/hello?name=fixture", timeout=5).json()["hello"] == "fixture"
    assert requests.get(other.url, timeout=5).json() == [1, 2]


def test_hio_loop_fixture(hio_loop):  # noqa: F811
    loop = hio_loop(hello_app(), client_settings={"timeout": 2.0})
    assert loop.get("/hello").json()["hello"] == "world"
    assert loop.client.timeout == 2.0
