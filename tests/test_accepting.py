"""Accepted sockets: what every connection gets before HTTP begins."""

import fcntl
import socket
import sys
import termios
import time

import pytest

from hio_http import net
from hio_http.polling import Poller

from conftest import ConnectionEvents


def accept_some(count):
    """Accept `count` connections on a fresh Acceptor; the accepted sockets and the clients."""
    poller = Poller()
    accepted = []
    acceptor = net.Acceptor(("127.0.0.1", 0), poller, lambda sock, peer: accepted.append(sock))
    clients = [socket.create_connection(acceptor.address[:2], timeout=5) for _ in range(count)]
    deadline = time.monotonic() + 5
    while len(accepted) < count and time.monotonic() < deadline:
        poller.poll(0.05)
    acceptor.close()
    poller.close()
    return accepted, clients


def nodelay(sock):
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


@pytest.mark.parametrize("listener_passes_it_on", [True, False])
def test_accepted_tcp_sockets_send_small_segments_at_once(monkeypatch, listener_passes_it_on):
    if not listener_passes_it_on:  # then it is set on each accepted socket
        monkeypatch.setattr(net, "_set_nodelay", lambda sock: False)
    accepted, clients = accept_some(3)
    try:
        assert len(accepted) == 3
        assert all(nodelay(sock) for sock in accepted)
    finally:
        for sock in accepted + clients:
            sock.close()


def test_a_corked_last_response_arrives_even_with_unread_bytes_from_the_client():
    """close() with unread bytes resets the connection and drops what the kernel still
    holds: the tail a cork held back must have gone out with the FIN before that."""
    poller = Poller()
    accepted, clients = accept_some(1)
    (sock,), (client,) = accepted, clients
    try:
        sock.setblocking(False)
        connection = net.Connection(sock, sock.getpeername(), poller, ConnectionEvents())
        client.sendall(b"bytes the server never reads")
        deadline = time.monotonic() + 5
        while not _unread(sock) and time.monotonic() < deadline:
            time.sleep(0.01)
        connection.cork()
        connection.send(b"the last response")
        connection.close()
        client.settimeout(5)
        received = b""
        try:
            while len(received) < len(b"the last response"):
                chunk = client.recv(4096)
                if not chunk:
                    break
                received += chunk
        except ConnectionResetError:
            pass
        assert received == b"the last response"
    finally:
        client.close()
        poller.close()


def _unread(sock):
    """Bytes waiting unread in the socket's receive queue."""
    return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"),
                          sys.byteorder)


def test_uncork_sends_what_the_cork_held_at_once():
    """Linux holds a partly filled segment sent with MSG_MORE for up to 200 ms; a response
    that waits for more of its body is uncorked, so its client does not wait that long."""
    poller = Poller()
    accepted, clients = accept_some(1)
    (sock,), (client,) = accepted, clients
    try:
        sock.setblocking(False)
        connection = net.Connection(sock, sock.getpeername(), poller, ConnectionEvents())
        connection.cork()
        connection.send(b"first part")
        began = time.monotonic()
        connection.uncork()
        client.settimeout(5)
        assert client.recv(4096) == b"first part"
        assert time.monotonic() - began < 0.1
        connection.close()
    finally:
        client.close()
        poller.close()
