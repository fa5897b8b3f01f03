"""Accepted sockets: what every connection gets before HTTP begins."""

import socket
import time

from hio_http import net
from hio_http.polling import Poller


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


def test_accepted_tcp_sockets_send_small_segments_at_once():
    accepted, clients = accept_some(3)
    try:
        assert len(accepted) == 3
        assert all(nodelay(sock) for sock in accepted)
    finally:
        for sock in accepted + clients:
            sock.close()


def test_nodelay_is_set_on_each_socket_where_the_listener_cannot_pass_it_on(monkeypatch):
    monkeypatch.setattr(net, "_set_nodelay", lambda sock: False)
    accepted, clients = accept_some(2)
    try:
        assert len(accepted) == 2
        assert all(nodelay(sock) for sock in accepted)
    finally:
        for sock in accepted + clients:
            sock.close()
