"""pytest fixtures for testing apps on hio_http (entry point `pytest11: hio_http`).

`hio_server(app, **settings)` serves an app from a background thread for blocking clients;
`hio_loop(app, **settings)` steps server and client in one simulated Doist. Everything a
fixture starts is closed at the test's teardown, even when the test fails.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import pytest

from .serving import BaseServer
from .testing import Loop, serve_in_thread


@pytest.fixture
def hio_server() -> Iterator[Callable[..., BaseServer]]:
    """Factory: `hio_server(app, **settings)` -> an open server in a background thread
    (`.url`, `.address`), closed at teardown. `cls=BareServer` with `handler=` serves a bare
    handler."""
    with contextlib.ExitStack() as stack:
        def start(app=None, **settings) -> BaseServer:
            return stack.enter_context(serve_in_thread(app, **settings))
        yield start


@pytest.fixture
def hio_loop() -> Iterator[Callable[..., Loop]]:
    """Factory: `hio_loop(app, **settings)` -> an open `hio_http.testing.Loop`: server and
    client in one simulated Doist (`loop.get(path)`, `loop.run_until(condition)`), closed at
    teardown."""
    with contextlib.ExitStack() as stack:
        def start(app=None, **settings) -> Loop:
            return stack.enter_context(Loop(app, **settings))
        yield start
