"""Cycle time for doers: a clock (`Tymist`), readers of it (`Tymee`) and timers (`Tymer`).

A Tymist keeps `tyme`, seconds of virtual or real cycle time. Anything that needs the time is
handed a `tymth`: a zero-argument callable returning the current tyme. Nothing here reads the
wall clock; whoever owns the Tymist decides whether tyme is simulated or real.
"""

from __future__ import annotations

from typing import Callable, Optional

Tymth = Callable[[], float]


class Tymist:
    """Keeps cycle time `tyme`, advanced one `tock` at a time by `tick()`."""

    Tock = 0.03125  # default tock, 1/32 s, the same default as ioflo/hio

    def __init__(self, tyme: float = 0.0, tock: Optional[float] = None):
        self.tyme = float(tyme)
        self.tock = float(tock) if tock is not None else self.Tock

    @property
    def tock(self) -> float:
        return self._tock

    @tock.setter
    def tock(self, tock: float) -> None:
        self._tock = abs(float(tock))

    def tick(self, tock: Optional[float] = None) -> float:
        """Advance tyme by `tock` (default `.tock`) and return the new tyme."""
        self.tyme += float(tock if tock is not None else self.tock)
        return self.tyme

    def tymen(self) -> Tymth:
        """Return a tymth: a closure that reads this Tymist's tyme."""
        def tymth() -> float:
            return self.tyme
        return tymth


class Tymee:
    """Something that reads a Tymist's tyme through an injected tymth."""

    def __init__(self, tymth: Optional[Tymth] = None, **kwa):
        super().__init__(**kwa)
        self._tymth = tymth

    @property
    def tymth(self) -> Optional[Tymth]:
        return self._tymth

    @tymth.setter
    def tymth(self, tymth: Optional[Tymth]) -> None:
        self._tymth = tymth

    @property
    def tyme(self) -> float:
        if self._tymth is None:  # the TypeError calling None would raise, with a reason
            raise TypeError("no tymth yet: wind() this object to a Tymist first")
        return self._tymth()

    def wind(self, tymth: Tymth) -> None:
        """Inject a new tymth: from now on this object runs on that Tymist's time."""
        self.tymth = tymth


class Tymer(Tymee):
    """A timer on a tymth: started at some tyme, expired once `duration` has elapsed."""

    Duration = 0.0

    def __init__(self, tymth: Optional[Tymth] = None, duration: Optional[float] = None,
                 start: Optional[float] = None, **kwa):
        super().__init__(tymth=tymth, **kwa)
        duration = float(duration) if duration is not None else self.Duration
        if start is None and tymth is None:
            start = 0.0  # not wound yet: start at zero so the properties still work
        self.start(duration=duration, start=start)

    @property
    def duration(self) -> float:
        return self._stop - self._start

    @property
    def elapsed(self) -> float:
        return self.tyme - self._start

    @property
    def remaining(self) -> float:
        return self._stop - self.tyme

    @property
    def expired(self) -> bool:
        return self.tyme >= self._stop

    def start(self, duration: Optional[float] = None, start: Optional[float] = None) -> None:
        """(Re)start at `start` (default now), optionally with a new duration."""
        if duration is None:
            duration = self.duration
        self._start = float(start) if start is not None else self.tyme
        self._stop = self._start + float(duration)

    def restart(self, duration: Optional[float] = None) -> None:
        """Start again from the previous stop tyme, so periodic timers lose no time."""
        self.start(duration=duration, start=self._stop)
