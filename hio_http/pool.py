"""A pool of threads for work that blocks (a WSGI app's calls), fed from the loop.

The loop submits jobs and never waits for them: a job tells its owner it is done (the owner
wakes the loop through its Poller). The queue of jobs not yet taken is bounded; a full pool says
so at once and calls back whoever was turned away as soon as a thread takes a job.
Nothing here touches a socket.
"""

# Why not concurrent.futures: its threads are joined when the interpreter exits, so an app call
# stuck forever would keep a stopped server from exiting; these threads are daemons. Futures
# would also cost an object and a lock per job, where a job here is a bare callable handed
# over through a SimpleQueue (its blocking get() is in C: no Condition, no waiter lock).

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
import traceback
from collections import deque
from typing import Callable, Optional

logger = logging.getLogger("hio_http.server")

Job = Callable[[], None]

__all__ = ["AppPool"]


class AppPool:
    """`size` daemon threads running submitted jobs in order of submission.

    `submit(job)` returns False when `queue_limit` jobs already wait; `notify_when_free(callback)`
    then calls `callback()` (from a pool thread) once a place is free. A job that raises is
    logged and the thread goes on. With `slow_after` seconds, a job running that long has the
    stack of its thread logged once (the app is stuck, or very slow).
    """

    def __init__(self, size: int, queue_limit: int = 64, slow_after: float = 0.0,
                 name: str = "hio_http-app"):
        if size < 1:
            raise ValueError(f"threads must be at least 1, not {size}")
        self.size = size
        self.queue_limit = max(1, queue_limit)
        self.slow_after = slow_after
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._queued = 0  # jobs submitted and not yet taken by a thread
        self._turned_away: deque = deque()  # callbacks waiting for a free place
        self._lock = threading.Lock()  # guards _queued and _turned_away
        self._closing = False
        self.running: dict = {}  # thread ident -> (when its job began (monotonic), the job)
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True)
                         for index in range(size)]
        for thread in self._threads:
            thread.start()
        self._overseer: Optional[_Overseer] = _Overseer(self) if slow_after > 0 else None

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def queued(self) -> int:
        """Jobs waiting for a thread."""
        return self._queued

    @property
    def busy(self) -> int:
        """Threads running a job now."""
        return len(self.running)

    def submit(self, job: Job, force: bool = False) -> bool:
        """Queue `job`; False (and nothing queued) if the queue is full, unless `force`d."""
        with self._lock:
            if self._closing:
                return False
            if not force and self._queued >= self.queue_limit:
                return False
            self._queued += 1
        self._jobs.put(job)
        return True

    def notify_when_free(self, callback: Callable[[], None]) -> None:
        """Call `callback()` once the queue has room again (at once if it has now)."""
        with self._lock:
            if self._queued >= self.queue_limit and not self._closing:
                self._turned_away.append(callback)
                return
        callback()

    def close(self) -> None:
        """Take no more jobs; threads end once the queue is empty. Never waits: a thread stuck
        in an app call is a daemon and does not hold up the exit."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            turned_away, self._turned_away = list(self._turned_away), deque()
        for _ in self._threads:
            self._jobs.put(None)  # each thread ends when it takes one, after the jobs before
        if self._overseer is not None:
            self._overseer.stop()
        for callback in turned_away:
            _call_quietly(callback)

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the threads to end (after close); True if they did."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _work(self) -> None:
        ident = threading.get_ident()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            freed: list = []
            with self._lock:
                self._queued -= 1
                if self._turned_away:
                    # One place is free: one caller may take it. With the queue empty, call
                    # them all, so that none waits on a place given to one that then did not
                    # take it.
                    if self._queued:
                        freed.append(self._turned_away.popleft())
                    else:
                        freed, self._turned_away = list(self._turned_away), deque()
            self.running[ident] = (time.monotonic(), job)
            for callback in freed:
                _call_quietly(callback)
            if self._overseer is not None:
                self._overseer.rouse()
            try:
                job()
            except BaseException:  # a fault in one job must not end the thread
                logger.exception("error in a job of the app thread pool")
            finally:
                self.running.pop(ident, None)


class _Overseer:
    """Logs the stack of a pool thread whose job has run `slow_after` seconds, once per job.
    Sleeps without a timeout while no job runs, so an idle pool costs nothing."""

    def __init__(self, pool: AppPool):
        self.pool = pool
        self.reported: dict = {}  # thread ident -> start time of the job already reported
        self._event = threading.Event()
        self._sleeping = False
        self._stopped = False
        self._thread = threading.Thread(target=self._watch, name="hio_http-overseer",
                                        daemon=True)
        self._thread.start()

    def rouse(self) -> None:
        if self._sleeping:
            self._sleeping = False
            self._event.set()

    def stop(self) -> None:
        self._stopped = True
        self._event.set()

    def _watch(self) -> None:
        pool = self.pool
        limit = pool.slow_after
        while not self._stopped:
            running = dict(pool.running)
            if not running:
                self._sleeping = True
                if pool.running:  # a job began between the look and the flag
                    self._sleeping = False
                    continue
                self._event.wait()
                self._event.clear()
                continue
            now = time.monotonic()
            for ident, (began, job) in running.items():
                if now - began >= limit and self.reported.get(ident) != began:
                    self.reported[ident] = began
                    self._report(ident, now - began, job)
            oldest = min(began for began, _ in running.values())
            self._event.wait(max(0.05, min(limit, oldest + limit - now)))
            self._event.clear()

    def _report(self, ident: int, seconds: float, job: Job) -> None:
        frame = sys._current_frames().get(ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(gone)\n"
        logger.warning("an app thread has been busy for %.1f s (timeout %.1f s) with %s; its "
                       "stack:\n%s", seconds, self.pool.slow_after, describe_job(job),
                       stack.rstrip("\n"))


def describe_job(job: Job) -> str:
    """What a job works for: its owner's `describe()` (a request's method and path), if any."""
    describe = getattr(getattr(job, "__self__", None), "describe", None)
    try:
        return describe() if describe is not None else repr(job)
    except Exception:
        return repr(job)


def _call_quietly(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        logger.exception("error in a thread pool callback")
