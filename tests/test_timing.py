"""Tymist, Tymee and Tymer on simulated time."""

import pytest

from hio_http.timing import Tymer, Tymist


def test_tymist_ticks_by_tock_and_by_given_amount():
    tymist = Tymist(tock=0.25)
    assert tymist.tyme == 0.0
    assert tymist.tick() == 0.25
    assert tymist.tick(1.0) == 1.25
    assert Tymist().tock == Tymist.Tock


def test_tymth_follows_its_tymist():
    tymist = Tymist(tyme=2.0, tock=0.5)
    tymth = tymist.tymen()
    assert tymth() == 2.0
    tymist.tick()
    assert tymth() == 2.5


def test_tymer_expires_after_duration():
    tymist = Tymist(tock=0.25)
    tymer = Tymer(tymth=tymist.tymen(), duration=1.0)
    assert (tymer.elapsed, tymer.remaining, tymer.expired) == (0.0, 1.0, False)
    for _ in range(3):
        tymist.tick()
    assert not tymer.expired
    assert tymer.remaining == pytest.approx(0.25)
    tymist.tick()
    assert tymer.expired
    assert tymer.elapsed == 1.0


def test_tymer_restart_loses_no_time():
    tymist = Tymist(tock=0.375)
    tymer = Tymer(tymth=tymist.tymen(), duration=1.0)
    for _ in range(3):
        tymist.tick()  # tyme 1.125: expired 0.125 ago
    assert tymer.expired
    tymer.restart()
    assert tymer.remaining == pytest.approx(0.875)  # counted from the old stop, not from now
    tymer.start(duration=2.0)
    assert tymer.remaining == 2.0


def test_tymer_wound_later_uses_new_clock():
    tymer = Tymer(duration=1.0)
    tymist = Tymist(tyme=10.0)
    tymer.wind(tymist.tymen())
    tymer.start()
    assert tymer.remaining == 1.0
    tymist.tick(1.0)
    assert tymer.expired
