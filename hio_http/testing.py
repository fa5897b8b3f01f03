"""Helpers for tests: serve an app in a background thread for blocking clients, or step a server
and its clients tick by tick in one simulated Doist.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator, Optional

from .doing import Doer, Doist
from .serving import BaseServer, Server, ServerDoer


class _Stopper(Doer):
    """Ends its Doist's run (by removing everyone) once `event` is set."""

    def __init__(self, doist: Doist, event: threading.Event, **kwa):
        super().__init__(**kwa)
        self.doist, self.event = doist, event

    def recur(self, tyme: float) -> bool:
        if self.event.is_set():
            self.doist.remove(list(self.doist.doers))
        return False


@contextlib.contextmanager
def serve_in_thread(app=None, cls: type = Server, tock: float = 0.01,
                    **settings) -> Iterator[BaseServer]:
    """Serve `app` on a free port from a real-time Doist in a background thread.

    Yields the open server (`server.url`); on leaving, even by an exception, the loop stops, the
    server closes and the thread is joined.
    """
    server = cls(app, **settings) if app is not None or cls is Server else cls(**settings)
    server.open()  # here, so a bind error raises in the test and the URL is known at once
    stop = threading.Event()
    doist = Doist(tock=tock, real=True)
    doist.doers = [ServerDoer(server), _Stopper(doist, stop)]
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
        thread.join(timeout=10)
        server.close()
    if thread.is_alive():
        raise RuntimeError("the test server's loop did not stop within 10 s")
    if failure:
        raise failure[0]


def run_until(doist: Doist, condition: Callable[[], bool], timeout: float = 5.0,
              max_ticks: Optional[int] = None) -> int:
    """Step `doist` (entered, simulated) until `condition()` holds; returns the ticks taken.

    Raises TimeoutError after `timeout` seconds of wall time or `max_ticks` ticks.
    """
    deadline = time.monotonic() + timeout
    ticks = 0
    while not condition():
        if time.monotonic() > deadline or (max_ticks is not None and ticks >= max_ticks):
            raise TimeoutError(f"condition not met after {ticks} ticks")
        doist.recur()
        ticks += 1
    return ticks
