"""How much a connection asks of one recv(): little for a small request (recv allocates what it
asks for), more and more while receives come back full (a large upload needs few calls), and
little again after a small one. Over a real socket pair, on the Poller."""

import socket
import threading
import time

import pytest

from hio_http import net
from hio_http.polling import Poller

from conftest import ConnectionEvents


class Recorder(ConnectionEvents):
    """Keeps the size of each receive and what the connection was asking for then."""

    def __init__(self):
        super().__init__()
        self.connection = None
        self.sizes = []
        self.asked = []

    def received(self, data):
        self.sizes.append(len(data))
        self.asked.append(self.connection.receive_size)


@pytest.fixture
def rig():
    poller = Poller()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    handler = Recorder()
    connection = net.Connection(ours, ("127.0.0.1", 1), poller, handler)
    handler.connection = connection
    yield poller, connection, theirs, handler
    connection.close()
    theirs.close()
    poller.close()


def pump_until(poller, condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        poller.poll(0.05)


def test_a_small_request_is_read_with_a_small_receive(rig):
    poller, connection, theirs, handler = rig
    theirs.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    pump_until(poller, lambda: sum(handler.sizes) == 27)
    assert handler.asked == [net.FIRST_RECEIVE]
    assert connection.receive_size == net.FIRST_RECEIVE


def test_receives_grow_while_full_and_start_over_after_a_small_one(rig):
    poller, connection, theirs, handler = rig
    total = 8 * net.RECEIVE_SIZE
    sender = threading.Thread(target=theirs.sendall, args=(b"u" * total,))
    sender.start()
    pump_until(poller, lambda: sum(handler.sizes) == total)
    sender.join()
    assert handler.asked[0] == net.FIRST_RECEIVE
    assert max(handler.asked) == net.RECEIVE_SIZE  # grew to the limit, never past it
    assert max(handler.sizes) <= net.RECEIVE_SIZE
    for before, after, size in zip(handler.asked, handler.asked[1:], handler.sizes):
        if size >= before:  # a full receive: the next asks four times more, up to the limit
            assert after == min(4 * before, net.RECEIVE_SIZE)
    received = len(handler.sizes)
    theirs.sendall(b"x" * 10)
    pump_until(poller, lambda: len(handler.sizes) > received)
    assert connection.receive_size == net.FIRST_RECEIVE


def test_a_limit_below_the_default_is_kept(rig):
    poller, connection, theirs, handler = rig
    connection.receive_limit = net.FIRST_RECEIVE * 2  # as a client reading for a slow consumer
    total = 16 * net.FIRST_RECEIVE
    sender = threading.Thread(target=theirs.sendall, args=(b"u" * total,))
    sender.start()
    pump_until(poller, lambda: sum(handler.sizes) == total)
    sender.join()
    assert max(handler.sizes) <= net.FIRST_RECEIVE * 2
    assert max(handler.asked) == net.FIRST_RECEIVE * 2
