"""The Doer protocol under a simulated Doist: order, tocks, nesting, limits and endings."""

import pytest

from hio_http.doing import DoDoer, Doer, Doist, EndWhen, doify, doize


class Recorder(Doer):
    """Logs each context to a shared list; done after `turns` recurs (None: never)."""

    def __init__(self, name, log, turns=None, fail_at=None, **kwa):
        super().__init__(**kwa)
        self.name, self.log, self.turns, self.fail_at = name, log, turns, fail_at
        self.count = 0

    def enter(self):
        self.log.append((self.name, "enter", self.tyme))

    def recur(self, tyme):
        self.count += 1
        self.log.append((self.name, "recur", tyme))
        if self.fail_at is not None and self.count >= self.fail_at:
            raise ValueError(f"{self.name} failed")
        return self.turns is not None and self.count >= self.turns

    def clean(self):
        self.log.append((self.name, "clean", self.tyme))

    def cease(self):
        self.log.append((self.name, "cease", self.tyme))

    def abort(self, ex):
        self.log.append((self.name, "abort", str(ex)))

    def exit(self):
        self.log.append((self.name, "exit", self.tyme))


def contexts(log, name):
    return [entry[1] for entry in log if entry[0] == name]


def test_doers_run_in_order_each_pass_and_finish_clean():
    log = []
    a, b = Recorder("a", log, turns=2), Recorder("b", log, turns=3)
    doist = Doist(tock=0.25, doers=[a, b])
    doist.do()
    assert log == [
        ("a", "enter", 0.0), ("b", "enter", 0.0),
        ("a", "recur", 0.0), ("b", "recur", 0.0),
        ("a", "recur", 0.25), ("a", "clean", 0.25), ("a", "exit", 0.25), ("b", "recur", 0.25),
        ("b", "recur", 0.5), ("b", "clean", 0.5), ("b", "exit", 0.5),
    ]
    assert (a.done, b.done, doist.done) == (True, True, True)


def test_positive_tock_runs_that_much_later_falsy_tock_every_pass():
    log = []
    slow, fast = Recorder("slow", log, tock=0.5), Recorder("fast", log, tock=0.0)
    Doist(tock=0.125, doers=[slow, fast]).do(limit=1.0)
    slow_tymes = [t for name, ctx, t in log if name == "slow" and ctx == "recur"]
    fast_tymes = [t for name, ctx, t in log if name == "fast" and ctx == "recur"]
    assert slow_tymes == [0.0, 0.5]
    assert fast_tymes == [i * 0.125 for i in range(8)]


def test_tock_changed_while_running_takes_effect():
    tymes = []

    class Speeder(Doer):
        def recur(self, tyme):
            tymes.append(tyme)
            self.tock = 0.5 if tyme < 0.5 else 0.0
            return len(tymes) >= 4

    Doist(tock=0.125, doers=[Speeder(tock=0.5)]).do()
    assert tymes == [0.0, 0.5, 0.625, 0.75]


def test_limit_ceases_unfinished_doers():
    log = []
    forever = Recorder("forever", log)
    doist = Doist(tock=0.25, doers=[forever])
    doist.do(limit=1.0)
    assert contexts(log, "forever") == ["enter"] + ["recur"] * 4 + ["cease", "exit"]
    assert forever.done is False
    assert doist.done is False
    assert doist.tyme == 1.0


@pytest.mark.parametrize("where", ["init", "do"])
@pytest.mark.parametrize("limit", [None, 0, 0.0])
def test_no_limit_runs_until_every_doer_is_done(limit, where):
    """None and 0 both mean "no limit", as in hio: the doers run to their own end."""
    log = []
    finite = Recorder("finite", log, turns=20)
    doist = Doist(tock=0.25, doers=[finite], limit=limit if where == "init" else None)
    doist.do(limit=limit if where == "do" else None)
    assert contexts(log, "finite") == ["enter"] + ["recur"] * 20 + ["clean", "exit"]
    assert doist.done is True
    assert doist.limit is None


@pytest.mark.parametrize("limit", [-1, -0.5, float("nan")])
def test_negative_limit_is_refused(limit):
    with pytest.raises(ValueError, match="limit"):
        Doist(tock=0.25, limit=limit)
    with pytest.raises(ValueError, match="limit"):
        Doist(tock=0.25).do(doers=[], limit=limit)


def test_exception_aborts_that_doer_and_exits_all_others():
    log = []
    bad = Recorder("bad", log, fail_at=2)
    other = Recorder("other", log)
    doist = Doist(tock=0.1, doers=[other, bad])
    with pytest.raises(ValueError, match="bad failed"):
        doist.do(limit=5)
    assert contexts(log, "bad") == ["enter", "recur", "recur", "abort", "exit"]
    assert contexts(log, "other")[-2:] == ["cease", "exit"]
    assert other.done is False


def test_keyboard_interrupt_exits_every_doer():
    log = []

    class Interrupter(Doer):
        def recur(self, tyme):
            if tyme >= 0.2:
                raise KeyboardInterrupt
            return False

    first, last = Recorder("first", log), Recorder("last", log)
    Doist(tock=0.1, doers=[first, Interrupter(), last]).do(limit=10)
    assert contexts(log, "first")[-2:] == ["cease", "exit"]
    assert contexts(log, "last")[-2:] == ["cease", "exit"]


def test_exit_closes_newest_first():
    log = []
    doers = [Recorder(name, log) for name in "abc"]
    Doist(tock=0.1, doers=doers).do(limit=0.1)
    assert [name for name, ctx, _ in log if ctx == "exit"] == ["c", "b", "a"]


def test_generator_recur_yields_tocks_and_returns_done():
    tymes = []

    class Stepper(Doer):
        def recur(self):
            for tock in (0.5, 0.25):
                tyme = yield tock
                tymes.append(tyme)
            tyme = yield 0.0
            tymes.append(tyme)
            return True

    stepper = Stepper()
    Doist(tock=0.125, doers=[stepper]).do()
    # As in hio, the tock yielded while entering is not waited: the first turn comes at once.
    assert tymes == [0.0, 0.25, 0.375]
    assert stepper.done is True


def test_enter_that_finishes_never_recurs():
    class Instant(Doer):
        recurred = False

        def enter(self):
            self.done = True

        def do(self, tymth, *, tock=0.0, **opts):
            self.wind(tymth)
            self.enter()
            return self.done
            yield  # pragma: no cover - makes this a generator

    instant = Instant()
    doist = Doist(tock=0.1, doers=[instant])
    doist.do()
    assert instant.done is True
    assert doist.done is True
    assert not doist.deeds


def test_nested_dodoers_run_children_on_parent_time():
    log = []
    inner = DoDoer(doers=[Recorder("leaf", log, turns=2)], tock=0.0)
    outer = DoDoer(doers=[inner, Recorder("sibling", log, turns=1)], tock=0.5)
    Doist(tock=0.25, doers=[outer]).do()
    assert [(n, c, t) for n, c, t in log if c == "recur"] == [
        ("leaf", "recur", 0.0), ("sibling", "recur", 0.0), ("leaf", "recur", 0.5)]
    assert outer.done is True and inner.done is True


def test_dodoer_always_keeps_running_and_accepts_doers_later():
    log = []
    parent = DoDoer(always=True)

    class Adder(Doer):
        def recur(self, tyme):
            if tyme == 0.5:
                parent.extend([Recorder("late", log, turns=2)])
            return tyme >= 0.5

    doist = Doist(tock=0.25, doers=[parent, Adder()])
    doist.do(limit=1.5)
    assert [t for n, c, t in log if n == "late" and c == "recur"] == [0.75, 1.0]
    assert parent.done is False  # ceased by the limit: `always` never finishes by itself


def test_dodoer_remove_ceases_child():
    log = []
    child = Recorder("child", log)
    parent = DoDoer(doers=[child], always=True)
    doist = Doist(tock=0.25, doers=[parent])
    doist.enter()
    doist.recur()
    parent.remove([child])
    doist.recur()
    doist.exit()
    assert contexts(log, "child") == ["enter", "recur", "cease", "exit"]
    assert parent.doers == []


def test_doist_extend_and_remove_at_run_time():
    log = []
    first = Recorder("first", log)
    doist = Doist(tock=0.5, doers=[first])
    doist.enter()
    doist.recur()
    second = Recorder("second", log)
    doist.extend([second])
    doist.extend([second])  # twice is once
    doist.recur()
    doist.remove([first])
    doist.recur()
    doist.exit()
    assert contexts(log, "first") == ["enter", "recur", "recur", "cease", "exit"]
    assert contexts(log, "second") == ["enter", "recur", "recur", "cease", "exit"]
    assert doist.doers == [second]


def test_stepping_by_hand_advances_one_tock_per_recur():
    tymes = []
    doist = Doist(tock=0.2, doers=[doify(lambda_free_generator(tymes))])
    doist.enter()
    for _ in range(3):
        doist.recur()
    doist.exit()
    assert tymes == pytest.approx([0.0, 0.2, 0.4])
    assert doist.tyme == pytest.approx(0.6)


def lambda_free_generator(tymes):
    def watcher(tymth=None, tock=0.0, **opts):
        while True:
            yield tock
            tymes.append(tymth())
    return watcher


def test_doify_makes_independent_copies_with_options():
    seen = []

    def counter(tymth, tock=0.0, step=1, **opts):
        total = 0
        while total < 3 * step:
            yield tock
            total += step
            seen.append((step, tymth()))
        return True

    one = doify(counter, name="one", tock=0.5, step=1)
    two = doify(counter, name="two", step=10)
    assert one is not two and one.__name__ == "one"
    Doist(tock=0.25, doers=[one, two]).do()
    assert [t for s, t in seen if s == 1] == [0.0, 0.5, 1.0]
    assert [t for s, t in seen if s == 10] == [0.0, 0.25, 0.5]  # tock 0: every pass
    assert (one.done, two.done) == (True, True)
    assert counter.__dict__.get("done") is None  # the original is untouched


def test_doize_decorator_and_bound_generator_method():
    class Holder:
        def __init__(self):
            self.count = 0

        def work(self, tymth=None, tock=0.0, **opts):
            while self.count < 2:
                self.count += 1
                yield tock
            return True

    @doize(tock=0.5)
    def ticker(tymth=None, tock=0.0, **opts):
        yield tock
        return True

    holder = Holder()
    method = doify(holder.work)
    Doist(tock=0.1, doers=[ticker, method]).do()
    assert ticker.done is True and ticker.tock == 0.5
    assert holder.count == 2 and method.done is True


def test_simulated_runs_are_deterministic():
    def run():
        log = []
        doers = [Recorder("a", log, tock=0.3, turns=4), Recorder("b", log, tock=0.2, turns=5),
                 DoDoer(doers=[Recorder("c", log, turns=3)], tock=0.25)]
        Doist(tock=0.05, doers=doers).do(limit=3)
        return log

    first = run()
    assert first == run()
    assert len(first) > 20


def test_temp_is_injected_when_given():
    seen = []

    class TempDoer(Doer):
        def enter(self):
            seen.append(self.temp)
            self.done = True

        def recur(self, tyme):
            return True

    Doist(tock=0.1, doers=[TempDoer()], temp=True).do(limit=0.1)
    Doist(tock=0.1, doers=[TempDoer()]).do(limit=0.1)
    assert seen == [True, None]


def test_doer_can_remove_itself_and_others_during_its_turn():
    log = []
    victim = Recorder("victim", log)
    later = Recorder("later", log)

    class Stopper(Doer):
        def recur(self, tyme):
            if tyme >= 0.2:
                doist.remove([self, victim, later])
            return False

    stopper = Stopper()
    doist = Doist(tock=0.1, doers=[victim, stopper, later])
    doist.do(limit=5)
    assert doist.done is True  # everyone gone: the run ends by itself
    assert doist.tyme == pytest.approx(0.3)
    assert contexts(log, "victim") == ["enter", "recur", "recur", "recur", "cease", "exit"]
    assert contexts(log, "later") == ["enter", "recur", "recur", "cease", "exit"]
    assert stopper.done is False


class Sleeper(Doer):
    """Sleeps on a long tock; `urgent` is whatever the test sets."""

    def __init__(self, **kwa):
        super().__init__(**kwa)
        self.tymes = []
        self.wanted = False

    @property
    def urgent(self):
        return self.wanted

    def recur(self, tyme):
        self.tymes.append(tyme)
        self.wanted = False
        return False


def test_urgent_doer_runs_on_the_next_pass_then_sleeps_its_tock_from_there():
    sleeper = Sleeper(tock=10.0)

    class Poker(Doer):
        def recur(self, tyme):
            if tyme == 0.5:
                sleeper.wanted = True
            return False

    Doist(tock=0.25, doers=[Poker(), sleeper]).do(limit=12.0)
    # Poked in the pass at 0.5 by a doer ahead of it, it runs in that same pass, and its next
    # turn is a whole tock from then, not from the turn it was woken out of.
    assert sleeper.tymes == [0.0, 0.5, 10.5]


def test_urgent_doer_inside_a_sleeping_dodoer_wakes_it():
    sleeper = Sleeper(tock=10.0)
    group = DoDoer(doers=[sleeper], tock=10.0)

    class Poker(Doer):
        def recur(self, tyme):
            if tyme == 1.0:
                sleeper.wanted = True
            return False

    Doist(tock=0.25, doers=[Poker(), group]).do(limit=5.0)
    assert sleeper.tymes == [0.0, 1.0]


def test_end_when_sleeps_then_ends_the_run_in_the_pass_its_condition_holds():
    log = []
    worker = Recorder("worker", log, tock=0.25)
    doist = Doist(tock=0.25)
    ender = EndWhen(doist, lambda: doist.tyme >= 1.0)
    doist.do(doers=[worker, ender], limit=10.0)
    assert doist.tyme < 1.5  # not the limit, nor its own tock of an hour
    assert contexts(log, "worker")[-2:] == ["cease", "exit"]
    assert ender.done is True and worker.done is False
