"""A small doer daemon: a heartbeat, a counter and a UDP listener sharing one real-time Doist.

The listener waits in the Doist's Poller, so a datagram is handled the moment it arrives, while
the heartbeat keeps its one-second beat and the counter runs every tick. Try:

    python scripts/daemon_example.py --port 9999 --limit 30 &
    echo hello | nc -u -w0 127.0.0.1 9999
"""

import argparse
import socket

from hio_http.doing import Doer, Doist
from hio_http.polling import READ, poller_of


class Heartbeat(Doer):
    """Says it is alive every `tock` seconds."""

    def recur(self, tyme):
        print(f"{tyme:7.3f} heartbeat", flush=True)
        return False


class Counter(Doer):
    """Counts its turns; runs on every pass (tock 0)."""

    def __init__(self, **kwa):
        super().__init__(**kwa)
        self.turns = 0

    def recur(self, tyme):
        self.turns += 1
        return False

    def exit(self):
        print(f"counter ran {self.turns} turns", flush=True)


class UdpListener(Doer):
    """Receives datagrams on 127.0.0.1, woken by the Doist's Poller when one is ready."""

    def __init__(self, port=0, **kwa):
        super().__init__(**kwa)
        self.port = port
        self.sock = None

    def enter(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.setblocking(False)
        poller_of(self.tymth).register(self.sock, READ, self.receive)
        print(f"listening on udp {self.sock.getsockname()[0]}:{self.sock.getsockname()[1]}",
              flush=True)

    def receive(self, mask):
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except BlockingIOError:
                return
            print(f"{self.tyme:7.3f} datagram from {peer[0]}:{peer[1]}: {data!r}", flush=True)

    def exit(self):
        if self.sock is not None:
            poller_of(self.tymth).unregister(self.sock)
            self.sock.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="UDP port on 127.0.0.1 (0: any)")
    parser.add_argument("--limit", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--tock", type=float, default=0.03125, help="seconds per tick")
    args = parser.parse_args(argv)
    doers = [Heartbeat(tock=1.0), Counter(), UdpListener(port=args.port)]
    Doist(tock=args.tock, real=True, limit=args.limit, doers=doers).do()


if __name__ == "__main__":
    main()
