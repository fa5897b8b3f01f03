"""A small supervisor for `--workers N`: the listening sockets are opened once, then N forked
worker processes each import the app and run their own Doist on them. The supervisor never
serves a request and never imports the app, so every new worker runs the code on disk.

Signals: SIGTERM / SIGINT stop gracefully (a second one at once); SIGHUP reloads (a new
generation of workers starts; once every one of them has imported the app and listens, the old
ones retire gracefully; if one fails, the old ones serve on); SIGUSR1 reopens log files here
and in the workers; SIGTTIN / SIGTTOU add and retire a worker. A worker that dies is replaced;
one that asks to retire (`--max-requests`) is replaced first, then retired. With a `timeout`, a
worker whose loop stops turning (its heartbeat goes quiet) has its Python stack logged and is
killed and replaced.
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

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM, signal.SIGCHLD,
           signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU)  # by the supervisor
RESTART_PAUSE = 1.0  # a worker dying this soon after its start waits this long to be replaced
STACK_SIGNAL = signal.SIGUSR2  # asks a worker to write its threads' stacks (faulthandler)
STACK_WAIT = 2.0  # how long a stuck worker is given to write its stacks before it is killed
SLOT = struct.Struct("d")  # a heartbeat: the worker's last turn, on the monotonic clock
MAX_SLOTS = 1024  # workers a supervisor can keep (a reload briefly runs two generations)
MESSAGE = struct.Struct("=ci")  # what a worker tells the supervisor: (kind, its pid)
READY, RETIRE, RELOAD = b"r", b"q", b"h"  # serving now; replace me; the app's code changed
APP_FAILED = 2  # a worker's exit code when the app does not import

_link: Optional["SupervisorLink"] = None  # this process's, when it is a supervised worker


def heartbeat() -> Optional["Heartbeat"]:
    """The heartbeat a supervised worker must keep (None elsewhere, or with no timeout)."""
    return _link.heartbeat if _link is not None else None


def supervised() -> Optional["SupervisorLink"]:
    """How this worker speaks to its supervisor (None when not a supervised worker)."""
    return _link


class SupervisorLink:
    """A worker's side of the pipe to its supervisor: a few fixed-size messages."""

    def __init__(self, pipe: int, slot: int, heartbeat: Optional["Heartbeat"]):
        self.pipe, self.slot, self.heartbeat = pipe, slot, heartbeat

    def ready(self) -> None:
        """The app is imported and the server listens: older workers may retire."""
        self._say(READY)

    def retire(self) -> None:
        """Ask to be replaced (a new worker starts first), then stopped gracefully."""
        self._say(RETIRE)

    def reload(self) -> None:
        """The app's source changed: ask for a new generation of workers, as SIGHUP does."""
        self._say(RELOAD)

    def _say(self, kind: bytes) -> None:
        try:  # smaller than PIPE_BUF: one write, never interleaved with another worker's
            os.write(self.pipe, MESSAGE.pack(kind, os.getpid()))
        except OSError as ex:  # the supervisor is gone: nothing to tell
            logger.warning("cannot reach the supervisor: %s", ex)


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


class RecycleDoer(Doer):
    """`--max-requests`: once the server has answered `limit` requests, ask the supervisor for
    a replacement (it stops this worker gracefully once the replacement serves)."""

    def __init__(self, server, limit: int, link: SupervisorLink, **kwa):
        kwa.setdefault("tock", 0.25)
        super().__init__(**kwa)
        self.server, self.limit, self.link = server, limit, link

    def recur(self, tyme: float) -> bool:
        if self.server.served < self.limit:
            return False
        logger.info("worker %d answered %d requests (max %d): asking for a replacement",
                    os.getpid(), self.server.served, self.limit)
        self.link.retire()
        return True


@dataclass
class _Worker:
    started: float
    slot: int
    stacks: IO[bytes]  # where the worker's faulthandler writes its stacks when asked
    generation: int
    replaces: int = 0  # the pid of the worker it replaces once ready (max-requests)
    ready: bool = False
    retiring: bool = False  # asked to stop: not replaced when it exits
    stuck: bool = False
    asked: float = 0.0  # when its stacks were asked for


class Supervisor:
    """Keeps `count` workers running `work()` (its return value is the worker's exit code).

    `on_reopen()` runs on SIGUSR1; `on_exit(slot)` after a worker in `slot` exited (its slot is
    reused); `listeners` are (socket, callback) pairs served between signals (the metrics)."""

    def __init__(self, count: int, work: Callable[[], int], graceful_timeout: float,
                 on_reopen: Callable[[], None] = lambda: None, timeout: float = 0.0,
                 on_exit: Callable[[int], None] = lambda slot: None,
                 listeners: Optional[list] = None):
        if not 1 <= count <= MAX_SLOTS // 2:
            raise ValueError(f"workers must be from 1 to {MAX_SLOTS // 2}, not {count}")
        self.count = count
        self.work = work
        self.graceful_timeout = graceful_timeout
        self.on_reopen = on_reopen
        self.on_exit = on_exit
        self.listeners = list(listeners or [])
        self.timeout = timeout  # 0: no watchdog
        self.children: dict = {}  # pid -> _Worker
        self.stopping = False
        self.generation = 0  # the generation serving
        self.reloading: Optional[int] = None  # the generation starting, during a reload
        self.restarts = 0  # workers started after the first ones (replacements, reloads)
        self.serving_once = False  # some worker became ready: a failure is no startup failure
        self.started = False  # the first workers are started: later ones count as restarts
        self.exit_code = 0
        self.pending: list = []  # signals received, handled by the loop (forks are no
        # business of a signal handler)
        # Shared with the workers (an anonymous mapping survives fork, shared); never resized,
        # since a worker keeps the mapping it was forked with.
        self.board = mmap.mmap(-1, SLOT.size * MAX_SLOTS)
        self.inbox, self.outbox = os.pipe()  # worker -> supervisor messages
        os.set_blocking(self.inbox, False)

    def run(self) -> int:
        for number in HANDLED:
            signal.signal(number, self._note)
        bell, ringer = os.pipe()
        os.set_blocking(bell, False)
        os.set_blocking(ringer, False)
        previous_wakeup = signal.set_wakeup_fd(ringer)
        try:
            for _ in range(self.count):
                self._spawn(self.generation)
            self.started = True
            while self.children:
                self._handle_signals()
                self._reap()
                self._read_messages()
                if self.timeout:
                    self._watch()
                if self.children:
                    self._wait(bell)
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for descriptor in (bell, ringer, self.inbox, self.outbox):
                os.close(descriptor)
            signal.alarm(0)
        return self.exit_code

    def _note(self, signum, frame) -> None:
        self.pending.append(signum)

    def _wait(self, bell: int) -> None:
        """Until a signal, a message from a worker or a listener's client, or the next look at
        heartbeats."""
        interval = min(1.0, self.timeout / 4) if self.timeout else None
        if self.pending:
            interval = 0
        sockets = [sock for sock, _ in self.listeners]
        try:
            ready, _, _ = select.select([bell, self.inbox, *sockets], [], [], interval)
        except InterruptedError:
            return
        if bell in ready:
            _empty(bell)
        for sock, callback in self.listeners:
            if sock in ready:
                try:
                    callback()
                except Exception:
                    logger.exception("error serving a listener of the supervisor")

    # -- signals ------------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        while self.pending:
            number = self.pending.pop(0)
            if number in (signal.SIGTERM, signal.SIGINT):
                self._stop()
            elif number == signal.SIGALRM:
                self._kill_all()
            elif number == signal.SIGHUP:
                self.reload()
            elif number == signal.SIGUSR1:
                logger.info("reopening log files")
                self.on_reopen()
                self._signal_children(signal.SIGUSR1)
            elif number == signal.SIGTTIN:
                self.add_worker()
            elif number == signal.SIGTTOU:
                self.remove_worker()

    def reload(self) -> None:
        """Start a new generation; the old one retires once every new worker is ready."""
        if self.stopping:
            return
        if self.reloading is not None:
            logger.info("a reload is already under way (generation %d)", self.reloading)
            return
        self.reloading = self.generation + 1
        logger.info("reloading: starting %d workers of generation %d", self.count,
                    self.reloading)
        for _ in range(self.count):
            self._spawn(self.reloading)

    def add_worker(self) -> None:
        if self.stopping or self.count >= MAX_SLOTS // 2:
            return
        self.count += 1
        logger.info("adding a worker: %d now", self.count)
        self._spawn(self.generation)

    def remove_worker(self) -> None:
        if self.stopping or self.count <= 1:
            logger.info("not removing a worker: %d left", self.count)
            return
        serving = [pid for pid, worker in self.children.items()
                   if worker.generation == self.generation and not worker.retiring]
        if not serving:
            return
        self.count -= 1
        logger.info("retiring a worker: %d now", self.count)
        self._retire(max(serving, key=lambda pid: self.children[pid].started))

    def _stop(self) -> None:
        if self.stopping:  # a second signal: stop at once
            self._kill_all()
            return
        self.stopping = True
        logger.info("stopping %d workers (graceful timeout %.0f s)", len(self.children),
                    self.graceful_timeout)
        self._signal_children(signal.SIGTERM)
        signal.alarm(max(1, int(self.graceful_timeout + 5)))  # then force it

    def _kill_all(self) -> None:
        self.stopping = True
        self._signal_children(signal.SIGKILL)

    def _signal_children(self, number: int) -> None:
        for pid in list(self.children):
            _send(pid, number)

    def _retire(self, pid: int) -> None:
        worker = self.children.get(pid)
        if worker is not None and not worker.retiring:
            worker.retiring = True
            _send(pid, signal.SIGTERM)

    # -- what the workers say -----------------------------------------------------------------

    def _read_messages(self) -> None:
        try:
            data = os.read(self.inbox, MESSAGE.size * 256)
        except BlockingIOError:
            return
        for offset in range(0, len(data) - MESSAGE.size + 1, MESSAGE.size):
            kind, pid = MESSAGE.unpack_from(data, offset)
            worker = self.children.get(pid)
            if worker is None or self.stopping:
                continue
            if kind == READY:
                self._ready(pid, worker)
            elif kind == RETIRE and not worker.retiring:
                self._spawn(worker.generation, replaces=pid)
            elif (kind == RELOAD and worker.generation == self.generation
                  and not worker.retiring):  # the others saw the same change: one reload
                self.reload()

    def _ready(self, pid: int, worker: _Worker) -> None:
        worker.ready = True
        self.serving_once = True
        if worker.replaces:
            self._retire(worker.replaces)
        if self.reloading is not None and worker.generation == self.reloading:
            new = [w for w in self.children.values() if w.generation == self.reloading]
            if all(w.ready for w in new):
                old, self.generation, self.reloading = self.generation, self.reloading, None
                logger.info("reloaded: generation %d serves; retiring generation %d",
                            self.generation, old)
                for other, each in list(self.children.items()):
                    if each.generation != self.generation:
                        self._retire(other)

    # -- exits --------------------------------------------------------------------------------

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
            self.on_exit(worker.slot)
            if self.stopping or worker.retiring:
                continue
            self._replace(pid, worker, status)

    def _replace(self, pid: int, worker: _Worker, status: int) -> None:
        """A worker exited unasked: replace it, unless it was new and failed to start."""
        code = os.waitstatus_to_exitcode(status)
        if not worker.ready and worker.generation == self.reloading:
            logger.error("reload failed: new worker %d could not start (%s); generation %d "
                         "serves on", pid, describe(status), self.generation)
            for other, each in list(self.children.items()):
                if each.generation == self.reloading:
                    self._retire(other)
            self.reloading = None
            return
        if not worker.ready and worker.replaces:
            logger.error("worker %d serves on: its replacement %d could not start (%s)",
                         worker.replaces, pid, describe(status))
            return
        if not worker.ready and code == APP_FAILED and not self.serving_once:
            self.exit_code = code  # at startup the app does not load: nothing can serve
            logger.error("worker %d could not load the app: stopping", pid)
            self._stop()
            return
        if not worker.stuck:
            logger.warning("worker %d exited (%s); starting another", pid, describe(status))
        if time.monotonic() - worker.started < RESTART_PAUSE:
            time.sleep(RESTART_PAUSE)  # not in a loop that serves: a crash loop must not spin
        if not self.stopping and worker.generation == self.generation:
            self._spawn(self.generation)

    # -- the watchdog -------------------------------------------------------------------------

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

    # -- forking ------------------------------------------------------------------------------

    def _spawn(self, generation: int, replaces: int = 0) -> None:
        # Signals wait while the supervisor forks: the parent must know the new worker before
        # a stop signals all of them, and the worker must drop the supervisor's handlers first
        # (run in the worker, they would leave it serving on, deaf to the stop meant for it).
        slot = self._free_slot()
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
            self._become_worker(slot, stacks)
        if self.started:
            self.restarts += 1
        self.children[pid] = _Worker(time.monotonic(), slot, stacks, generation, replaces)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        logger.info("started worker %d (generation %d)", pid, generation)

    def _become_worker(self, slot: int, stacks: IO[bytes]) -> None:
        global _link
        signal.set_wakeup_fd(-1)
        for number in HANDLED:
            signal.signal(number, signal.SIG_DFL)
        for number in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):  # the supervisor's
            signal.signal(number, signal.SIG_IGN)
        os.close(self.inbox)
        for sock, _ in self.listeners:
            sock.close()
        beat = Heartbeat(self.board, slot, self.timeout) if self.timeout else None
        _link = SupervisorLink(self.outbox, slot, beat)
        faulthandler.register(STACK_SIGNAL, file=stacks, all_threads=True, chain=False)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        code = 1
        try:
            code = self.work()
        except BaseException:
            logger.exception("worker %d failed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(code)

    def _free_slot(self) -> int:
        used = {worker.slot for worker in self.children.values()}
        return next(slot for slot in range(MAX_SLOTS) if slot not in used)


def _empty(descriptor: int) -> None:
    try:
        while os.read(descriptor, 512):
            pass
    except BlockingIOError:
        pass


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
