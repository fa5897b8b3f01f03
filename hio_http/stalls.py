"""Noticing a loop held up by one thing: `StallWatch` names what holds the loop, and where, once
it has held it longer than a threshold.

The loop only notes what it is about to do (`enter`) and that it is done (`leave`): two
attribute writes, no clock, no lock. A watcher thread does the looking, and while the loop is
idle it sleeps without a timeout, so an idle server never wakes for it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Optional

logger = logging.getLogger("hio_http.server")

HINT = ("every other connection and doer waits meanwhile; run blocking apps on threads "
        "(--threads N, or Server(threads=N))")

__all__ = ["StallWatch", "stall_watch_of"]


class StallWatch:
    """Warns (once per stall, at most once per `every` seconds) when the loop thread spends
    more than `threshold` seconds in one activity: an app call, the pull of a body, a doer's
    turn. An activity is anything with `describe()` (a responder says its method and path) or
    any object whose repr names it."""

    def __init__(self, threshold: float, every: float = 10.0):
        if threshold <= 0:
            raise ValueError(f"stall_warning must be positive here, not {threshold}")
        self.threshold = threshold
        self.every = every
        self.activity: Any = None  # what the loop does now
        self.turns = 0  # counts enters and leaves: unchanged while one activity lasts
        self.loop_thread: Optional[int] = None
        self.stalls = 0  # stalls noticed, warned of or not
        self._last_warning = -float("inf")
        self._unwarned = 0  # stalls noticed since the last warning but not warned of
        self._event = threading.Event()
        self._sleeping = False
        self._stopped = False
        self._watcher: Optional[threading.Thread] = None

    def bind(self) -> None:
        """Watch the calling thread's loop (starts the watcher on first use)."""
        self.loop_thread = threading.get_ident()
        if self._watcher is None:
            self._stopped = False
            self._watcher = threading.Thread(target=self._watch, name="hio_http-stall-watch",
                                            daemon=True)
            self._watcher.start()

    def enter(self, activity: Any) -> Any:
        """The loop begins `activity`; returns the one it interrupts, for `leave`."""
        previous = self.activity
        self.activity = activity
        self.turns += 1
        if self._sleeping:
            self._sleeping = False
            self._event.set()
        return previous

    def leave(self, previous: Any = None) -> None:
        self.activity = previous
        self.turns += 1

    def stop(self) -> None:
        self._stopped = True
        self._event.set()
        self._watcher = None

    def _watch(self) -> None:
        seen, since, warned = -1, 0.0, -1
        while not self._stopped:
            turns, activity = self.turns, self.activity
            now = time.monotonic()
            if turns != seen:
                seen, since = turns, now
            elif activity is None:
                self._sleep_until_entered(turns)
                continue
            elif now - since >= self.threshold and warned != turns:
                warned = turns
                self._stalled(activity, now - since)
            self._event.wait(self.threshold / 4)
            self._event.clear()

    def _sleep_until_entered(self, turns: int) -> None:
        """The loop is idle: wait, without a timeout, for its next enter()."""
        self._sleeping = True
        if self.turns == turns and self.activity is None:  # else it entered meanwhile
            self._event.wait()
        self._sleeping = False
        self._event.clear()

    def _stalled(self, activity: Any, seconds: float) -> None:
        self.stalls += 1
        now = time.monotonic()
        if now - self._last_warning < self.every:
            self._unwarned += 1
            return
        self._last_warning = now
        more = (f" ({self._unwarned} more stalls since the last warning)"
                if self._unwarned else "")
        self._unwarned = 0
        logger.warning("the loop has been held %.1f s by %s, now at %s; %s%s", seconds,
                       describe(activity), self._where(), HINT, more)

    def _where(self) -> str:
        frame = sys._current_frames().get(self.loop_thread or -1)
        if frame is None:
            return "an unknown place"
        code = frame.f_code
        return f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"


def describe(activity: Any) -> str:
    describe_method = getattr(activity, "describe", None)
    if describe_method is not None:
        try:
            return str(describe_method())
        except Exception:
            pass
    if isinstance(activity, str):
        return activity
    return f"the turn of {type(activity).__name__}"  # a doer


def stall_watch_of(tymth) -> Optional[StallWatch]:
    """The StallWatch of the Doist whose tymth this is, or None."""
    return getattr(tymth, "stalls", None)
