"""Cooperative scheduling: `Doer`s do a little nonblocking work per turn; a `Doist` runs them.

The protocol is ioflo/hio's, so doers move freely between this Doist and hio's. Calling a doer as
`doer(tymth=..., tock=..., **opts)` returns a generator ("dog"): the first `send(None)` enters,
each `send(tyme)` recurs and yields the next tock, the return value becomes `doer.done`.
Nothing here may block, except the Doist's own wait for the next tick or for I/O.
"""

# Theory of operation
# -------------------
# A deed is (dog, retyme, doer). A *pass* runs, once each and in order, every deed that is due:
# a dog that yielded a falsy tock ("as soon as possible") is due on the very next pass; one that
# yielded a positive tock is due once tyme reaches retyme, kept cumulatively so it never drifts.
# A doer whose `urgent` is true is due on the next pass whatever its retyme: a doer can so sleep
# on a long tock (nothing to do until a deadline) yet run at once when work turns up.
#
# Simulated mode (real=False): a pass per tick, tyme advances one tock per pass, nothing sleeps,
# and every run is deterministic. Ready sockets are dispatched (poll with zero timeout) before
# each pass.
#
# Real mode (real=True): tyme follows the monotonic clock (seconds since enter, plus the starting
# tyme), so a pass woken early sees the true time rather than a multiple of tock. Between passes
# the Doist waits in its Poller until the next tick is due, a timed deed is due, or a registered
# socket is ready, whichever comes first. Tyme is brought up to the clock before the Poller runs
# the ready sockets' callbacks (a wait can be long), and the next pass follows at once. So I/O
# costs no tock of latency, and a Doist whose doers all sleep on long tocks does not wake at all.
#
# The Poller reaches doers through the tymth: a Doist's tymth carries it as `tymth.poller`, and
# DoDoers hand their tymth down, so every doer under a Doist can find it (see polling.poller_of).

from __future__ import annotations

import inspect
import time
import types
from collections import deque
from typing import Callable, Generator, Iterable, Optional, cast

from .polling import Poller
from .stalls import StallWatch
from .timing import Tymee, Tymist, Tymth

__all__ = ["Doer", "DoDoer", "Doist", "doify", "doize"]


def _set_done(doer, done) -> None:
    """Record a doer's completion; bound generator methods keep it on their function."""
    try:
        doer.done = done
    except AttributeError:
        doer.__func__.done = done


class _Deeds:
    """The running dogs of a Doist or DoDoer, in order: enter, pass, extend, remove, exit.

    Doers may extend or remove doers from inside their own turn: a pass runs over the deeds it
    started with, newcomers wait for the next pass, and a doer removed mid-turn is closed as
    soon as its turn returns (a generator cannot be closed while it runs).
    """

    def __init__(self):
        self._deeds: deque = deque()
        self._running: deque = deque()  # the rest of the pass under way
        self._dropped: list = []  # doers removed while their own turn was running
        self.stalls: Optional[StallWatch] = None  # told whose turn it is, when set

    def __len__(self) -> int:
        return len(self._deeds) + len(self._running)

    def __iter__(self):
        return iter(list(self._running) + list(self._deeds))

    def enter(self, doers: Iterable, tymth: Tymth, tyme: float, temp=None) -> None:
        """Create each doer's dog, run its enter context, and queue it due at once."""
        for doer in doers:
            _set_done(doer, None)
            opts = dict(getattr(doer, "opts", {}) or {})
            if temp is not None:
                opts.setdefault("temp", temp)
            dog = doer(tymth=tymth, tock=getattr(doer, "tock", 0.0), **opts)
            try:
                next(dog)
            except StopIteration as ex:
                _set_done(doer, ex.value if ex.value else False)
                continue
            self._deeds.append((dog, tyme, doer))

    def run(self, tyme: float) -> None:
        """One pass: send tyme to every due dog, once, and reschedule it by the tock it yields.

        A dog that raises is already dropped, so the exception leaves the others intact for exit.
        """
        self._running, self._deeds = self._deeds, deque()
        running, deeds = self._running, self._deeds
        stalls = self.stalls
        while running:
            dog, retyme, doer = running.popleft()
            early = retyme is not None and retyme > tyme
            if early and not getattr(doer, "urgent", False):
                deeds.append((dog, retyme, doer))
                continue
            if stalls is not None:
                stalls.enter(doer)
            stopped = None  # no `continue` inside try/finally: a compiled build cannot have one
            try:
                tock = dog.send(tyme)
            except StopIteration as ex:
                stopped = ex
            finally:
                if stalls is not None:
                    stalls.leave()
            if stopped is not None:
                _set_done(doer, stopped.value if stopped.value else False)
                continue
            if self._dropped and any(doer is gone for gone in self._dropped):
                self._dropped = [gone for gone in self._dropped if gone is not doer]
                self._close(deque([(dog, retyme, doer)]))
                continue
            if tock:  # on time: keep the grid, so it never drifts; early or asap: from now
                retyme = (tyme if retyme is None or early else retyme) + tock
            else:
                retyme = None  # as soon as possible: the next pass
            deeds.append((dog, retyme, doer))

    def next_due(self) -> tuple[bool, Optional[float]]:
        """(whether some dog runs every pass, earliest retyme of the timed ones)."""
        asap = False
        earliest = None
        for _, retyme, doer in self._deeds:
            if retyme is None or getattr(doer, "urgent", False):
                asap = True
            elif earliest is None or retyme < earliest:
                earliest = retyme
        return asap, earliest

    def remove(self, doers: Iterable) -> None:
        """Close the dogs of `doers`, leaving the rest in order."""
        doers = list(doers)
        removed: deque = deque()
        for queue in (self._running, self._deeds):
            kept = [deed for deed in queue if not any(deed[2] is doer for doer in doers)]
            removed.extend(deed for deed in queue if any(deed[2] is doer for doer in doers))
            queue.clear()
            queue.extend(kept)
        found = [deed[2] for deed in removed]
        self._dropped += [doer for doer in doers if not any(doer is f for f in found)]
        self._close(removed)

    def exit(self) -> None:
        """Close every remaining dog, newest first, so exits nest inside enters."""
        deeds = deque(self._running)
        deeds.extend(self._deeds)
        self._running.clear()
        self._deeds.clear()
        self._close(deeds)

    @staticmethod
    def _close(deeds: deque) -> None:
        while deeds:
            dog, _, doer = deeds.pop()
            dog.close()  # GeneratorExit: the dog runs its cease and exit contexts
            _set_done(doer, False)


class Doer(Tymee):
    """Base of doers: override the context methods `enter`, `recur`, `clean`, `exit`,
    `cease` (forced close) and `abort` (exception). `recur` may be a generator method.

    Attributes:
        done: None before entering, then False until completed; True when completed normally.
        tock: seconds wanted between turns; 0 means as soon as possible (every pass).
        opts: options injected into `do` by the scheduler.
        temp: scheduler-injected flag for temporary resources (hio convention).
        urgent: true while the doer wants its next turn now, whatever tock it last yielded.
            This package's Doist and DoDoer honour it, so a doer can sleep on a long tock and
            still answer at once when something happens (ServerDoer does); hio's ignore it.
    """

    # True while the doer wants its next turn now (see the class docstring). A class attribute,
    # not a property: the Doist reads it for every sleeping doer on every pass.
    urgent: bool = False

    def __init__(self, *, tymth: Optional[Tymth] = None, tock: float = 0.0, temp=None, **opts):
        super().__init__(tymth=tymth)
        self.done: Optional[bool] = None
        self.tock = tock
        self.temp = temp
        self.opts = opts

    @property
    def tock(self) -> float:
        return self._tock

    @tock.setter
    def tock(self, tock: float) -> None:
        self._tock = abs(float(tock))

    def __call__(self, **kwa):
        """Return this doer's generator; it is not entered until the first send(None)."""
        return self.do(**kwa)

    def do(self, tymth: Tymth, *, tock: float = 0.0, temp=None, **opts):
        """The generator the scheduler runs: enter, recur until done, then clean/cease/abort, exit."""
        try:
            self.wind(tymth)
            self.tock = tock
            if temp is not None:
                self.temp = temp
            self.done = False
            self.enter()
            if inspect.isgeneratorfunction(self.recur):
                # a generator method takes no tyme: each send() brings it
                recur = cast(Callable[[], Generator[float, float, bool]], self.recur)
                self.done = yield from recur()
            else:
                while not self.done:
                    tyme = yield self.tock
                    self.done = self.recur(tyme=tyme)
        except GeneratorExit:
            self.cease()
        except Exception as ex:
            self.abort(ex=ex)
            raise
        else:
            self.clean()
        finally:
            self.exit()
        return self.done

    def _wound(self) -> Tymth:
        """The tymth given by wind(): set once the scheduler has begun this doer."""
        if self.tymth is None:
            raise TypeError(f"{type(self).__name__} has no tymth yet: run it in a Doist")
        return self.tymth

    def enter(self) -> None:
        """Set up resources before the first turn."""

    def recur(self, tyme: float) -> bool:
        """One turn of work; return True when done."""
        return False

    def clean(self) -> None:
        """Tidy up after completing normally (before exit)."""

    def exit(self) -> None:
        """Release resources; always runs last, however the doer ended."""

    def cease(self) -> None:
        """Forced close by the scheduler (before exit)."""

    def abort(self, ex: Exception) -> None:
        """An exception ended the doer (before exit); the exception propagates afterwards."""


class DoDoer(Doer):
    """A doer that runs doers: a Doist in miniature on its parent's tymth.

    With `always` it keeps running when its doers are all done, so doers can be added later.
    """

    def __init__(self, doers: Optional[Iterable] = None, always: bool = False, **kwa):
        super().__init__(**kwa)
        self.doers: list = list(doers) if doers is not None else []
        self.always = always
        self.deeds = _Deeds()

    def do(self, tymth: Tymth, *, tock: float = 0.0, temp=None, doers=None, always=None, **opts):
        if doers is not None:
            self.doers = list(doers)
        always = self.always if always is None else always
        try:
            self.wind(tymth)
            self.tock = tock
            if temp is not None:
                self.temp = temp
            self.done = False
            self.enter()
            while not self.done or always:
                tyme = yield self.tock
                self.done = self.recur(tyme=tyme)
        except GeneratorExit:
            self.cease()
        except Exception as ex:
            self.abort(ex=ex)
            raise
        else:
            self.clean()
        finally:
            self.exit()
        return self.done

    def enter(self) -> None:
        self.deeds = _Deeds()
        self.deeds.enter(self.doers, self._wound(), self.tyme, self.temp)

    @property
    def urgent(self) -> bool:  # type: ignore[override]  # computed; a plain flag elsewhere
        """A DoDoer sleeping on a tock of its own still wakes for an urgent doer of its own."""
        return any(getattr(doer, "urgent", False) for doer in self.doers)

    def recur(self, tyme: float) -> bool:
        self.deeds.run(tyme)
        return not self.deeds

    def exit(self) -> None:
        self.deeds.exit()

    def extend(self, doers: Iterable) -> None:
        """Add doers while running: each enters now and runs from the next turn."""
        doers = [doer for doer in doers if doer not in self.doers]
        self.deeds.enter(doers, self._wound(), self.tyme, self.temp)
        self.doers.extend(doers)

    def remove(self, doers: Iterable) -> None:
        """Close and drop doers while running."""
        doers = [doer for doer in doers if doer in self.doers]
        self.deeds.remove(doers)
        for doer in doers:
            self.doers.remove(doer)


class EndWhen(Doer):
    """Ends its Doist's run once `condition()` holds: every other doer is ceased, then this one
    finishes. It sleeps until then; its `urgent` (the condition) gives it the next pass, so
    whoever makes the condition hold from another thread or a signal handler need only wake
    the Doist's Poller."""

    def __init__(self, doist: "Doist", condition: Callable[[], object], **kwa):
        kwa.setdefault("tock", 3600.0)
        super().__init__(**kwa)
        self.doist, self.condition = doist, condition

    @property
    def urgent(self) -> bool:  # type: ignore[override]  # computed; a plain flag elsewhere
        return bool(self.condition())

    def recur(self, tyme: float) -> bool:
        if not self.condition():
            return False
        self.doist.remove([doer for doer in self.doist.doers if doer is not self])
        return True


class Doist(Tymist):
    """The root scheduler: runs its doers, in order, every pass until they finish or time runs out.

    Parameters:
        tock: seconds per tick (real mode: the longest a doer that runs every pass waits).
        real: follow the monotonic clock and wait for ticks and I/O; else simulate, never sleeping.
        limit: stop after this much tyme (None or 0: no limit, run until every doer is done,
            as in hio; a negative limit is a ValueError).
        doers: the doers to run.
        tyme: the starting tyme.
        temp: passed to every doer as `temp=` when not None.
        stall_warning: in real mode, warn when one doer's turn (or one app call of a server
            under it) holds the loop longer than this many seconds (0: no watch).
    """

    def __init__(self, tock: Optional[float] = None, real: bool = False,
                 limit: Optional[float] = None, doers: Optional[Iterable] = None,
                 tyme: float = 0.0, temp=None, stall_warning: float = 0.0):
        super().__init__(tyme=tyme, tock=tock)
        self.real = bool(real)
        self.limit = _limit(limit)
        self.doers: list = list(doers) if doers is not None else []
        self.temp = temp
        self.done: Optional[bool] = None
        self.deeds = _Deeds()
        self.poller = Poller()
        self.stalls = StallWatch(stall_warning) if stall_warning and real else None
        self._origin = 0.0  # monotonic clock reading at tyme zero (real mode)
        self._next_tick = 0.0

    def tymen(self) -> Tymth:
        """A tymth that also carries this Doist's Poller (for doers that wait on sockets) and
        its StallWatch, as attributes of the function (read with poller_of, stall_watch_of)."""
        tymth = super().tymen()
        vars(tymth).update(poller=self.poller, stalls=self.stalls)
        return tymth

    def do(self, doers: Optional[Iterable] = None, limit: Optional[float] = None,
           tyme: Optional[float] = None) -> None:
        """Run until every doer is done, `limit` tyme has passed, or KeyboardInterrupt.

        Every doer still running is exited on the way out, whatever ended the run.
        """
        if doers is not None:
            self.doers = list(doers)
        if limit is not None:
            self.limit = _limit(limit)
        if tyme is not None:
            self.tyme = tyme
        self.done = False
        try:
            self.enter()
            start = self.tyme
            while True:
                try:
                    if self.real:
                        self._pass()
                    else:
                        self.recur()
                    if not self.deeds:
                        self.done = True
                        break
                    if self.limit is not None and self.tyme - start >= self.limit:
                        break
                    if self.real:
                        self._wait(None if self.limit is None else start + self.limit)
                except KeyboardInterrupt:
                    break
        finally:
            self.exit()

    def enter(self, doers: Optional[Iterable] = None) -> None:
        """Enter `doers` (default: all of `.doers`); in real mode, start following the clock."""
        if self.real:
            self._origin = time.monotonic() - self.tyme
            self._next_tick = self.tyme + self.tock
        if self.stalls is not None:
            self.stalls.bind()
            self.deeds.stalls = self.stalls
        self.deeds.enter(self.doers if doers is None else doers, self.tymen(), self.tyme,
                         self.temp)

    def recur(self) -> None:
        """One step by hand: dispatch ready sockets, run one pass, advance tyme."""
        self.poller.poll(0)
        self._pass()

    def exit(self) -> None:
        """Close every doer still running, newest first."""
        self.deeds.exit()
        if self.stalls is not None:
            self.stalls.stop()

    def extend(self, doers: Iterable) -> None:
        """Add doers while running: each enters now and runs from the next pass."""
        doers = [doer for doer in doers if doer not in self.doers]
        self.deeds.enter(doers, self.tymen(), self.tyme, self.temp)
        self.doers.extend(doers)

    def remove(self, doers: Iterable) -> None:
        """Close and drop doers while running."""
        doers = [doer for doer in doers if doer in self.doers]
        self.deeds.remove(doers)
        for doer in doers:
            self.doers.remove(doer)

    def _pass(self) -> None:
        if not self.real:
            self.deeds.run(self.tyme)
            self.tick()
            return
        self.tyme = time.monotonic() - self._origin
        self.deeds.run(self.tyme)
        if self.tyme >= self._next_tick:
            self._next_tick += self.tock
            if self._next_tick <= self.tyme:  # fell behind: start a fresh grid of ticks
                self._next_tick = self.tyme + self.tock

    def _wait(self, end: Optional[float] = None) -> None:
        """Sleep in the Poller until the next tick, the next timed deed, ready I/O, or `end`."""
        asap, earliest = self.deeds.next_due()
        wake = self._next_tick if asap else None
        for due in (earliest, end):
            if due is not None and (wake is None or due < wake):
                wake = due
        timeout = None if wake is None else wake - (time.monotonic() - self._origin)
        events = self.poller.select(timeout)
        self.tyme = time.monotonic() - self._origin  # callbacks may set deadlines from tyme
        self.poller.dispatch(events)


def doify(f: Callable, *, name: Optional[str] = None, tock: float = 0.0, **opts) -> Callable:
    """Return a copy of generator function `f` carrying its own `done`, `tock` and `opts`.

    Each call makes a separate copy, so one generator function can serve as several doers.
    """
    function = f.__func__ if inspect.ismethod(f) else f
    g = types.FunctionType(function.__code__, function.__globals__, name or function.__name__,
                           function.__defaults__, function.__closure__)
    g.__kwdefaults__ = function.__kwdefaults__
    g.__dict__.update(function.__dict__)
    g.__dict__.update(done=None, tock=tock, opts=dict(opts))  # what a doer carries
    if inspect.ismethod(f):
        return types.MethodType(g, f.__self__)
    return g


def doize(*, tock: float = 0.0, **opts) -> Callable[[Callable], Callable]:
    """Decorator form of `doify` for a generator function used as a single doer."""
    def decorator(f: Callable) -> Callable:
        vars(f).update(done=None, tock=tock, opts=dict(opts))  # what a doer carries
        return f
    return decorator


def _limit(limit: Optional[float]) -> Optional[float]:
    """A Doist's run limit: None and 0 both mean none (hio's meaning); negative is a mistake."""
    if limit is None:
        return None
    limit = float(limit)
    if limit < 0 or limit != limit:
        raise ValueError(f"limit must be None, 0 (no limit) or positive seconds, not {limit!r}")
    return limit or None
