"""Real-time Doist: it waits in its Poller, wakes at once for ready sockets, and sleeps when idle."""

import socket
import threading
import time

import pytest

from hio_http.doing import Doer, Doist
from hio_http.polling import READ, WRITE, Poller, poller_of


class SocketWaiter(Doer):
    """Registers a socket with the Doist's Poller and records when its data is seen."""

    def __init__(self, sock, **kwa):
        super().__init__(**kwa)
        self.sock = sock
        self.seen_at = None

    def enter(self):
        poller_of(self.tymth).register(self.sock, READ)  # no callback: just wake the Doist

    def recur(self, tyme):
        try:
            data = self.sock.recv(64)
        except BlockingIOError:
            return False
        self.seen_at = time.monotonic()
        return bool(data)

    def exit(self):
        poller_of(self.tymth).unregister(self.sock)


def test_ready_socket_wakes_doist_mid_tock():
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    waiter = SocketWaiter(reader)
    sent_at = []

    def send_later():
        sent_at.append(time.monotonic())
        writer.send(b"x")

    timer = threading.Timer(0.2, send_later)  # 0.2 s into a 0.5 s tock
    doist = Doist(tock=0.5, real=True, doers=[waiter])
    timer.start()
    try:
        doist.do(limit=3.0)
    finally:
        timer.cancel()
        reader.close()
        writer.close()
    assert waiter.done is True
    latency = waiter.seen_at - sent_at[0]
    assert latency < 0.1, f"waited {latency:.3f} s for a ready socket with tock 0.5"


def test_idle_real_time_doist_uses_little_cpu():
    class Idle(Doer):
        turns = 0

        def recur(self, tyme):
            self.turns += 1
            return False

    idle = Idle()
    doist = Doist(tock=0.001, real=True, doers=[idle])
    wall, cpu = time.monotonic(), time.process_time()
    doist.do(limit=1.0)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    assert 0.95 <= wall < 2.0
    assert idle.turns > 200  # it really ticked about every millisecond
    assert cpu / wall < 0.25, f"idle Doist used {100 * cpu / wall:.1f}% of a core"


def test_real_time_tyme_follows_the_clock_and_timed_doers_keep_their_tock():
    tymes = []

    class Timed(Doer):
        def recur(self, tyme):
            tymes.append(tyme)
            return len(tymes) >= 4

    start = time.monotonic()
    Doist(tock=0.05, real=True, doers=[Timed(tock=0.1)]).do(limit=2.0)
    elapsed = time.monotonic() - start
    assert len(tymes) == 4
    assert 0.28 <= elapsed < 1.0
    gaps = [b - a for a, b in zip(tymes, tymes[1:])]
    assert all(0.08 <= gap < 0.3 for gap in gaps), gaps


class Napper(Doer):
    """Sleeps on a long tock unless `wanted`; records the clock at each turn."""

    def __init__(self, **kwa):
        super().__init__(**kwa)
        self.turns = []
        self.wanted = False

    @property
    def urgent(self):
        return self.wanted

    def recur(self, tyme):
        self.turns.append(time.monotonic())
        self.wanted = False
        return False


def test_poller_wake_from_another_thread_runs_an_urgent_sleeper_at_once():
    napper = Napper(tock=60.0)
    doist = Doist(tock=0.5, real=True, doers=[napper])
    poked = []

    def poke():
        poked.append(time.monotonic())
        napper.wanted = True
        doist.poller.wake()

    timer = threading.Timer(0.3, poke)
    timer.start()
    start = time.monotonic()
    try:
        doist.do(limit=1.5)
    finally:
        timer.cancel()
    assert 1.4 <= time.monotonic() - start < 3.0  # the limit ends a 60 s sleep on time
    assert len(napper.turns) == 2, napper.turns
    latency = napper.turns[1] - poked[0]
    assert latency < 0.1, f"woken {latency:.3f} s after the poke"


def test_sleeping_doist_does_not_wake_and_callbacks_see_the_true_tyme():
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    napper = Napper(tock=60.0)
    doist = Doist(tock=0.01, real=True, doers=[napper])
    tymes = []
    poller = doist.poller
    poller.register(reader, READ, lambda mask: (reader.recv(64), tymes.append(doist.tyme)))
    timer = threading.Timer(0.5, lambda: writer.send(b"x"))
    timer.start()
    try:
        doist.do(limit=1.0)
    finally:
        timer.cancel()
        poller.unregister(reader)
        reader.close()
        writer.close()
    assert len(napper.turns) == 1  # nothing due: no pass at every tick of 0.01 s
    assert len(tymes) == 1 and 0.45 <= tymes[0] < 0.9, tymes


def test_poller_registrations_keep_the_selectors_rules():
    """Sockets are registered with epoll directly; what the selectors module promised holds."""
    poller = Poller()
    reader, writer = socket.socketpair()
    seen = []
    try:
        poller.register(reader, READ, seen.append)
        assert poller.registered(reader) and len(poller) == 1
        with pytest.raises(KeyError):
            poller.register(reader, READ, seen.append)
        writer.send(b"x")
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            poller.poll(0.1)
        assert seen == [READ]
        poller.modify(reader, READ | WRITE)  # the callback stays
        poller.poll(1)
        assert seen[-1] == READ | WRITE
        poller.unregister(reader)
        assert not poller.registered(reader) and len(poller) == 0
        assert poller.poll(0) == 0  # still readable, but no longer watched
        poller.unregister(reader)  # twice: ignored
        poller.register(reader, WRITE, seen.append)  # and it may come back
        assert poller.poll(1) == 1 and seen[-1] == WRITE
    finally:
        poller.close()
        reader.close()
        writer.close()
