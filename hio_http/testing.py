"""Helpers for tests: step an app's server and a client tick by tick in one simulated Doist
(`Loop`: no threads, no sleeps, deterministic), or serve an app from a background thread for
blocking clients such as `requests` (`serve_in_thread`). Both always shut down cleanly.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional

from .clienting import Client, ClientDoer, Response
from .doing import Doist, EndWhen
from .serving import BaseServer, Server, ServerDoer

__all__ = ["Loop", "serve_until", "serve_in_thread", "run_until"]


@contextlib.contextmanager
def serve_in_thread(app=None, cls: type = Server, tock: float = 0.01,
                    **settings) -> Iterator[BaseServer]:
    """Serve `app` on a free port from a real-time Doist in a background thread.

    For blocking clients (`requests`, `urllib`, a browser) that cannot share the loop. `cls` may
    be `BareServer` (then pass `handler=` or `steward=` instead of an app); other keywords are
    server settings. Yields the open server (`server.url`, `server.address`); on leaving, even
    by an exception, the loop stops, the server closes and the thread is joined, and an error
    that ended the server's loop is raised in the test::

        with serve_in_thread(app) as server:
            assert requests.get(server.url + "/hello").json() == {"hello": "world"}
    """
    server = cls(app, **settings) if app is not None or cls is Server else cls(**settings)
    server.open()  # here, so a bind error raises in the test and the URL is known at once
    stop = threading.Event()
    doist = Doist(tock=tock, real=True)
    doist.doers = [ServerDoer(server), EndWhen(doist, stop.is_set)]
    failure: list = []

    def run() -> None:
        try:
            doist.do()
        except BaseException as ex:  # surfaced in the test thread below
            failure.append(ex)

    thread = threading.Thread(target=run, name="hio_http-test-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        doist.poller.wake()
        thread.join(timeout=10)
        server.close()
    if thread.is_alive():
        raise RuntimeError("the test server's loop did not stop within 10 s")
    if failure:
        raise failure[0]


def run_until(doist: Doist, condition: Callable[[], bool], timeout: float = 5.0,
              max_ticks: Optional[int] = None,
              step: Optional[Callable[[], bool]] = None) -> int:
    """Step `doist` (entered, simulated) until `condition()` holds; returns the ticks taken.

    `step`, if given, makes each step instead of `doist.recur()` and says whether it ticked.
    Raises TimeoutError after `timeout` seconds of wall time or `max_ticks` ticks.
    """
    deadline = time.monotonic() + timeout
    ticks = 0
    while not condition():
        if time.monotonic() > deadline or (max_ticks is not None and ticks >= max_ticks):
            raise TimeoutError(f"condition not met after {ticks} ticks")
        if step is None:
            doist.recur()
            ticks += 1
        elif step():
            ticks += 1
    return ticks


class Loop:
    """A server for `app` and a `Client` of it in one simulated Doist, stepped tick by tick.

    No threads and no sleeps: simulated tyme advances one `tock` per tick, both sides keep their
    deadlines on it, and the sockets are real (loopback) so the bytes are the real ones::

        with Loop(app) as loop:
            response = loop.fetch("GET", "/hello")
            assert response.status == 200 and response.json() == {"hello": "world"}

    `cls`/`settings` make the server as `serve_in_thread` does; `client_settings` holds keywords
    for the Client (`timeout`, `max_redirects`, ...); `doers` join the same Doist (periodic tasks, a
    Broadcaster's publisher...). `tyme` tells the simulated time.

    With `threads=N` the app runs on real threads, in real time: while one of them works, the
    loop waits for it (its end wakes the loop) instead of ticking, so simulated time does not
    run ahead of the app and client timeouts mean the same as without threads.
    """

    def __init__(self, app=None, *, cls: type = Server, tock: float = 0.03125,
                 client_settings: Optional[dict] = None, doers: Iterable = (), **settings):
        self.doist = Doist(tock=tock, real=False)
        self.server = cls(app, **settings) if app is not None or cls is Server else cls(**settings)
        self._client_settings = dict(client_settings or {})
        self._doers = list(doers)
        self.client: Optional[Client] = None
        self.opened = False

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def tyme(self) -> float:
        return self.doist.tyme

    def open(self) -> "Loop":
        """Enter the Doist: the server listens on a free port, the client is ready to use."""
        if self.opened:
            return self
        doist = self.doist
        doist.doers = [ServerDoer(self.server)]
        doist.enter()  # the ServerDoer opens the server on the Doist's Poller and tyme
        self.opened = True
        try:
            self.client = Client(self.server.url, **self._client_settings)
            doist.extend([ClientDoer(self.client), *self._doers])
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Exit every doer: the client and the server close."""
        if self.opened:
            self.opened = False
            self.doist.exit()

    def __enter__(self) -> "Loop":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def run_until(self, condition: Callable[[], bool], timeout: float = 5.0,
                  max_ticks: Optional[int] = None) -> int:
        """Tick until `condition()` holds; returns the ticks taken. TimeoutError after `timeout`
        seconds of wall time or `max_ticks` ticks."""
        self.open()
        return run_until(self.doist, condition, timeout=timeout, max_ticks=max_ticks,
                         step=self._step)

    def tick(self, count: int = 1) -> None:
        """Run `count` ticks (each advances tyme by one tock)."""
        self.open()
        for _ in range(count):
            while not self._step():
                pass

    def _step(self) -> bool:
        """One tick, or, while app threads work, a real-time wait for them; True if it ticked."""
        pool = getattr(self.server, "pool", None)
        if pool is not None and (pool.busy or pool.queued):
            self.doist.poller.poll(0.05)  # a job's end wakes this wait at once
            return False
        self.doist.recur()
        return True

    def request(self, method: str, path: str = "/", **kwa: Any) -> Response:
        """Queue a request on the loop's client; its Response fills in as the loop ticks."""
        self.open()
        assert self.client is not None  # open() makes the client
        return self.client.request(method, path, **kwa)

    def fetch(self, method: str, path: str = "/", timeout: float = 5.0, **kwa: Any) -> Response:
        """Request and tick until the response is done (complete or failed)."""
        response = self.request(method, path, **kwa)
        self.run_until(lambda: response.done, timeout=timeout)
        return response

    def get(self, path: str = "/", **kwa: Any) -> Response:
        return self.fetch("GET", path, **kwa)


def serve_until(app, condition: Callable[[Loop], bool], timeout: float = 5.0,
                **kwa: Any) -> Loop:
    """Serve `app` in a fresh `Loop` and tick until `condition(loop)` holds, then close it.

    The condition may start requests on `loop.client` (it is called before every tick), so a
    whole exchange fits in one call; returns the closed loop for inspection. TimeoutError
    after `timeout` seconds of wall time.
    """
    with Loop(app, **kwa) as loop:
        loop.run_until(lambda: condition(loop), timeout=timeout)
    return loop
