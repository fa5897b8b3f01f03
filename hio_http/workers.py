"""A small supervisor for `--workers N`: the listening sockets are opened once, then N forked
worker processes each run their own Doist on them; a worker that dies is replaced, and signals
are passed on. The supervisor itself never serves a request.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Callable

logger = logging.getLogger("hio_http.server")

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM)  # by the supervisor
RESTART_PAUSE = 1.0  # a worker dying this soon after its start waits this long to be replaced


class Supervisor:
    """Keeps `count` workers running `work()` (its return value is the worker's exit code)."""

    def __init__(self, count: int, work: Callable[[], int], graceful_timeout: float,
                 on_hangup: Callable[[], None] = lambda: None):
        self.count = count
        self.work = work
        self.graceful_timeout = graceful_timeout
        self.on_hangup = on_hangup
        self.children: dict = {}  # pid -> start time
        self.stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._hangup)
        signal.signal(signal.SIGALRM, self._kill_all)
        for _ in range(self.count):
            self._spawn()
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            started = self.children.pop(pid, None)
            if started is None:
                continue
            if self.stopping:
                continue
            logger.warning("worker %d exited (%s); starting another", pid, describe(status))
            if time.monotonic() - started < RESTART_PAUSE:
                time.sleep(RESTART_PAUSE)  # not in a loop that serves: a crash loop must not spin
            if not self.stopping:
                self._spawn()
        signal.alarm(0)
        return 0

    def _spawn(self) -> None:
        # Signals wait while the supervisor forks: the parent must know the new worker before
        # a stop signals all of them, and the worker must drop the supervisor's handlers first
        # (run in the worker, they would leave it serving on, deaf to the stop meant for it).
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
            raise
        if pid == 0:  # the worker
            for number in HANDLED:
                signal.signal(number, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
            code = 1
            try:
                code = self.work()
            except BaseException:
                logger.exception("worker %d failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = time.monotonic()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        logger.info("started worker %d", pid)

    def _signal_children(self, number: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, number)
            except ProcessLookupError:
                pass

    def _stop(self, signum, frame) -> None:
        if self.stopping:  # a second signal: stop at once
            self._kill_all(signum, frame)
            return
        self.stopping = True
        logger.info("stopping %d workers (graceful timeout %.0f s)", len(self.children),
                    self.graceful_timeout)
        self._signal_children(signal.SIGTERM)
        signal.alarm(max(1, int(self.graceful_timeout + 5)))  # then force it

    def _kill_all(self, signum, frame) -> None:
        self.stopping = True
        self._signal_children(signal.SIGKILL)

    def _hangup(self, signum, frame) -> None:
        self.on_hangup()
        self._signal_children(signal.SIGHUP)


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
