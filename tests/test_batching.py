"""Sends made in a batch of the Poller (the callbacks of several ready sockets, an accept loop)
wait for the batch's end (Connection._batch)."""

import socket
import time

import pytest

from hio_http import net
from hio_http.polling import READ, Poller

from conftest import ConnectionEvents


@pytest.fixture
def rig():
    """A Poller, a batching Connection on one end of a socket pair, the other end, and a
    trigger socket pair whose readiness runs a callback inside a dispatch."""
    poller = Poller()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    handler = ConnectionEvents()
    connection = net.Connection(ours, ("127.0.0.1", 1), poller, handler)
    connection.batch_sends = True
    bell, clapper = socket.socketpair()
    bell.setblocking(False)
    yield poller, connection, theirs, handler, bell, clapper
    connection.close()
    for sock in (theirs, bell, clapper):
        sock.close()
    poller.close()


def readable_now(sock):
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""


def dispatch_once(poller, bell, clapper, callback, alone=False):
    """Run `callback` inside one dispatch of `poller`, as a ready socket's callback runs; with
    another socket ready in the same dispatch unless `alone`."""
    others = [] if alone else list(socket.socketpair())
    def ready(mask):
        bell.recv(16)
        callback()
    poller.register(bell, READ, ready)
    clapper.send(b"!")
    if others:
        poller.register(others[0], READ, lambda mask: others[0].recv(16))
        others[1].send(b"!")
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline:
            if poller.poll(0.05) == (1 if alone else 2):
                break
    finally:
        poller.unregister(bell)
        if others:
            poller.unregister(others[0])
            for sock in others:
                sock.close()


def receive_all(sock, size):
    data = b""
    deadline = time.monotonic() + 5
    while len(data) < size and time.monotonic() < deadline:
        data += readable_now(sock)
    return data


def test_a_send_inside_a_dispatch_goes_at_its_end(rig):
    poller, connection, theirs, handler, bell, clapper = rig
    seen_during = []

    def answer():
        connection.send(b"head;")
        connection.send_parts([b"body", b";"])
        seen_during.append(readable_now(theirs))
        seen_during.append(connection.pending)

    dispatch_once(poller, bell, clapper, answer)
    assert seen_during == [b"", 10]  # nothing left before the dispatch ended
    assert receive_all(theirs, 10) == b"head;body;"
    assert connection.pending == 0 and handler.drains == 1


def test_a_send_outside_a_dispatch_goes_at_once(rig):
    poller, connection, theirs, handler, bell, clapper = rig
    connection.send(b"now")
    assert readable_now(theirs) == b"now"
    assert handler.drains == 0


def test_a_close_right_after_a_batched_send_sends_it_first(rig):
    poller, connection, theirs, handler, bell, clapper = rig

    def answer_and_close():
        connection.send(b"last words")
        connection.close()

    dispatch_once(poller, bell, clapper, answer_and_close)
    assert receive_all(theirs, 10) == b"last words"
    assert handler.closes == 1


def test_close_when_drained_waits_for_the_batched_bytes(rig):
    poller, connection, theirs, handler, bell, clapper = rig

    def answer_and_close():
        connection.send(b"goodbye")
        connection.close_when_drained()
        assert not connection.closed

    dispatch_once(poller, bell, clapper, answer_and_close)
    assert connection.closed
    assert receive_all(theirs, 7) == b"goodbye"


def test_what_the_socket_does_not_take_waits_for_writability(rig):
    poller, connection, theirs, handler, bell, clapper = rig
    block = b"x" * (1 << 20)
    sent = [block] * 8

    dispatch_once(poller, bell, clapper, lambda: [connection.send(b) for b in sent])
    assert connection.pending > 0  # the pair's buffers hold far less than 8 MiB
    received = 0
    deadline = time.monotonic() + 10
    while received < len(block) * len(sent) and time.monotonic() < deadline:
        received += len(readable_now(theirs))
        poller.poll(0)
    assert received == len(block) * len(sent)
    assert connection.pending == 0 and handler.drains == 1


@pytest.mark.parametrize("alone, batch_sends", [(False, False), (True, True)],
                         ids=["a connection that does not batch", "a lone ready socket"])
def test_a_send_inside_a_dispatch_goes_at_once_when_nothing_batches(rig, alone, batch_sends):
    poller, connection, theirs, handler, bell, clapper = rig
    connection.batch_sends = batch_sends
    seen = []
    dispatch_once(poller, bell, clapper,
                  lambda: (connection.send(b"now"), seen.append(readable_now(theirs))),
                  alone=alone)
    assert seen == [b"now"]


def test_an_accept_loop_is_one_batch():
    poller = Poller()
    listener = net.Acceptor(("127.0.0.1", 0), poller, lambda sock, peer: answered.append(
        (sock, poller.batch_depth > 0)))
    answered = []
    clients = [socket.create_connection(listener.address[:2], timeout=5) for _ in range(3)]
    try:
        deadline = time.monotonic() + 5
        while len(answered) < 3 and time.monotonic() < deadline:
            poller.poll(0.05)
        assert [batching for _, batching in answered] == [True, True, True]
        assert poller.batch_depth == 0
    finally:
        listener.close()
        for sock, _ in answered:
            sock.close()
        for sock in clients:
            sock.close()
        poller.close()
