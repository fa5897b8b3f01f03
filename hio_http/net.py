"""Nonblocking sockets on a Poller: `Acceptor` (listening, TCP/IPv6/unix, optional TLS) and
`Connection` (one accepted socket with a bounded receive and a partial-send buffer).

No HTTP here, and nothing blocks: every socket call is made when the Poller says it can proceed.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
from collections import deque
from typing import TYPE_CHECKING, Callable, Final, Optional, Protocol, Sequence, Union

from mypy_extensions import mypyc_attr

from .polling import READ, WRITE, Poller

if TYPE_CHECKING:
    from typing_extensions import TypeIs

logger: Final = logging.getLogger("hio_http.net")

Address = Union[tuple, str, "os.PathLike[str]"]  # (host, port) or a unix socket path

# Linux's flag for "more follows": a partly filled segment waits for it (see Connection.cork).
MSG_MORE: Final[int] = getattr(socket, "MSG_MORE", 0)

# recv() makes a bytes object of the size asked and shrinks it to what came. Asking 256 KiB
# for a 100-byte request made malloc map and unmap (or grow and trim) a block that large on
# every request unless tuned (hio_http.tuning): 2.3 times the CPU of a hello request. So a
# connection asks for FIRST_RECEIVE, four times more after each receive that filled what it
# asked, up to RECEIVE_SIZE (a large upload then needs few calls), and starts over after a
# receive smaller than FIRST_RECEIVE.
RECEIVE_SIZE: Final = 256 * 1024
FIRST_RECEIVE: Final = 16 * 1024
ACCEPTS_PER_WAKE: Final = 64  # bound the accept loop so one busy listener cannot starve the others

# Errors that mean the peer is gone: the connection closes quietly, nobody else is affected.
GONE: Final = (ConnectionError, TimeoutError, ssl.SSLError, OSError)


def is_unix(address: Address) -> TypeIs[Union[str, os.PathLike[str]]]:
    return isinstance(address, (str, bytes, os.PathLike))


def listen(address: Address, backlog: int = 1024, reuse_port: bool = False) -> socket.socket:
    """Open a nonblocking listening socket on (host, port) or a unix path."""
    if is_unix(address):
        path = os.fspath(address)
        if os.path.exists(path) and _is_stale_unix_socket(path):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Union[str, tuple] = path
    else:
        host, port = address
        family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        target = (host.strip("[]") if host else "", port)
    try:
        sock.bind(target)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _is_stale_unix_socket(path: str) -> bool:
    """A leftover socket file nobody listens on may be replaced; a live one must not be."""
    import stat
    if not stat.S_ISSOCK(os.stat(path).st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return True
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path} is in use by another server")


class Acceptor:
    """A listening socket that hands each accepted connection to `on_accept(sock, peer)`."""

    def __init__(self, address: Optional[Address], poller: Poller,
                 on_accept: Callable[[socket.socket, object], None],
                 backlog: int = 1024, reuse_port: bool = False,
                 sock: Optional[socket.socket] = None):
        """Listen on `address`, or accept on `sock`, a listening socket opened elsewhere (for
        example by a supervisor before forking workers): that one is closed but never unlinked."""
        self.poller = poller
        self.on_accept = on_accept
        self.owned = sock is None
        if sock is None:
            if address is None:
                raise TypeError("an Acceptor needs an address or a listening sock")
            sock = listen(address, backlog=backlog, reuse_port=reuse_port)
        sock.setblocking(False)
        self.sock = sock
        self.address = self.sock.getsockname()
        self.unix = self.sock.family == socket.AF_UNIX
        # The family, type and protocol of every accepted socket, as plain ints, found once:
        # socket.accept() would look them up, as enums, on each connection.
        self._kind = (int(sock.family), int(sock.type), sock.proto)
        # Whether each accepted TCP socket needs TCP_NODELAY set: not once they are seen to
        # inherit it from the listener (Linux, the BSDs), a system call fewer per connection.
        self._nodelay_each = not self.unix
        self._nodelay_checked = self.unix or not _set_nodelay(sock)
        self.accepting = False
        self.resume()

    def pause(self) -> None:
        """Stop accepting: new connections wait in the kernel's backlog."""
        if self.accepting:
            self.poller.unregister(self.sock)
            self.accepting = False

    def resume(self) -> None:
        if not self.accepting and self.sock.fileno() >= 0:
            self.poller.register(self.sock, READ, self._ready)
            self.accepting = True

    def _ready(self, mask: int) -> None:
        self._accept_some(stop_when_paused=True)

    def _accept_some(self, stop_when_paused: bool = False) -> bool:
        """Accept up to ACCEPTS_PER_WAKE connections; False once none is left. Their first
        answers (see Connection.read_first) are one batch."""
        poller = self.poller
        poller.begin_batch()
        try:
            return self._accept_batch(stop_when_paused)
        finally:
            poller.end_batch()

    def _accept_batch(self, stop_when_paused: bool) -> bool:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                # accept() less its Python work (see _kind); typeshed does not list _accept
                fd, peer = self.sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as ex:  # EMFILE, ECONNABORTED...: log and try again on the next wake
                logger.warning("accept failed on %s: %s", self.address, ex)
                return False
            sock = socket.socket(*self._kind, fileno=fd)
            sock.setblocking(False)
            if self._nodelay_each:
                self._nodelay(sock)
            self.on_accept(sock, peer)
            if stop_when_paused and not self.accepting:  # the handler paused us (limit reached)
                return False
        return True

    def _nodelay(self, sock: socket.socket) -> None:
        """Send small segments at once (no Nagle delay), unless the socket inherited that."""
        if not self._nodelay_checked:
            self._nodelay_checked = True
            if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
                self._nodelay_each = False
                return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def take_waiting(self, most: int = 4096) -> None:
        """Accept the connections waiting in the backlog now (before a close that would reset
        them), at most `most` of them."""
        for _ in range(0, most, ACCEPTS_PER_WAKE):
            if self.sock.fileno() < 0 or not self._accept_some():
                return

    def close(self) -> None:
        self.pause()
        path = self.address if self.unix and self.owned else None
        self.sock.close()
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass


def _set_nodelay(sock: socket.socket) -> bool:
    """Set TCP_NODELAY on a listening socket, for the sockets it accepts to inherit; False if
    this socket does not take it."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return False
    return True


class FileSpan:
    """Part of a file queued for os.sendfile; owns a duplicate descriptor, so the app may close
    its file as soon as the response is handed over."""

    __slots__ = ("fd", "offset", "remaining")

    def __init__(self, fd: int, offset: int, count: int):
        self.fd = os.dup(fd)
        self.offset = offset
        self.remaining = count

    def __len__(self) -> int:
        return 0  # file bytes wait on disk, not in memory: they do not count as pending

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ConnectionHandler(Protocol):
    """What a Connection tells the one it serves (see Connection)."""

    def connected(self) -> None: ...

    def received(self, data: bytes) -> None: ...

    def ended(self) -> None: ...

    def drained(self) -> None: ...

    def closed(self) -> None: ...


class _Gone:
    """The handler of a closed Connection. No event follows a close; dropping the real handler
    (which holds the Connection) frees both when the server forgets them, without waiting for
    the cycle collector."""

    def connected(self) -> None: ...

    def received(self, data: bytes) -> None: ...

    def ended(self) -> None: ...

    def drained(self) -> None: ...

    def closed(self) -> None: ...


_GONE: Final = _Gone()


@mypyc_attr(allow_interpreted_subclasses=True)
class Outlet:
    """Where a response is written: a Connection, or a threaded.Relay that collects what an app
    thread writes. A base class rather than a Protocol: compiled responders then read `pending`
    and call `send` on it directly, not by name."""

    closed: bool
    tls: bool
    pending: int  # bytes queued and not yet sent

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        raise NotImplementedError


@mypyc_attr(allow_interpreted_subclasses=True)
class Connection(Outlet):
    """An accepted socket serviced by readiness.

    The handler receives `received(data)`, `ended()` (the peer sent EOF: it may still read our
    answer), `drained()` (everything queued has been sent), `closed()`, and for TLS
    `connected()` once the handshake is done. Sending never blocks: what the socket does not take now waits in the send
    buffer, and `pending` tells its size so producers can stop at a high-water mark.
    TLS sockets (already wrapped, handshake not done) finish their handshake here first.
    """

    def __init__(self, sock: socket.socket, peer, poller: Poller, handler: ConnectionHandler,
                 watch: bool = True):
        """`watch=False` leaves the socket off the Poller until `read_first()` (plain TCP)."""
        self.sock = sock
        self.receive_size = FIRST_RECEIVE  # what the next recv asks for
        self.receive_limit = RECEIVE_SIZE  # the most it may ask (a client's may be less)
        self.peer = peer
        self.poller = poller
        self.handler = handler
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.handshaking = self.tls
        self.reading = True
        self.closed = False
        self.pending = 0  # bytes waiting in the send buffer
        self._chunks: deque = deque()
        self._events = 0
        self._close_when_drained = False
        self._more = 0  # MSG_MORE while corked, else 0: the flags of every send
        self.batch_sends = False  # sends made in a batch of the Poller's wait for its end
        self._batched = False  # what is queued waits for the end of the batch
        if watch or self.tls:
            poller.register(sock, READ, self._ready)
            self._events = READ

    def read_first(self) -> None:
        """Read what came with the connection, then watch the socket (when `watch=False`).

        A client usually sends its request as soon as it has connected, so it is often there
        by the time the connection is accepted: it is answered at once, and a connection that
        closes after its one request is never registered with the Poller (two epoll_ctl calls
        fewer). Nothing there yet costs one recv() that finds nothing."""
        if self._events or self.closed:
            return
        self._ready(READ)
        if not self.closed:
            self._want(self._events | READ if self.reading else self._events)

    # -- sending ------------------------------------------------------------------------------

    def send(self, data) -> None:
        """Send `data` now as far as the socket takes it; queue the rest."""
        if self.closed or not data:
            return
        if self._batch():
            self._chunks.append(data)
            self.pending += len(data)
            return
        if not self._chunks and not self.handshaking:
            try:
                sent = self.sock.send(data, self._more)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent = 0
            except GONE as ex:
                self._lost(ex)
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        self._chunks.append(data)
        self.pending += len(data)
        self._want(self._events | WRITE)

    def _batch(self) -> bool:
        """Whether a send is to wait for the end of the Poller's batch (then it is queued).

        Several ready sockets answered one after another would wake a local client (a
        benchmark, a proxy on the same host) once per answer, each wake-up paid by the sender
        inside send(); sent together at the end of the batch, the answers wake it about once.
        Only plain sockets, only in a batch (see Poller.begin_batch): a lone ready socket's
        answer, or a send made anywhere else, goes at once."""
        if self._batched:
            return True
        if (not self.batch_sends or not self.poller.batch_depth or self._chunks
                or self.handshaking):
            return False
        self._batched = True
        self.poller.after_batch(self._send_batched)
        return True

    def _send_batched(self) -> None:
        """The end of the batch: send what was batched, as a drain would."""
        if self._batched and not self.closed:
            self._batched = False
            if self._send_queued():
                self._drained()
            else:
                self._want(self._events | WRITE)

    @property
    def backlogged(self) -> bool:
        """Something waits to be sent: bytes, or a file span (which `pending` does not count)."""
        return bool(self._chunks)

    def send_parts(self, parts: Sequence[bytes]) -> None:
        """Send buffers one after another (a chunk's size line, its data, its CRLF) in one
        system call on plain TCP, and without joining them, which would copy the data."""
        if self.closed:
            return
        if self._chunks or self.handshaking or self.tls or self._batch():
            for part in parts:
                self.send(part)
            return
        try:
            sent = self.sock.sendmsg(parts, (), self._more)
        except BlockingIOError:
            sent = 0
        except GONE as ex:
            self._lost(ex)
            return
        for part in parts:
            if sent >= len(part):
                sent -= len(part)
                continue
            rest = memoryview(part)[sent:] if sent else part
            sent = 0
            self._chunks.append(rest)
            self.pending += len(rest)
        if self._chunks:
            self._want(self._events | WRITE)

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        """Queue `count` bytes of file `fd` from `offset`, sent by os.sendfile (plain TCP only:
        under TLS the bytes must pass through the encryption layer, so callers send blocks)."""
        if self.closed or count <= 0:
            return
        span = FileSpan(fd, offset, count)
        if self._batch():
            self._chunks.append(span)
            return
        if not self._chunks and not self.handshaking and self._send_span(span):
            return  # all of it went at once
        if self.closed:
            span.close()
            return
        self._chunks.append(span)
        self._want(self._events | WRITE)

    def wake_when_writable(self) -> None:
        """Call the handler's `drained()` as soon as the socket can take more, even with
        nothing queued: a sender that stopped on a budget of its own, with everything taken
        by the kernel, goes on at the loop's next turn instead of its next timed one."""
        if not self.closed:
            self._want(self._events | WRITE)

    def cork(self) -> None:
        """What is sent from now on is the last before close(): on TCP (Linux) the kernel may
        hold a partly filled segment, so that the close sends the tail of the data and the FIN
        in one segment instead of two (Linux sends a held segment after 200 ms at the latest).
        `uncork()` sends what is held now, for a response that has to wait for its body."""
        if MSG_MORE and not self.tls and isinstance(self.peer, tuple):
            self._more = MSG_MORE

    def uncork(self) -> None:
        """Send what `cork()` held back now, and let later sends go at once again."""
        if self._more and not self.closed:
            self._more = 0
            try:  # setting TCP_NODELAY pushes whatever the socket holds
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def close_when_drained(self) -> None:
        """Close once everything queued has been sent (or at once if nothing is)."""
        if self._chunks:
            self.pause_reading()
            self._close_when_drained = True
        else:
            self.reading = False
            self.close()  # which unregisters the socket: no pause_reading() needed first

    def _flush(self) -> None:
        if self._send_queued():
            self._drained()

    def _send_queued(self) -> bool:
        """Send what is queued as far as the socket takes it; True when all of it went."""
        while self._chunks:
            chunk = self._chunks[0]
            if type(chunk) is FileSpan:
                if not self._send_span(chunk):
                    return False
                self._chunks.popleft()
                continue
            try:
                sent = self.sock.send(chunk, self._more)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return False
            except GONE as ex:
                self._lost(ex)
                return False
            self.pending -= sent
            if sent < len(chunk):
                self._chunks[0] = memoryview(chunk)[sent:]
                return False
            self._chunks.popleft()
        return True

    def _drained(self) -> None:
        self._want(self._events & ~WRITE)
        if self._close_when_drained:
            self.close()
        else:
            self.handler.drained()

    def _send_span(self, span: FileSpan) -> bool:
        """Send what the socket takes of a file span; True once it is all sent."""
        while span.remaining:
            try:
                sent = os.sendfile(self.sock.fileno(), span.fd, span.offset, span.remaining)
            except BlockingIOError:
                self._want(self._events | WRITE)
                return False
            except GONE as ex:
                self._lost(ex)
                return False
            if sent == 0:  # the file ended early (truncated meanwhile): the body can't be whole
                logger.error("file ended %d bytes short while sending it", span.remaining)
                self.close()
                return False
            span.offset += sent
            span.remaining -= sent
        span.close()
        return True

    # -- receiving ----------------------------------------------------------------------------

    def pause_reading(self) -> None:
        self.reading = False
        self._want(self._events & ~READ)

    def resume_reading(self) -> None:
        if not self.closed and not self._close_when_drained:
            self.reading = True
            self._want(self._events | READ)

    def _receive(self) -> None:
        """Read what is ready; under TLS also what the TLS layer already decrypted, which the
        selector cannot see."""
        while self._receive_once() and self.reading and self.tls and self._tls_pending():
            pass

    def _tls_pending(self) -> bool:
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def _receive_once(self) -> bool:
        """One recv handed to the handler; False when nothing more can be read now."""
        try:
            data = self.sock.recv(self.receive_size)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except GONE as ex:
            self._lost(ex)
            return False
        if not data:
            self._ended()
            return False
        asked = self.receive_size
        self.handler.received(data)  # which may read receive_size as it was asked
        size = len(data)
        if size >= asked:
            self.receive_size = min(asked * 4, self.receive_limit)
        elif size < FIRST_RECEIVE < asked:
            self.receive_size = FIRST_RECEIVE
        return not self.closed

    def _ended(self) -> None:
        """EOF from the peer: stop reading; the handler decides whether to answer or close."""
        self.pause_reading()
        self.handler.ended()

    # -- readiness ----------------------------------------------------------------------------

    def _ready(self, mask: int) -> None:
        try:
            if self.handshaking:
                self._handshake()
                return
            if mask & WRITE:
                self._flush()
            if mask & READ and self.reading and not self.closed:
                self._receive()
        except Exception:  # a fault serving one connection must not reach the loop
            logger.exception("error servicing connection from %s", self.peer)
            try:
                self.close()
            except Exception:
                logger.exception("error closing connection from %s", self.peer)

    def _handshake(self) -> None:
        try:
            assert isinstance(self.sock, ssl.SSLSocket)  # handshaking is set only for TLS
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(READ)
            return
        except ssl.SSLWantWriteError:
            self._want(WRITE)
            return
        except GONE as ex:
            self._lost(ex)
            return
        self.handshaking = False
        self._want((READ if self.reading else 0) | (WRITE if self._chunks else 0))
        self.handler.connected()

    def _want(self, events: int) -> None:
        if self.closed or events == self._events:
            return
        if events:
            if self._events:
                self.poller.modify(self.sock, events, self._ready)
            else:
                self.poller.register(self.sock, events, self._ready)
        else:
            self.poller.unregister(self.sock)
        self._events = events

    # -- closing ------------------------------------------------------------------------------

    def _lost(self, ex: Optional[BaseException]) -> None:
        """The peer went away (EOF, reset, TLS failure): close and tell the handler."""
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        if self._batched:  # a send just before close() goes as it would have unbatched
            self._batched = False
            self._send_queued()
            if self.closed:  # lost meanwhile
                return
        self.closed = True
        if self._events:
            self.poller.unregister(self.sock)
            self._events = 0
        for chunk in self._chunks:
            if type(chunk) is FileSpan:
                chunk.close()
        self._chunks.clear()
        self.pending = 0
        if self._more:
            # Corked: the FIN goes with what is held. Through shutdown(), not close() alone,
            # which resets the connection, dropping the held bytes, if the client has sent
            # bytes nobody read (requests after its last one).
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass
        handler, self.handler = self.handler, _GONE
        handler.closed()
