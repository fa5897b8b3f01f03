"""The Poller's event masks are the selectors module's: code written for selectors (and hio's
own) passes EVENT_READ and EVENT_WRITE and gets them back."""

import selectors
import socket
import time

from hio_http.polling import READ, WRITE, Poller


def test_masks_are_the_selectors_modules():
    assert (READ, WRITE) == (selectors.EVENT_READ, selectors.EVENT_WRITE)


def test_ready_masks_over_a_socket_pair():
    left, right = socket.socketpair()
    poller = Poller()
    seen = []
    try:
        left.setblocking(False)
        poller.register(left, selectors.EVENT_READ | selectors.EVENT_WRITE, seen.append)
        poller.poll(1.0)
        assert seen == [selectors.EVENT_WRITE]  # nothing to read yet; room to write
        right.sendall(b"x")
        deadline = time.monotonic() + 5
        while selectors.EVENT_READ | selectors.EVENT_WRITE not in seen:
            assert time.monotonic() < deadline, seen
            poller.poll(0.1)
        poller.modify(left, selectors.EVENT_READ, seen.append)
        seen.clear()
        poller.poll(1.0)
        assert seen == [selectors.EVENT_READ]
    finally:
        poller.close()
        left.close()
        right.close()
