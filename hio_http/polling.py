"""Readiness of sockets: a `Poller` wraps a selector and runs a callback for each ready file.

A `Doist` owns one Poller and waits in it between ticks, so it wakes the moment a registered
socket is ready. A Poller never reads or writes a socket itself; its callbacks do that work.
`wake()` ends a wait early from another thread or a signal handler.
"""

from __future__ import annotations

import select
import selectors
import socket
from typing import TYPE_CHECKING, Callable, Final, Optional, Protocol

from mypy_extensions import mypyc_attr

from .timing import Tymth

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike  # a descriptor, or an object with fileno()

READ: Final = 1  # selectors.EVENT_READ, as a constant the compiled build inlines
WRITE: Final = 2  # selectors.EVENT_WRITE

Callback = Callable[[int], object]  # called with the ready event mask (READ | WRITE)
Ready = list[tuple[selectors.SelectorKey, int]]  # what select() found: (key, mask) pairs


class LoopComponent(Protocol):
    """A server or client with sockets, as join_loop sees it."""

    poller: Optional[Poller]
    owns_poller: bool  # it made its Poller itself, on open()
    opened: bool

    def open(self) -> object: ...

# epoll events that make a file READ or WRITE ready, as the selectors module counts them: an
# error or hang-up wakes both, so that whoever waits sees it on its next call.
_READABLE: Final = ~select.EPOLLOUT if hasattr(select, "epoll") else 0
_WRITABLE: Final = ~select.EPOLLIN if hasattr(select, "epoll") else 0
# What epoll is asked to watch for READ, WRITE and both.
_EPOLL_EVENTS: Final = ({READ: select.EPOLLIN, WRITE: select.EPOLLOUT,
                         READ | WRITE: select.EPOLLIN | select.EPOLLOUT}
                        if hasattr(select, "epoll") else {})


# A SelectorKey made as its class's own __new__ makes it, without that Python-level call:
# one registration per connection.
_new_key: Final = tuple.__new__


def _ignore(mask: int) -> None:
    """The callback of a file registered only to wake the loop."""


@mypyc_attr(allow_interpreted_subclasses=True)
class Poller:
    """Registers files for READ/WRITE readiness and dispatches callbacks when they are ready."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        # A socket pair whose far end wake() writes to: the selector sees it readable.
        self._alarm, self._bell = socket.socketpair()
        self._alarm.setblocking(False)
        self._bell.setblocking(False)
        self._selector.register(self._alarm, READ, self._quiet)
        self._rung = False  # a byte is on its way: a further wake() need not write another
        self.batch_depth = 0  # batches begun and not ended (see begin_batch)
        self._after: list[Callable[[], None]] = []  # to run when the outermost batch ends
        # On epoll, select() asks it directly: the selectors module's own select() costs more
        # Python work per wait than the rest of a Doist's turn. A socket is registered and
        # unregistered directly too (once per connection), in the selector's own map, so its
        # other methods (modify, get_key, close) see the same registrations. Both are private
        # attributes of EpollSelector, so typeshed does not know them.
        epoll = isinstance(self._selector, selectors.EpollSelector)
        self._epoll: Optional[select.epoll] = (getattr(self._selector, "_selector")
                                               if epoll else None)
        self._keys: dict[int, selectors.SelectorKey] = (getattr(self._selector, "_fd_to_key")
                                                        if epoll else {})

    def register(self, fileobj: FileDescriptorLike, events: int,
                 callback: Optional[Callback] = None) -> None:
        """Watch `fileobj` for `events`; call `callback(mask)` when ready.

        Without a callback the file only wakes the loop, so that the doers waiting on it run.
        """
        if self._epoll is not None and type(fileobj) is socket.socket and events in _EPOLL_EVENTS:
            fd = fileobj.fileno()
            if fd >= 0 and fd not in self._keys:  # else the selector says what is wrong
                self._epoll.register(fd, _EPOLL_EVENTS[events])
                self._keys[fd] = _new_key(selectors.SelectorKey,
                                          (fileobj, fd, events, callback or _ignore))
                return
        self._selector.register(fileobj, events, callback or _ignore)

    def modify(self, fileobj: FileDescriptorLike, events: int,
               callback: Optional[Callback] = None) -> None:
        """Change the events (and optionally the callback) of a registered file."""
        if callback is None:
            callback = self._selector.get_key(fileobj).data
        self._selector.modify(fileobj, events, callback)

    def unregister(self, fileobj: FileDescriptorLike) -> None:
        """Stop watching `fileobj`; a file that is not registered is ignored."""
        if self._epoll is not None and type(fileobj) is socket.socket:
            fd = fileobj.fileno()
            key = self._keys.get(fd)
            if key is not None and key.fileobj is fileobj:
                del self._keys[fd]
                self._epoll.unregister(fd)  # the socket is open (it has its fd): no error
                return
        try:
            self._selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def registered(self, fileobj: FileDescriptorLike) -> bool:
        try:
            self._selector.get_key(fileobj)
        except (KeyError, ValueError):
            return False
        return True

    def __len__(self) -> int:
        """How many files are watched (not counting the one wake() uses)."""
        return len(self._selector.get_map()) - 1

    def poll(self, timeout: Optional[float] = 0.0) -> int:
        """Wait up to `timeout` seconds (None: forever, 0: not at all), dispatch, return the count.

        With nothing registered the wait still lasts the timeout (epoll, kqueue and poll sleep),
        so a Doist can always wait here instead of in `time.sleep`.
        """
        return self.dispatch(self.select(timeout))

    def select(self, timeout: Optional[float] = 0.0) -> Ready:
        """The waiting half of `poll`: the ready (key, mask) pairs, not yet dispatched."""
        if timeout is not None and timeout < 0:
            timeout = 0.0
        if self._epoll is None:
            return self._selector.select(timeout)
        keys = self._keys
        try:  # epoll rounds the timeout up to whole milliseconds, so it never wakes early
            ready = self._epoll.poll(-1 if timeout is None else timeout, len(keys) or 1)
        except InterruptedError:
            return []
        events: Ready = []
        for fd, event in ready:
            key = keys.get(fd)
            if key is not None:
                mask = (READ if event & _READABLE else 0) | (WRITE if event & _WRITABLE else 0)
                events.append((key, mask & key.events))
        return events

    def dispatch(self, events: Ready) -> int:
        """The other half of `poll`: run the callback of each ready file; several are one
        batch (see begin_batch)."""
        if len(events) > 1:
            self.begin_batch()
            try:
                for key, mask in events:
                    key.data(mask)
            finally:
                self.end_batch()
        else:
            for key, mask in events:
                key.data(mask)
        return len(events)

    def begin_batch(self) -> None:
        """Work for several peers follows (the callbacks of one dispatch, an accept loop):
        until the matching end_batch(), `after_batch` calls wait for its end."""
        self.batch_depth += 1

    def end_batch(self) -> None:
        self.batch_depth -= 1
        if self.batch_depth == 0:
            if self._after:
                later, self._after = self._after, []
                for call in later:
                    call()

    def after_batch(self, call: Callable[[], None]) -> None:
        """Run `call` when the current batch ends (only while `batch_depth`)."""
        self._after.append(call)

    def wake(self) -> None:
        """End the current (or next) wait at once. Safe from any thread and from a signal
        handler: it only writes a byte, and a byte already waiting is enough. Make the change
        the loop is to notice first (a doer's `urgent`), then wake."""
        if self._rung:
            return
        self._rung = True
        try:
            self._bell.send(b"\0")
        except OSError:  # full (a wake is pending anyway) or closed
            pass

    def _quiet(self, mask: int) -> None:
        try:
            while self._alarm.recv(4096):
                pass
        except OSError:
            pass
        # Only now: cleared before draining, a wake() in between could have its byte drained
        # and leave `_rung` set with nothing pending, so that no later wake() wrote again. A
        # wake() skipped in between is not lost: the pass that follows this dispatch sees it.
        self._rung = False

    def nest(self, inner: "Poller") -> None:
        """Watch another Poller: when one of its files is ready, dispatch it from here. A server
        or client opened on a Poller of its own can so still wake a Doist the moment its
        sockets are ready. `unregister(inner)` undoes it."""
        self.register(inner, READ, lambda mask: inner.poll(0))

    def fileno(self) -> int:
        """The selector's own descriptor: readable when a registered file is ready, so a
        Poller can be nested in another Poller (epoll and kqueue selectors)."""
        return self._selector.fileno()

    def close(self) -> None:
        self._selector.close()
        self._alarm.close()
        self._bell.close()


def poller_of(tymth: Optional[Tymth]) -> Optional[Poller]:
    """The Poller of the Doist whose tymth this is, or None under a scheduler without one."""
    poller = getattr(tymth, "poller", None)
    return poller if isinstance(poller, Poller) else None


def join_loop(component: LoopComponent, tymth: Optional[Tymth]) -> Optional[Poller]:
    """Put a component with sockets (`poller`, `owns_poller`, `opened`, `open()`) on the Poller
    of the Doist whose tymth this is: one not yet open shares it; one already open on a Poller
    of its own gets that Poller nested, so its sockets still wake the Doist. Returns the nested
    Poller, for `leave_loop`, or None."""
    shared = poller_of(tymth)
    if not component.opened:
        if shared is not None and component.poller is None:
            component.poller = shared
        component.open()
    elif shared is not None and component.owns_poller and component.poller is not None:
        shared.nest(component.poller)
        return component.poller
    return None


def leave_loop(nested: Optional[Poller], tymth: Optional[Tymth]) -> None:
    """Undo the nesting `join_loop` did, if any."""
    shared = poller_of(tymth)
    if nested is not None and shared is not None:
        shared.unregister(nested)
