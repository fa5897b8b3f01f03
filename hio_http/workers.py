"""A small supervisor for `--workers N`: the listening sockets are opened once, then N forked
worker processes each run their own Doist on them; a worker that dies is replaced, and signals
are passed on. With a `timeout`, a worker whose loop stops turning (its heartbeat goes quiet)
has its Python stack logged and is killed and replaced. The supervisor never serves a request.
"""

from __future__ import annotations

import faulthandler
import logging
import mmap
import os
import select
import signal
import struct
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Callable, Optional

from .doing import Doer

logger = logging.getLogger("hio_http.server")

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM,
           signal.SIGCHLD)  # by the supervisor
RESTART_PAUSE = 1.0  # a worker dying this soon after its start waits this long to be replaced
STACK_SIGNAL = signal.SIGUSR2  # asks a worker to write its threads' stacks (faulthandler)
STACK_WAIT = 2.0  # how long a stuck worker is given to write its stacks before it is killed
SLOT = struct.Struct("d")  # a heartbeat: the worker's last turn, on the monotonic clock
MAX_SLOTS = 1024  # workers a supervisor can keep

_heartbeat: Optional["Heartbeat"] = None  # this process's, when it is a supervised worker


def heartbeat() -> Optional["Heartbeat"]:
    """The heartbeat a supervised worker must keep (None elsewhere, or with no timeout)."""
    return _heartbeat


class Heartbeat:
    """A worker's slot on the board the supervisor reads: `beat()` records a turn of the loop."""

    def __init__(self, board: mmap.mmap, slot: int, timeout: float):
        self.board, self.slot, self.timeout = board, slot, timeout

    def beat(self) -> None:
        SLOT.pack_into(self.board, self.slot * SLOT.size, time.monotonic())

    def last(self) -> float:
        return SLOT.unpack_from(self.board, self.slot * SLOT.size)[0]

    def doer(self) -> "HeartbeatDoer":
        """A doer beating four times per timeout: quiet only if the loop stops turning."""
        return HeartbeatDoer(self, tock=self.timeout / 4)


class HeartbeatDoer(Doer):
    def __init__(self, heartbeat: Heartbeat, **kwa):
        super().__init__(**kwa)
        self.heartbeat = heartbeat

    def recur(self, tyme: float) -> bool:
        self.heartbeat.beat()
        return False


@dataclass
class _Worker:
    started: float
    slot: int
    stacks: IO[bytes]  # where the worker's faulthandler writes its stacks when asked
    stuck: bool = False
    asked: float = 0.0  # when its stacks were asked for


class Supervisor:
    """Keeps `count` workers running `work()` (its return value is the worker's exit code)."""

    def __init__(self, count: int, work: Callable[[], int], graceful_timeout: float,
                 on_hangup: Callable[[], None] = lambda: None, timeout: float = 0.0):
        if not 1 <= count <= MAX_SLOTS:
            raise ValueError(f"workers must be from 1 to {MAX_SLOTS}, not {count}")
        self.count = count
        self.work = work
        self.graceful_timeout = graceful_timeout
        self.on_hangup = on_hangup
        self.timeout = timeout  # 0: no watchdog
        self.children: dict = {}  # pid -> _Worker
        self.stopping = False
        # Shared with the workers (an anonymous mapping survives fork, shared); never resized,
        # since a worker keeps the mapping it was forked with.
        self.board = mmap.mmap(-1, SLOT.size * MAX_SLOTS)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._hangup)
        signal.signal(signal.SIGALRM, self._kill_all)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the wait below
        bell, ringer = os.pipe()
        os.set_blocking(bell, False)
        os.set_blocking(ringer, False)
        previous_wakeup = signal.set_wakeup_fd(ringer)
        try:
            for slot in range(self.count):
                self._spawn(slot)
            while self.children:
                self._reap()
                if self.timeout:
                    self._watch()
                self._wait(bell)
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            os.close(bell)
            os.close(ringer)
            signal.alarm(0)
        return 0

    def _wait(self, bell: int) -> None:
        """Until a signal arrives (a worker exits: SIGCHLD), or the next look at heartbeats."""
        interval = min(1.0, self.timeout / 4) if self.timeout else None
        ready, _, _ = select.select([bell], [], [], interval)
        if ready:
            try:
                while os.read(bell, 512):
                    pass
            except BlockingIOError:
                pass

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            worker = self.children.pop(pid, None)
            if worker is None:
                continue
            worker.stacks.close()
            if self.stopping:
                continue
            if not worker.stuck:
                logger.warning("worker %d exited (%s); starting another", pid, describe(status))
            if time.monotonic() - worker.started < RESTART_PAUSE:
                time.sleep(RESTART_PAUSE)  # not in a loop that serves: a crash loop must not spin
            if not self.stopping:
                self._spawn(worker.slot)

    def _watch(self) -> None:
        """A worker whose heartbeat is older than `timeout` is stuck: log its stack, kill it
        (the reaper starts another)."""
        now = time.monotonic()
        for pid, worker in list(self.children.items()):
            if worker.stuck:
                # faulthandler writes the stacks at once, from its signal handler
                if now - worker.asked >= STACK_WAIT or _size(worker.stacks):
                    self._kill_stuck(pid, worker)
                continue
            last = SLOT.unpack_from(self.board, worker.slot * SLOT.size)[0]
            if now - last >= self.timeout:
                worker.stuck, worker.asked = True, now
                logger.error("worker %d has not turned its loop for %.1f s (timeout %.1f s): "
                             "killing it and starting another", pid, now - last, self.timeout)
                _send(pid, STACK_SIGNAL)

    def _kill_stuck(self, pid: int, worker: _Worker) -> None:
        worker.stacks.seek(0)
        stacks = worker.stacks.read().decode("utf-8", "replace").strip()
        logger.error("worker %d (stuck) stack:\n%s", pid, stacks or "(it wrote none)")
        _send(pid, signal.SIGKILL)
        worker.asked = float("inf")  # killed: wait for the reaper

    def _spawn(self, slot: int = 0) -> None:
        # Signals wait while the supervisor forks: the parent must know the new worker before
        # a stop signals all of them, and the worker must drop the supervisor's handlers first
        # (run in the worker, they would leave it serving on, deaf to the stop meant for it).
        SLOT.pack_into(self.board, slot * SLOT.size, time.monotonic())  # a start counts as a turn
        stacks = tempfile.TemporaryFile()
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
            stacks.close()
            raise
        if pid == 0:  # the worker
            signal.set_wakeup_fd(-1)
            for number in HANDLED:
                signal.signal(number, signal.SIG_DFL)
            self._keep_heartbeat(slot, stacks)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
            code = 1
            try:
                code = self.work()
            except BaseException:
                logger.exception("worker %d failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = _Worker(time.monotonic(), slot, stacks)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        logger.info("started worker %d", pid)

    def _keep_heartbeat(self, slot: int, stacks: IO[bytes]) -> None:
        """In a new worker: the heartbeat to keep, and its stacks written on STACK_SIGNAL."""
        global _heartbeat
        _heartbeat = Heartbeat(self.board, slot, self.timeout) if self.timeout else None
        faulthandler.register(STACK_SIGNAL, file=stacks, all_threads=True, chain=False)

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


def _send(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def _size(file: IO[bytes]) -> int:
    return os.fstat(file.fileno()).st_size


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
