"""Doers cross between this Doist and ioflo/hio's, both ways."""

import pytest

hio_doing = pytest.importorskip(
    "hio.base.doing", reason="the hio package is not installable on this Python")

from hio_http import doing  # noqa: E402


def make_recorder(base, name, log, turns):
    class Recorder(base):
        def enter(self):
            log.append((name, "enter"))

        def recur(self, tyme):
            log.append((name, tyme))
            return len([e for e in log if e[0] == name]) > turns

        def exit(self):
            log.append((name, "exit"))

    return Recorder


def test_our_doers_run_under_hio_doist():
    log = []
    ours = make_recorder(doing.Doer, "ours", log, turns=3)(tock=0.25)
    nested = doing.DoDoer(doers=[make_recorder(doing.Doer, "inner", log, turns=2)()])
    hio_doing.Doist(tock=0.125, doers=[ours, nested]).do(limit=2.0)
    assert [e for e in log if e[0] == "ours"] == [
        ("ours", "enter"), ("ours", 0.0), ("ours", 0.25), ("ours", 0.5), ("ours", "exit")]
    assert [e for e in log if e[0] == "inner"] == [
        ("inner", "enter"), ("inner", 0.0), ("inner", 0.125), ("inner", "exit")]
    assert ours.done is True and nested.done is True


def test_hio_doers_run_under_our_doist():
    log = []
    theirs = make_recorder(hio_doing.Doer, "theirs", log, turns=3)(tock=0.25)
    hio_nested = hio_doing.DoDoer(doers=[make_recorder(doing.Doer, "ours", log, turns=1)()])
    doist = doing.Doist(tock=0.125, doers=[theirs, hio_nested])
    doist.do(limit=2.0)
    assert [e for e in log if e[0] == "theirs"] == [
        ("theirs", "enter"), ("theirs", 0.0), ("theirs", 0.25), ("theirs", 0.5),
        ("theirs", "exit")]
    assert [e for e in log if e[0] == "ours"] == [("ours", "enter"), ("ours", 0.0), ("ours", "exit")]
    assert theirs.done is True and hio_nested.done is True
    assert doist.done is True


def test_hio_generator_function_doer_under_our_doist():
    seen = []

    def ticker(tymth=None, tock=0.0, **opts):
        while len(seen) < 3:
            yield tock
            seen.append(tymth())
        return True

    doer = hio_doing.doify(ticker, tock=0.5)
    doing.Doist(tock=0.25, doers=[doer]).do(limit=5)
    assert seen == [0.0, 0.5, 1.0]
    assert doer.done is True
